//! The MariaDB server that `scripts/test` starts. A test that needs it fails (never skips) when
//! it is not running.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};

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

    /// Runs the `mariadb` client on `db` with `sql` as its input, bytes as they are (a script in
    /// another character set than UTF-8); `args` go before the database.
    pub fn client(&self, db: &str, args: &[&str], sql: &[u8]) {
        let mut child = self
            .command("mariadb")
            .args(args)
            .arg(db)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run mariadb");
        child.stdin.take().unwrap().write_all(sql).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "mariadb {args:?} {db}: {out:?}");
    }

    /// `mysqldump --routines --triggers --events from | mariadb to`: what mysqldump gives back,
    /// to hold a restore against.
    pub fn dump_and_reload(&self, from: &str, to: &str) {
        let out = self
            .command("mysqldump")
            .args(["--routines", "--triggers", "--events", from])
            .output()
            .expect("run mysqldump");
        assert!(out.status.success(), "mysqldump {from}: {out:?}");
        self.client(to, &[], &out.stdout);
    }

    /// A command of the MariaDB client tools, connected as root to the server.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(["-h127.0.0.1", &format!("-P{}", self.port()), "-uroot"])
            .env("MYSQL_PWD", self.password())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Every table, view, sequence, routine, trigger and event of `db` as `SHOW CREATE` prints
    /// it (all its columns but `Created`, with `db`'s name replaced by `DB`), and the order the
    /// triggers fire in: what must be equal after a restore.
    pub fn definitions(&self, db: &str) -> BTreeMap<String, String> {
        let mut c = self.conn(db);
        let objects: Vec<(String, String)> = c
            .query(
                "SELECT IF(TABLE_TYPE = 'BASE TABLE', 'TABLE', TABLE_TYPE), TABLE_NAME \
                   FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                 UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
                   WHERE ROUTINE_SCHEMA = DATABASE() \
                 UNION ALL SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS \
                   WHERE TRIGGER_SCHEMA = DATABASE() \
                 UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS \
                   WHERE EVENT_SCHEMA = DATABASE()",
            )
            .unwrap();
        let mut out = BTreeMap::new();
        for (kind, name) in objects {
            let row: mysql::Row = c
                .query_first(format!("SHOW CREATE {kind} `{name}`"))
                .unwrap()
                .unwrap();
            let shown: Vec<String> = row
                .columns_ref()
                .iter()
                .enumerate()
                .filter(|(_, col)| col.name_str() != "Created")
                .map(|(i, col)| {
                    let v = match row.as_ref(i) {
                        Some(mysql::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    format!("{}: {}", col.name_str(), v.replace(db, "DB"))
                })
                .collect();
            out.insert(format!("{kind} {name}"), shown.join("\n"));
        }
        let order: Vec<(String, String, String, String, u64)> = c
            .query(
                "SELECT EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, TRIGGER_NAME, \
                   ACTION_ORDER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() \
                 ORDER BY 1, 2, 3, 5",
            )
            .unwrap();
        out.insert("trigger order".into(), format!("{order:?}"));
        out
    }
}
