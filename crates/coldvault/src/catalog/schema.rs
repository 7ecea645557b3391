//! What a snapshot keeps of a database besides its rows, one type per kind of database, as
//! manifests hold it. Captured and restored by the database's own module in `source/`.

use serde::{Deserialize, Serialize};

use crate::store::Receipt;

/// One object of a database's schema, as in `sqlite_master`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaObject {
    /// `table`, `index`, `view` or `trigger`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The table it belongs to.
    pub tbl_name: String,
    /// The statement that creates it.
    pub sql: String,
}

/// What a snapshot keeps of a SQLite database besides its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteSchema {
    /// Tables, indexes, views, triggers, in creation order.
    pub objects: Vec<SchemaObject>,
    /// `sqlite_sequence` (AUTOINCREMENT counters).
    #[serde(default)]
    pub sequences: Vec<(String, i64)>,
    /// `PRAGMA user_version`.
    #[serde(default)]
    pub user_version: i64,
}

/// What a snapshot keeps of a PostgreSQL database besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresSchema {
    /// `pg_dump --section=pre-data` (SQL, zstd): types, functions, tables, sequences, views. A
    /// snapshot with [`drops`](Self::drops) has no `DROP` in it; older ones were dumped with
    /// `--clean --if-exists`.
    pub pre_data: Receipt,
    /// `pg_dump --section=post-data` (SQL, zstd): indexes, constraints, triggers, rules,
    /// policies, publications, statistics; then `REFRESH MATERIALIZED VIEW` of every view
    /// that was populated, in dependency order.
    pub post_data: Receipt,
    /// `schema.sequence` and its last value.
    pub sequences: Vec<(String, i64)>,
    /// `DROP … IF EXISTS` of every object the schema creates, dependents first (what
    /// `pg_dump --clean --if-exists` runs before its `CREATE`s): run by `restore --force` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<Receipt>,
    /// The large objects with their OIDs and comments, as SQL (`lo_create`, `lo_put`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<Receipt>,
}

/// A table or view as `SHOW CREATE` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyObject {
    /// Its name.
    pub name: String,
    /// The `CREATE` statement, with its `DEFINER` (which older snapshots left out of views).
    pub create: String,
    /// The session it was created in (views, triggers, routines, events); none for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<MySession>,
}

/// What a snapshot keeps of a MySQL / MariaDB database besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlSchema {
    /// The tables, with indexes, constraints and the `AUTO_INCREMENT` counter.
    pub tables: Vec<MyObject>,
    /// The views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<MyObject>,
    /// Stored procedures, functions and packages (whole-database backups only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routines: Vec<MyRoutine>,
    /// The triggers of the tables kept, in the order they fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<MyObject>,
    /// The events (whole-database backups only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<MyObject>,
    /// MariaDB sequences, with the value each hands out next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<MySequence>,
    /// The database's default collation (so character set), given to a database restore creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// How long the global read lock was held, in milliseconds.
    pub lock_ms: u64,
}

/// The session settings a MySQL view, trigger, routine or event was created under (its text is
/// read as they say), set again to create it, as mysqldump's `/*!50003 SET … */` lines do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MySession {
    /// `sql_mode` (not kept for views, which the server stores in a canonical form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_mode: Option<String>,
    /// `character_set_client`.
    pub character_set_client: String,
    /// `collation_connection`.
    pub collation_connection: String,
    /// `time_zone` (events: their schedule is in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// A stored routine as `SHOW CREATE PROCEDURE` (or `FUNCTION`, `PACKAGE`, `PACKAGE BODY`) prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyRoutine {
    /// `PROCEDURE`, `FUNCTION`, `PACKAGE` or `PACKAGE BODY`.
    pub kind: String,
    /// Its name, text and session.
    #[serde(flatten)]
    pub object: MyObject,
}

/// A MariaDB sequence: `SHOW CREATE SEQUENCE`, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MySequence {
    /// Its name.
    pub name: String,
    /// The `CREATE SEQUENCE` statement.
    pub create: String,
    /// Its `next_not_cached_value`: what it hands out next once restored (as mysqldump keeps it).
    pub next: i64,
    /// Its `cycle_count`: how many times it has cycled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The schema of any kind of database, as a source hands it to the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// SQLite's.
    Sqlite(SqliteSchema),
    /// PostgreSQL's.
    Postgres(Box<PostgresSchema>),
    /// MySQL / MariaDB's.
    Mysql(MysqlSchema),
}
