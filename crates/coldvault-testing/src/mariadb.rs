//! The MariaDB server that `scripts/test` starts. A test that needs it fails (never skips) when
//! it is not running.

use std::collections::HashMap;

use mysql::prelude::Queryable;

/// The running server, as written by `scripts/mariadb start` into `$COLDVAULT_MYSQL_DIR/env`.
#[derive(Debug, Clone)]
pub struct Mariadb {
    vars: HashMap<String, String>,
}

impl Mariadb {
    /// The server started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Mariadb {
        let (_, vars) = crate::service_env(
            "COLDVAULT_MYSQL_DIR",
            "MariaDB server",
            "scripts/mariadb start DIR",
        );
        Mariadb { vars }
    }

    /// root's password.
    pub fn password(&self) -> String {
        self.vars["MYSQL_PASSWORD"].clone()
    }

    /// The server's port.
    pub fn port(&self) -> String {
        self.vars["MYSQL_PORT"].clone()
    }

    /// The URL of database `db` for `root` (no password in it).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port())
    }

    /// A connection to `db` as root (utf8mb4, UTC).
    pub fn conn(&self, db: &str) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port().parse().unwrap())
            .user(Some("root"))
            .pass(Some(self.password()))
            .db_name(Some(db))
            .prefer_socket(false)
            .init(vec!["SET NAMES utf8mb4", "SET time_zone = '+00:00'"]);
        mysql::Conn::new(opts).unwrap()
    }

    /// Creates a fresh utf8mb4 database and returns its name.
    pub fn create_db(&self, prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("{prefix}_{}_{:x}", std::process::id(), nanos & 0xffff_ffff);
        self.conn("mysql")
            .query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            .unwrap();
        name
    }

    /// Per table: row count and a BLAKE3 of every row (each value as the server's text, the
    /// rows sorted) — what must be equal after a restore. (`CHECKSUM TABLE` is not: it varies
    /// with virtual columns.)
    pub fn fingerprint(&self, db: &str, tables: &[&str]) -> Vec<String> {
        tables
            .iter()
            .map(|t| {
                let mut rows = self.rows(db, t, "1");
                rows.sort();
                let mut h = blake3::Hasher::new();
                for r in &rows {
                    h.update(r.as_bytes());
                    h.update(b"\n");
                }
                format!(
                    "{t}: {} rows, blake3 {}",
                    rows.len(),
                    &h.finalize().to_hex()[..16]
                )
            })
            .collect()
    }

    /// Every row of `table` in `order`, each value as the server's text (hex for bytes).
    pub fn rows(&self, db: &str, table: &str, order: &str) -> Vec<String> {
        self.conn(db)
            .query::<mysql::Row, _>(format!("SELECT * FROM `{table}` ORDER BY {order}"))
            .unwrap()
            .into_iter()
            .map(|r| format!("{:?}", r.unwrap_raw()))
            .collect()
    }
}
