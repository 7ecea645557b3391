//! The PostgreSQL server that `scripts/test` starts. A test that needs it fails (never skips)
//! when it is not running.

use std::collections::HashMap;

/// The running server, as written by `scripts/postgres start` into `$COLDVAULT_PG_DIR/env`.
#[derive(Debug, Clone)]
pub struct Postgres {
    vars: HashMap<String, String>,
}

impl Postgres {
    /// The server started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Postgres {
        let (_, vars) = crate::service_env(
            "COLDVAULT_PG_DIR",
            "PostgreSQL server",
            "scripts/postgres start DIR",
        );
        Postgres { vars }
    }

    /// The superuser's password.
    pub fn password(&self) -> String {
        self.vars["PG_PASSWORD"].clone()
    }

    /// The server's port.
    pub fn port(&self) -> String {
        self.vars["PG_PORT"].clone()
    }

    /// The URL of database `db` (no password in it).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// The path of one of the server's programs (`psql`, `pg_dump`, `pg_restore`): the server's
    /// own version, from `PG_BIN`.
    pub fn bin(&self, program: &str) -> std::path::PathBuf {
        std::path::Path::new(&self.vars["PG_BIN"]).join(program)
    }

    /// A command running the server's `program` with the password in its environment.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(self.bin(program));
        c.env("PGPASSWORD", self.password());
        c
    }

    /// `pg_dump --schema-only --no-owner --no-acl` of `db`, as text; panics when pg_dump fails.
    pub fn schema_dump(&self, db: &str) -> String {
        let out = self
            .command("pg_dump")
            .args([
                "--schema-only",
                "--no-owner",
                "--no-acl",
                "-d",
                &self.url(db),
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_dump: {e}"));
        assert!(
            out.status.success(),
            "pg_dump --schema-only of {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("pg_dump writes UTF-8 for a UTF-8 database")
    }

    /// A client connected to `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        let mut c: postgres::Config = self.url(db).parse().unwrap();
        c.password(self.password());
        c.connect(postgres::NoTls).unwrap()
    }

    /// Creates a fresh database and returns its name.
    pub fn create_db(&self, prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("{prefix}_{}_{:x}", std::process::id(), nanos & 0xffff_ffff);
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    /// Per table: row count and an MD5 of every row in key order — what must be equal after a
    /// restore.
    pub fn fingerprint(&self, db: &str, tables: &[(&str, &str)]) -> Vec<String> {
        let mut c = self.client(db);
        tables
            .iter()
            .map(|(t, order)| {
                let r = c
                    .query_one(
                        &format!(
                            "SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY {order})), '') FROM {t} x"
                        ),
                        &[],
                    )
                    .unwrap();
                format!("{t}: {} rows, md5 {}", r.get::<_, i64>(0), r.get::<_, String>(1))
            })
            .collect()
    }
}
