//! PostgreSQL source: tables split into key ranges (an integer primary key) or ctid block ranges
//! (no usable key), read with `COPY … TO STDOUT` straight into staging, all under one snapshot.
//!
//! Consistency, as `pg_dump -j` does it: the coordinator opens a REPEATABLE READ transaction,
//! exports its snapshot (`pg_export_snapshot()`) and keeps it open for the whole run
//! ([`SnapshotGuard`]); every task imports it (`SET TRANSACTION SNAPSHOT`), so all tasks read the
//! same point in time although they run in parallel on their own connections. The snapshot id
//! travels in the task specs.
//!
//! Splitting uses the planner's statistics, never a scan: the key's histogram (`pg_stats`) when
//! the table was analysed, else min/max of the key (an index lookup) and `reltuples`. The first and
//! last ranges are unbounded, so rows added or keys outside the statistics are still covered once.

use std::io::{self, Read, Write};

use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};

use super::ReadStats;
use crate::error::{Error, Result};
use crate::job::{Database, PasswordSource};
use crate::plan::TaskKind;

/// How a table's rows are split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgSplit {
    /// By an integer key column: rows with `start <= key < end`.
    Key(String),
    /// By physical block: rows with `(start,0) <= ctid < (end,0)`.
    Ctid,
    /// The rows whose `split_by` column is NULL (one task; ranges never hold them).
    Null(String),
}

/// A PostgreSQL connection target (no secret inside).
#[derive(Debug, Clone)]
pub struct PgTarget<'a> {
    /// `postgres://user@host:port/db`.
    pub url: &'a str,
    /// Where the password comes from.
    pub password: &'a PasswordSource,
}

/// Connects, with an error that names the server and the cause (never the password).
pub fn connect(t: &PgTarget<'_>) -> Result<Client> {
    let mut config: postgres::Config = t.url.parse().map_err(|e| {
        Error::config(format!("postgres URL {:?} is malformed", t.url)).with_source(e)
    })?;
    if let Some(pw) = crate::secrets::db_password(t.password, "PGPASSWORD")? {
        config.password(pw);
    }
    config.application_name("coldvault");
    config.connect_timeout(std::time::Duration::from_secs(10));
    config.connect(NoTls).map_err(|e| {
        Error::source_err(format!("cannot connect to {}", where_of(t.url))).with_source(e)
    })
}

pub use super::where_of;

fn sql_err(what: String) -> impl FnOnce(postgres::Error) -> Error {
    move |e| Error::source_err(what).with_source(e)
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table as `"schema"."name"`.
pub fn qualified(table: &str) -> String {
    match table.split_once('.') {
        Some((s, n)) => format!("{}.{}", ident(s), ident(n)),
        None => ident(table),
    }
}

/// The exporting transaction, held open while the tasks run.
pub struct SnapshotGuard {
    client: Client,
    id: String,
}

impl SnapshotGuard {
    /// Opens a REPEATABLE READ transaction and exports its snapshot.
    pub fn open(t: &PgTarget<'_>) -> Result<SnapshotGuard> {
        let mut client = connect(t)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(sql_err("cannot start the snapshot transaction".into()))?;
        let id: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .map_err(sql_err("cannot export the snapshot".into()))?
            .get(0);
        Ok(SnapshotGuard { client, id })
    }

    /// The exported snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sequences and their values in the snapshot.
    pub fn sequences(&mut self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .client
            .query(
                "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences \
                 WHERE last_value IS NOT NULL ORDER BY 1",
                &[],
            )
            .map_err(sql_err("cannot read sequences".into()))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

struct TableInfo {
    name: String,
    rows: f64,
    pages: i64,
    key: Option<String>,
}

fn tables(client: &mut Client, patterns: &[String], url: &str) -> Result<Vec<TableInfo>> {
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname, c.reltuples::float8, c.relpages::int8, \
               (SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 \
                  AND a.atttypid IN (20, 21, 23)) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1",
            &[],
        )
        .map_err(sql_err(format!(
            "cannot list the tables of {}",
            where_of(url)
        )))?;
    let all: Vec<TableInfo> = rows
        .iter()
        .map(|r| TableInfo {
            name: r.get(0),
            rows: r.get(1),
            pages: r.get(2),
            key: r.get(3),
        })
        .collect();
    super::select_tables(all, patterns, &where_of(url), |g, t: &TableInfo| {
        g.matches(&t.name) || t.name.strip_prefix("public.").is_some_and(|n| g.matches(n))
    })
}

/// Plans a database: per table, key or block ranges of about `max_rows` rows.
pub(crate) fn plan(db: &Database, max_rows: u64) -> Result<Vec<(TaskKind, u64, u64)>> {
    let t = &PgTarget {
        url: &db.url,
        password: &db.password,
    };
    let (patterns, filter, settings) = (&db.tables, db.filter.as_deref(), &db.table_settings);
    let mut client = connect(t)?;
    let tables = tables(&mut client, patterns, t.url)?;
    for name in settings.keys() {
        if !tables.iter().any(|tb| &tb.name == name) {
            return Err(Error::config(format!(
                "[source.table.{name:?}] names no selected table in {}",
                where_of(t.url)
            )));
        }
    }
    let what = |tb: &TableInfo| {
        let s = settings.get(&tb.name).cloned().unwrap_or_default();
        (s.filter.or_else(|| filter.map(str::to_owned)), s.columns)
    };
    // A condition or a column that does not work fails here, before anything runs.
    for tb in &tables {
        let (f, columns) = what(tb);
        if f.is_none() && columns.is_empty() {
            continue;
        }
        let q = range_query(&tb.name, &PgSplit::Ctid, None, None, f.as_deref(), &columns);
        client.execute(&format!("EXPLAIN {q}"), &[]).map_err(|e| {
            Error::config(format!(
                "[source] where = {:?} / columns = {columns:?} does not work on {}",
                f.unwrap_or_default(),
                tb.name
            ))
            .with_source(e)
        })?;
    }
    let mut tasks = Vec::new();
    for mut tb in tables {
        let rows = tb.rows.max(0.0) as u64;
        let bytes = (tb.pages.max(0) as u64) * 8192;
        if let Some(col) = settings.get(&tb.name).and_then(|s| s.split_by.clone()) {
            check_split_by(&mut client, &tb.name, &col)?;
            tasks.push((
                TaskKind::PgRange {
                    table: tb.name.clone(),
                    split: PgSplit::Null(col.clone()),
                    start: None,
                    end: None,
                    columns: what(&tb).1,
                    filter: what(&tb).0,
                },
                0,
                0,
            ));
            tb.key = Some(col);
        }
        let (split, bounds) = match &tb.key {
            Some(k) => (
                PgSplit::Key(k.clone()),
                key_bounds(&mut client, &tb, k, max_rows)?,
            ),
            None => (PgSplit::Ctid, block_bounds(&tb, max_rows)),
        };
        let n = bounds.len() as u64 + 1;
        let mut start = None;
        for end in bounds.into_iter().map(Some).chain([None]) {
            tasks.push((
                TaskKind::PgRange {
                    table: tb.name.clone(),
                    split: split.clone(),
                    start,
                    end,
                    columns: what(&tb).1,
                    filter: what(&tb).0,
                },
                bytes / n,
                rows / n,
            ));
            start = end;
        }
    }
    Ok(tasks)
}

/// A `split_by` column must exist and be an integer.
fn check_split_by(client: &mut Client, table: &str, col: &str) -> Result<()> {
    let ok: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attname = $2 AND atttypid IN (20, 21, 23) AND NOT attisdropped)",
            &[&qualified(table), &col],
        )
        .map_err(sql_err(format!("cannot inspect {table}")))?
        .get(0);
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "[source.table.{table:?}] split_by = {col:?}: not an integer column of {table}"
        )))
    }
}

/// Boundaries of key ranges of about `max_rows` rows, from the histogram or min/max.
fn key_bounds(client: &mut Client, tb: &TableInfo, key: &str, max_rows: u64) -> Result<Vec<i64>> {
    if tb.rows >= 0.0 && (tb.rows as u64) <= max_rows {
        return Ok(Vec::new());
    }
    let (schema, name) = tb.name.split_once('.').unwrap_or(("public", &tb.name));
    let hist = client
        .query_opt(
            "SELECT histogram_bounds::text::int8[] FROM pg_stats \
             WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
            &[&schema, &name, &key],
        )
        .map_err(sql_err(format!("cannot read statistics of {}", tb.name)))?
        .and_then(|r| r.get::<_, Option<Vec<i64>>>(0))
        .unwrap_or_default();
    if hist.len() > 2 && tb.rows > 0.0 {
        let per_bucket = tb.rows / (hist.len() - 1) as f64;
        let step = ((max_rows as f64 / per_bucket).floor() as usize).max(1);
        // Bucket i holds the rows between bounds i and i+1: cut every `step` buckets.
        let mut b: Vec<i64> = (1..)
            .map(|i| i * step)
            .take_while(|&i| i < hist.len() - 1)
            .map(|i| hist[i])
            .collect();
        b.dedup();
        return Ok(b);
    }
    let row = client
        .query_one(
            &format!(
                "SELECT min({k})::int8, max({k})::int8 FROM {}",
                qualified(&tb.name),
                k = ident(key)
            ),
            &[],
        )
        .map_err(sql_err(format!("cannot read the key range of {}", tb.name)))?;
    let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(Vec::new());
    };
    let est = if tb.rows > 0.0 {
        tb.rows
    } else {
        (tb.pages.max(1) * 100) as f64
    };
    let n = ((est / max_rows as f64).ceil() as i64).clamp(1, 100_000);
    let span = (hi as i128 - lo as i128 + 1).max(1);
    let mut b: Vec<i64> = (1..n)
        .map(|i| (lo as i128 + span * i as i128 / n as i128) as i64)
        .collect();
    b.dedup();
    Ok(b)
}

/// Boundaries of block ranges of about `max_rows` rows.
fn block_bounds(tb: &TableInfo, max_rows: u64) -> Vec<i64> {
    if tb.pages <= 1 || (tb.rows >= 0.0 && (tb.rows as u64) <= max_rows) {
        return Vec::new();
    }
    let per_page = if tb.rows > 0.0 {
        tb.rows / tb.pages as f64
    } else {
        100.0
    };
    let step = ((max_rows as f64 / per_page).floor() as i64).max(1);
    (1..)
        .map(|i| i * step)
        .take_while(|&b| b < tb.pages)
        .collect()
}

/// The `SELECT` of one range.
pub fn range_query(
    table: &str,
    split: &PgSplit,
    start: Option<i64>,
    end: Option<i64>,
    filter: Option<&str>,
    columns: &[String],
) -> String {
    let mut cond: Vec<String> = Vec::new();
    match split {
        PgSplit::Key(k) => {
            if let Some(s) = start {
                cond.push(format!("{} >= {s}", ident(k)));
            }
            if let Some(e) = end {
                cond.push(format!("{} < {e}", ident(k)));
            }
        }
        PgSplit::Ctid => {
            if let Some(s) = start {
                cond.push(format!("ctid >= '({s},0)'::tid"));
            }
            if let Some(e) = end {
                cond.push(format!("ctid < '({e},0)'::tid"));
            }
        }
        PgSplit::Null(k) => cond.push(format!("{} IS NULL", ident(k))),
    }
    if let Some(f) = filter {
        cond.push(format!("({f})"));
    }
    let cols = if columns.is_empty() {
        "*".to_owned()
    } else {
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut q = format!("SELECT {cols} FROM {}", qualified(table));
    if !cond.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&cond.join(" AND "));
    }
    q
}

/// Streams one range with `COPY … TO STDOUT` (text format) into `out`, inside the shared snapshot.
///
/// The rows come through `psql`: its C client moves COPY data at a fraction of the CPU a
/// message-by-message Rust client spends, and the bytes pass through untouched.
pub(crate) fn read_range(
    t: &PgTarget<'_>,
    snapshot: Option<&str>,
    query: &str,
    out: &mut dyn Write,
) -> Result<ReadStats> {
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", t.url])
        .args(["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]);
    if let Some(id) = snapshot {
        cmd.arg("-c").arg(format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            id.replace('\'', "")
        ));
    }
    cmd.arg("-c")
        .arg(format!("COPY ({query}) TO STDOUT"))
        .args(["-c", "COMMIT"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(pw) = crate::secrets::db_password(t.password, "PGPASSWORD")? {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::source_err("cannot run psql (is the PostgreSQL client installed?)").with_source(e)
    })?;
    let mut reader = child
        .stdout
        .take()
        .ok_or_else(|| Error::source_err("psql has no output"))?;
    let mut stats = ReadStats::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::source_err(format!("cannot read {query}")).with_source(e)),
        };
        stats.rows += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        stats.bytes_read += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write staged data", e))?;
    }
    let done = child
        .wait_with_output()
        .map_err(|e| Error::source_err("psql failed").with_source(e))?;
    if !done.status.success() {
        return Err(Error::source_err(format!(
            "reading {} failed: {}",
            where_of(t.url),
            String::from_utf8_lossy(&done.stderr).trim()
        )));
    }
    Ok(stats)
}
