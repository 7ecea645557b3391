//! SQLite source: tables split by rowid range, each range read as SQL statements in the form the
//! `sqlite3` shell's `.dump` writes, so `zstdcat … | sqlite3 new.db` loads a data file by hand.
//!
//! Encoding, one statement per line: integers in decimal; reals in the shortest form that reads back
//! to the same bits (±Inf as `±1e999`, as `.dump` does); text in quotes with `''` doubling, or as
//! `CAST(X'…' AS TEXT)` when it holds a newline, a carriage return, a NUL or bytes that are not
//! UTF-8; blobs as `X'…'`; NULL as `NULL`. Values are literals, so every value keeps its storage
//! class, also in columns without a declared type.
//!
//! Consistency: every task of a run reads one committed state, in either journal mode (see
//! [`snapshot`]): in rollback-journal mode the coordinator's read transaction keeps writers from
//! committing for the whole run; in WAL mode the tasks read a copy made with SQLite's online
//! backup API in one read transaction. The backup report says which.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

mod restore;
mod snapshot;

use super::{RestoreRun, Restored, RunRecord, RunSource, SourceKind, SourcePlan, TaskRead};
use crate::catalog::{ReadStats, Schema, SchemaObject, SqliteSchema, TableTask, TaskKind};
use crate::error::{Error, Result};
use crate::job::{Job, Source};
use snapshot::Hold;

fn sql_err(what: String, path: &Path, e: rusqlite::Error) -> Error {
    Error::source_err(format!("{what} in {}", path.display())).with_source(e)
}

/// Opens a database read-only.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(c)
    })
    .map_err(|e| sql_err("cannot open database".into(), path, e))
}

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQLite database file.
pub(crate) struct SqliteSource;

/// The database file and table patterns of a `sqlite` job.
fn selection(job: &Job) -> Result<(&Path, &[String])> {
    match &job.source {
        Source::Sqlite { path, tables } => Ok((path, tables)),
        _ => Err(Error::internal("a SQLite source for a job of another kind")),
    }
}

impl SourceKind for SqliteSource {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn plan(&self, job: &Job, _parent: Option<&crate::catalog::Manifest>) -> Result<SourcePlan> {
        let (path, tables) = selection(job)?;
        Ok(super::planned(plan(path, tables, job.split.max_rows)?))
    }

    fn open_run<'a>(
        &self,
        job: &'a Job,
        _kinds: &[&TaskKind],
        _parallel: usize,
    ) -> Result<Box<dyn RunSource + 'a>> {
        let (path, _) = selection(job)?;
        let (hold, schema) = Hold::open(path, &job.run.staging, &job.name)?;
        Ok(Box::new(Held {
            path,
            staging: &job.run.staging,
            hold: Some(hold),
            schema: Some(schema),
        }))
    }

    fn open_worker<'a>(&self, job: &'a Job) -> Result<Box<dyn RunSource + 'a>> {
        Ok(Box::new(Held {
            path: selection(job)?.0,
            staging: &job.run.staging,
            hold: None,
            schema: None,
        }))
    }

    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored> {
        r.engine.require_local(
            "a SQLite database is written by one process: restore it without --engine spark",
        )?;
        restore::restore(r.fetch, r.manifest, r.to.path("SQLite")?, r.opts.force).map(Into::into)
    }
}

/// The database held for a run: on the coordinator, its [`Hold`] (the read transaction or the
/// consistent copy) and the schema read in the same state; in a worker process, nothing but where
/// to find the database and the copies.
struct Held<'a> {
    path: &'a Path,
    staging: &'a Path,
    hold: Option<Hold>,
    schema: Option<SqliteSchema>,
}

impl Held<'_> {
    /// The file a task reads: the run's copy when there is one (the coordinator's own, or the one
    /// the task's snapshot id names), else the database.
    fn file(&self, snapshot: Option<&str>) -> Result<PathBuf> {
        match (&self.hold, snapshot) {
            (Some(Hold::Copy(c)), _) => Ok(c.file()),
            (Some(Hold::Transaction { .. }), _) | (None, None) => Ok(self.path.to_owned()),
            (None, Some(id)) => snapshot::copy_in(self.staging, id, self.path),
        }
    }
}

impl RunSource for Held<'_> {
    fn read(
        &self,
        kind: &TaskKind,
        _attempt: u32,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead> {
        match kind {
            TaskKind::Table(t) => {
                let file = self.file(snapshot)?;
                Ok(read_table(&file, &t.table, t.start, t.end, out)?.into())
            }
            other => Err(Error::internal(format!(
                "a {} task for a SQLite source",
                other.name()
            ))),
        }
    }

    fn snapshot(&self) -> Option<&str> {
        self.hold.as_ref().and_then(Hold::snapshot)
    }

    fn consistency(&self) -> Option<String> {
        self.hold.as_ref().map(Hold::consistency)
    }

    fn finish(self: Box<Self>) -> Result<RunRecord> {
        drop(self.hold);
        Ok(RunRecord {
            schema: self.schema.map(Schema::Sqlite),
        })
    }
}

fn read_schema(conn: &Connection, path: &Path) -> Result<SqliteSchema> {
    let err = |e| sql_err("cannot read the schema".into(), path, e);
    let mut stmt = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )
        .map_err(err)?;
    let objects = stmt
        .query_map([], |r| {
            Ok(SchemaObject {
                kind: r.get(0)?,
                name: r.get(1)?,
                tbl_name: r.get(2)?,
                sql: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    let has_seq: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    let sequences = if has_seq {
        let mut stmt = conn
            .prepare("SELECT name, seq FROM sqlite_sequence ORDER BY rowid")
            .map_err(err)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?
    } else {
        Vec::new()
    };
    let user_version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    Ok(SqliteSchema {
        objects,
        sequences,
        user_version,
    })
}

struct TableInfo {
    name: String,
    without_rowid: bool,
}

fn tables(conn: &Connection, path: &Path, patterns: &[String]) -> Result<Vec<TableInfo>> {
    let err = |e| sql_err("cannot list tables".into(), path, e);
    let mut stmt = conn
        .prepare(
            "SELECT m.name, t.wr FROM sqlite_master m \
             JOIN pragma_table_list t ON t.name = m.name AND t.schema = 'main' \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
             AND m.sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY m.name",
        )
        .map_err(err)?;
    let all = stmt
        .query_map([], |r| {
            Ok(TableInfo {
                name: r.get(0)?,
                without_rowid: r.get::<_, i64>(1)? != 0,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    super::select_tables(
        all,
        patterns,
        &path.display().to_string(),
        |g, t: &TableInfo| g.matches(&t.name),
    )
}

/// Plans a SQLite database: per table, rowid ranges of about `max_rows` rows.
pub(crate) fn plan(
    path: &Path,
    patterns: &[String],
    max_rows: u64,
) -> Result<Vec<(TaskKind, u64, u64)>> {
    let conn = open(path)?;
    let db_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let tables = tables(&conn, path, patterns)?;
    let mut counts = Vec::with_capacity(tables.len());
    for t in &tables {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {}", ident(&t.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(format!("cannot count rows of {}", t.name), path, e))?;
        counts.push(n.max(0) as u64);
    }
    let total_rows: u64 = counts.iter().sum::<u64>().max(1);
    let mut tasks = Vec::new();
    for (t, rows) in tables.iter().zip(counts) {
        let bytes_per_row = db_bytes / total_rows;
        let bounds = if t.without_rowid || rows <= max_rows {
            Vec::new()
        } else {
            rowid_bounds(&conn, path, &t.name, max_rows)?
        };
        let mut start = None;
        let n_tasks = bounds.len() as u64 + 1;
        for end in bounds.into_iter().map(Some).chain([None]) {
            let est_rows = rows / n_tasks;
            tasks.push((
                TaskKind::Table(TableTask {
                    table: t.name.clone(),
                    start,
                    end,
                }),
                est_rows * bytes_per_row,
                est_rows,
            ));
            start = end;
        }
    }
    Ok(tasks)
}

/// Every `max_rows`-th rowid, in one pass over the rowids.
fn rowid_bounds(conn: &Connection, path: &Path, table: &str, max_rows: u64) -> Result<Vec<i64>> {
    let err = |e| sql_err(format!("cannot read rowids of {table}"), path, e);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid FROM {} ORDER BY rowid",
            ident(table)
        ))
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut bounds = Vec::new();
    let mut i = 0u64;
    while let Some(row) = rows.next().map_err(err)? {
        if i > 0 && i.is_multiple_of(max_rows) {
            bounds.push(row.get(0).map_err(err)?);
        }
        i += 1;
    }
    Ok(bounds)
}

/// Writes the rows of `table` with rowid in `[start, end)` as INSERT statements.
pub(crate) fn read_table(
    path: &Path,
    table: &str,
    start: Option<i64>,
    end: Option<i64>,
    out: &mut dyn Write,
) -> Result<ReadStats> {
    let conn = open(path)?;
    let err = |e| sql_err(format!("cannot read table {table}"), path, e);
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid")
            .map_err(err)?;
        stmt.query_map([table], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(err)?
    };
    if columns.is_empty() {
        return Err(Error::source_err(format!(
            "table {table} does not exist in {}",
            path.display()
        )));
    }
    let col_list = columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(",");
    let mut sql = format!("SELECT {col_list} FROM {}", ident(table));
    let mut cond = Vec::new();
    if let Some(s) = start {
        cond.push(format!("rowid >= {s}"));
    }
    if let Some(e) = end {
        cond.push(format!("rowid < {e}"));
    }
    if !cond.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&cond.join(" AND "));
        sql.push_str(" ORDER BY rowid");
    }
    let prefix = format!("INSERT INTO {}({col_list}) VALUES(", ident(table));
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut w = BufWriter::with_capacity(256 << 10, out);
    let mut stats = ReadStats::default();
    let mut line = String::new();
    let n = columns.len();
    while let Some(row) = rows.next().map_err(err)? {
        line.clear();
        line.push_str(&prefix);
        for i in 0..n {
            if i > 0 {
                line.push(',');
            }
            push_value(&mut line, row.get_ref(i).map_err(err)?);
        }
        line.push_str(");\n");
        w.write_all(line.as_bytes())
            .map_err(|e| Error::io("cannot write staged data", e))?;
        stats.rows += 1;
        stats.bytes_read += line.len() as u64;
    }
    w.flush()
        .map_err(|e| Error::io("cannot write staged data", e))?;
    Ok(stats)
}

/// Appends one value as an SQL literal.
pub(crate) fn push_value(out: &mut String, v: ValueRef<'_>) {
    use std::fmt::Write as _;
    match v {
        ValueRef::Null => out.push_str("NULL"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => push_real(out, f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains(['\n', '\r', '\0']) => {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            }
            _ => {
                out.push_str("CAST(X'");
                out.push_str(&crate::path::hex_encode(t));
                out.push_str("' AS TEXT)");
            }
        },
        ValueRef::Blob(b) => {
            out.push_str("X'");
            out.push_str(&crate::path::hex_encode(b));
            out.push('\'');
        }
    }
}

fn push_real(out: &mut String, f: f64) {
    use std::fmt::Write as _;
    if f.is_nan() {
        out.push_str("NULL");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "1e999" } else { "-1e999" });
    } else {
        // Debug prints the shortest digits that read back to the same f64, always with a '.' or an
        // exponent, so SQLite reads a REAL, never an INTEGER.
        let _ = write!(out, "{f:?}");
    }
}

#[cfg(test)]
mod tests;
