//! Planning a MySQL / MariaDB backup: the selected tables and columns, checked by asking the
//! server (a `where` that does not parse fails here, before anything is stored), then key ranges
//! of about `max_rows` rows bisected with the optimizer's estimates, never by scanning.

use mysql::prelude::Queryable;
use mysql::Conn;

use super::{connect, ident, literal, range_query, sql_err, where_of, MyServer};
use crate::catalog::{ColumnKind, MyColumn, MyRangeTask, MySplit, TaskKind};
use crate::error::{Error, Result};
use crate::job::{Database, TableSettings};

struct TableInfo {
    name: String,
    rows: u64,
    bytes: u64,
    key: Option<String>,
}

fn tables(conn: &mut Conn, patterns: &[String], url: &str) -> Result<Vec<TableInfo>> {
    let listed: Vec<(String, Option<u64>, Option<u64>)> = conn
        .query(
            "SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
        .map_err(sql_err(format!(
            "cannot list the tables of {}",
            where_of(url)
        )))?;
    // Tables whose primary key is one integer column.
    let keys: Vec<(String, String)> = conn
        .query(
            "SELECT s.TABLE_NAME, MIN(s.COLUMN_NAME) FROM information_schema.STATISTICS s \
             JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA \
               AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
             WHERE s.TABLE_SCHEMA = DATABASE() AND s.INDEX_NAME = 'PRIMARY' \
             GROUP BY s.TABLE_NAME \
             HAVING COUNT(*) = 1 AND MIN(c.DATA_TYPE) IN ('tinyint','smallint','mediumint','int','bigint')",
        )
        .map_err(sql_err(format!("cannot read the keys of {}", where_of(url))))?;
    let all = listed
        .into_iter()
        .map(|(name, rows, bytes)| TableInfo {
            key: keys
                .iter()
                .find(|(t, _)| *t == name)
                .map(|(_, k)| k.clone()),
            name,
            rows: rows.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
        .collect();
    crate::source::select_tables(all, patterns, &where_of(url), |g, t: &TableInfo| {
        g.matches(&t.name)
    })
}

/// The columns of `table` that are read: `wanted` (checked) or every stored column.
fn columns(conn: &mut Conn, table: &str, wanted: &[String]) -> Result<Vec<MyColumn>> {
    let all: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            literal(table)
        ))
        .map_err(sql_err(format!("cannot read the columns of {table}")))?;
    let generated = |extra: &str| extra.to_ascii_uppercase().contains("GENERATED");
    let column = |(name, ty, _): &(String, String, String)| MyColumn {
        name: name.clone(),
        kind: ColumnKind::of(ty),
    };
    if wanted.is_empty() {
        return Ok(all
            .iter()
            .filter(|c| !generated(&c.2))
            .map(column)
            .collect());
    }
    wanted
        .iter()
        .map(|w| match all.iter().find(|c| &c.0 == w) {
            Some(c) if generated(&c.2) => Err(Error::config(format!(
                "[source.table.{table:?}] columns: {w:?} is a generated column; it is computed again on restore"
            ))),
            Some(c) => Ok(column(c)),
            None => Err(Error::config(format!(
                "[source.table.{table:?}] columns: {table} has no column {w:?}"
            ))),
        })
        .collect()
}

/// Plans a database: per table, key ranges of about `max_rows` rows.
pub(crate) fn plan(db: &Database, max_rows: u64) -> Result<Vec<(TaskKind, u64, u64)>> {
    let t = MyServer::of(db);
    let mut conn = connect(&t)?;
    let tables = tables(&mut conn, &db.tables, t.url)?;
    for name in db.table_settings.keys() {
        if !tables.iter().any(|tb| &tb.name == name) {
            return Err(Error::config(format!(
                "[source.table.{name:?}] names no selected table in {}",
                where_of(t.url)
            )));
        }
    }
    let mut tasks = Vec::new();
    for mut tb in tables {
        let s = db.table_settings.get(&tb.name).cloned().unwrap_or_default();
        let filter = s.filter.clone().or_else(|| db.filter.clone());
        let cols = columns(&mut conn, &tb.name, &s.columns)?;
        check_query(&mut conn, &tb.name, &cols, filter.as_deref(), &s)?;
        let kind = |split: MySplit, start, end| {
            TaskKind::MyRange(MyRangeTask {
                table: tb.name.clone(),
                split,
                start,
                end,
                columns: cols.clone(),
                filter: filter.clone(),
            })
        };
        if let Some(col) = &s.split_by {
            check_split_by(&mut conn, &tb.name, col)?;
            tasks.push((kind(MySplit::Null(col.clone()), None, None), 0, 0));
            tb.key = Some(col.clone());
        }
        let Some(key) = tb.key.clone() else {
            tasks.push((kind(MySplit::Whole, None, None), tb.bytes, tb.rows));
            continue;
        };
        let bounds = if tb.rows <= max_rows {
            Vec::new()
        } else {
            key_bounds(&mut conn, &tb.name, &key, max_rows)?
        };
        let n = bounds.len() as u64 + 1;
        let mut start = None;
        for end in bounds.into_iter().map(Some).chain([None]) {
            tasks.push((
                kind(MySplit::Key(key.clone()), start, end),
                tb.bytes / n,
                tb.rows / n,
            ));
            start = end;
        }
    }
    Ok(tasks)
}

/// A `where` or column list that does not work fails here, before anything runs.
fn check_query(
    conn: &mut Conn,
    table: &str,
    cols: &[MyColumn],
    filter: Option<&str>,
    s: &TableSettings,
) -> Result<()> {
    if filter.is_none() && s.columns.is_empty() {
        return Ok(());
    }
    let q = range_query(table, &MySplit::Whole, None, None, filter, cols);
    conn.query_drop(format!("EXPLAIN {q}")).map_err(|e| {
        Error::config(format!(
            "[source] where = {:?} / columns = {:?} does not work on {table}",
            filter.unwrap_or_default(),
            s.columns
        ))
        .with_source(e)
    })
}

/// A `split_by` column must exist and be an integer.
fn check_split_by(conn: &mut Conn, table: &str, col: &str) -> Result<()> {
    let ty: Option<String> = conn
        .query_first(format!(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = {} AND COLUMN_NAME = {}",
            literal(table),
            literal(col)
        ))
        .map_err(sql_err(format!("cannot inspect {table}")))?;
    match ty.as_deref() {
        Some("tinyint" | "smallint" | "mediumint" | "int" | "bigint") => Ok(()),
        _ => Err(Error::config(format!(
            "[source.table.{table:?}] split_by = {col:?}: not an integer column of {table}"
        ))),
    }
}

/// Boundaries of key ranges of about `max_rows` rows, by bisecting with row estimates.
fn key_bounds(conn: &mut Conn, table: &str, key: &str, max_rows: u64) -> Result<Vec<i64>> {
    let (k, t) = (ident(key), ident(table));
    let range: Option<(Option<String>, Option<String>)> = conn
        .query_first(format!("SELECT MIN({k}), MAX({k}) FROM {t}"))
        .map_err(sql_err(format!("cannot read the key range of {table}")))?;
    let clamp = |v: Option<String>| {
        v.and_then(|s| s.parse::<i128>().ok())
            .map(|v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    };
    let Some((Some(lo), Some(hi))) = range.map(|(a, b)| (clamp(a), clamp(b))) else {
        return Ok(Vec::new());
    };
    let mut estimate = |a: i64, b: i128| -> Result<u64> {
        let q = format!("EXPLAIN SELECT {k} FROM {t} WHERE {k} >= {a} AND {k} < {b}");
        let row: Option<mysql::Row> = conn
            .query_first(q)
            .map_err(sql_err(format!("cannot estimate the rows of {table}")))?;
        let rows = row.and_then(|r| {
            let i = r
                .columns_ref()
                .iter()
                .position(|c| c.name_str() == "rows")?;
            r.get::<Option<u64>, _>(i).flatten()
        });
        Ok(rows.unwrap_or(0))
    };
    bisect_bounds(lo, hi, max_rows, &mut estimate)
}

/// Most ranges a table is cut into before splitting stops.
const MAX_RANGES: usize = 100_000;

/// Cuts the keys `lo..=hi` into ranges of at most about `max_rows` estimated rows: a range whose
/// estimate is larger is halved, then neighbouring ranges are merged while they fit. Returns the
/// interior boundaries (each the first key of a range), strictly increasing.
pub(crate) fn bisect_bounds(
    lo: i64,
    hi: i64,
    max_rows: u64,
    estimate: &mut dyn FnMut(i64, i128) -> Result<u64>,
) -> Result<Vec<i64>> {
    let mut leaves: Vec<(i64, u64)> = Vec::new();
    let mut stack = vec![(lo as i128, hi as i128 + 1)];
    while let Some((a, b)) = stack.pop() {
        let e = estimate(a as i64, b)?;
        if e <= max_rows || b - a <= 1 || leaves.len() + stack.len() >= MAX_RANGES {
            leaves.push((a as i64, e));
        } else {
            let m = a + (b - a) / 2;
            stack.push((m, b));
            stack.push((a, m));
        }
    }
    let mut bounds = Vec::new();
    let mut acc = 0u64;
    for (i, &(start, e)) in leaves.iter().enumerate() {
        if i > 0 && acc + e > max_rows {
            bounds.push(start);
            acc = 0;
        }
        acc += e;
    }
    Ok(bounds)
}
