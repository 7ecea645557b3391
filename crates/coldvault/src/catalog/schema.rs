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
    /// The `CREATE` statement (views without their `DEFINER`).
    pub create: String,
}

/// What a snapshot keeps of a MySQL / MariaDB database besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlSchema {
    /// The tables, with indexes, constraints and the `AUTO_INCREMENT` counter.
    pub tables: Vec<MyObject>,
    /// The views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<MyObject>,
    /// How long the global read lock was held, in milliseconds.
    pub lock_ms: u64,
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
