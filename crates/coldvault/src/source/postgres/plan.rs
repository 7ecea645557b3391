//! Planning a PostgreSQL backup: the selected tables, each split by blocks (`ctid` ranges,
//! read by a TID range scan: the server reads each block once, in physical order, as one
//! sequential scan would) on PostgreSQL 14 and later; by a `split_by` column, or before 14 by
//! an integer key (the histogram of `pg_stats`, else min/max and `reltuples`), never by
//! scanning. A `where` or `split_by` that does not hold fails here, before anything is stored.

use postgres::Client;

use super::{connect, ident, qualified, range_query, sql_err, where_of, PgServer};
use crate::catalog::{PgRangeTask, PgSplit, TaskKind};
use crate::error::{Error, Result};
use crate::job::Database;

/// A table of at most this many bytes on disk, read in one task, is read on a kept connection.
const SMALL_TABLE: u64 = 16 << 20;

struct TableInfo {
    name: String,
    /// Rows: `reltuples` (negative when never vacuumed nor analysed) scaled to `pages`, as the
    /// planner estimates them.
    rows: f64,
    /// Blocks on disk now (`relpages` until [`tables`] has read the sizes: vacuum and analyse
    /// alone update it).
    pages: i64,
    key: Option<String>,
    /// The columns COPY reads and writes back, in order: generated columns are left out (the
    /// server computes them again), dropped ones are gone.
    columns: Vec<String>,
    /// The generated columns.
    generated: Vec<String>,
}

fn tables(client: &mut Client, patterns: &[String], url: &str) -> Result<Vec<TableInfo>> {
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname, c.reltuples::float8, c.relpages::int8, \
               (SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 \
                  AND a.atttypid IN (20, 21, 23)), \
               (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                  AND a.attgenerated = ''), \
               (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                  AND a.attgenerated <> '') \
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
            columns: r.get::<_, Option<Vec<String>>>(4).unwrap_or_default(),
            generated: r.get::<_, Option<Vec<String>>>(5).unwrap_or_default(),
        })
        .collect();
    let mut selected = crate::source::select_tables(all, patterns, &where_of(url), |g, t| {
        g.matches(&t.name) || t.name.strip_prefix("public.").is_some_and(|n| g.matches(n))
    })?;
    // Sizes of the selected tables only: reading one waits for a lock on it.
    let names: Vec<String> = selected.iter().map(|t| qualified(&t.name)).collect();
    let sizes = client
        .query(
            "SELECT coalesce(pg_relation_size(to_regclass(t)), 0) \
               / current_setting('block_size')::int8 FROM unnest($1::text[]) WITH ORDINALITY u(t, i) \
             ORDER BY i",
            &[&names],
        )
        .map_err(sql_err(format!(
            "cannot read the tables' sizes in {}",
            where_of(url)
        )))?;
    for (tb, size) in selected.iter_mut().zip(&sizes) {
        let (relpages, now) = (tb.pages, size.get::<_, i64>(0));
        if tb.rows >= 0.0 && relpages > 0 {
            tb.rows = tb.rows / relpages as f64 * now as f64;
        }
        tb.pages = now;
    }
    Ok(selected)
}

/// Plans a database: per table, key or block ranges of about `max_rows` rows.
pub(crate) fn plan(db: &Database, max_rows: u64) -> Result<Vec<(TaskKind, u64, u64)>> {
    let t = &PgServer::of(db);
    let (patterns, filter, settings) = (&db.tables, db.filter.as_deref(), &db.table_settings);
    let mut client = connect(t)?;
    client
        .batch_execute(&format!("SET lock_timeout = '{}'", super::LOCK_WAIT))
        .map_err(sql_err(format!(
            "cannot set up a session on {}",
            where_of(t.url)
        )))?;
    let tables = tables(&mut client, patterns, t.url)?;
    let tid_range_scan = server_version(&mut client, t.url)? >= 140_000;
    for name in settings.keys() {
        if !tables.iter().any(|tb| &tb.name == name) {
            return Err(Error::config(format!(
                "[source.table.{name:?}] names no selected table in {}",
                where_of(t.url)
            )));
        }
    }
    // Every COPY names its columns, so a table whose column order differs after the schema is
    // restored (inheritance, dropped columns) still gets each value under its own name.
    let what = |tb: &TableInfo| {
        let s = settings.get(&tb.name).cloned().unwrap_or_default();
        let columns = if s.columns.is_empty() {
            tb.columns.clone()
        } else {
            s.columns
        };
        (s.filter.or_else(|| filter.map(str::to_owned)), columns)
    };
    // A condition or a column that does not work fails here, before anything runs.
    for tb in &tables {
        let (f, columns) = what(tb);
        if let Some(g) = columns.iter().find(|c| tb.generated.contains(c)) {
            return Err(Error::config(format!(
                "[source.table.{:?}] columns: {g:?} is a generated column, which the server \
                 computes again on restore; leave it out",
                tb.name
            )));
        }
        if f.is_none() && columns == tb.columns {
            continue;
        }
        let q = range_query(&tb.name, &PgSplit::Ctid, None, None, f.as_deref(), &columns);
        client.execute(&format!("EXPLAIN {q}"), &[]).map_err(|e| {
            let err = Error::config(format!(
                "[source] where = {:?} / columns = {columns:?} does not work on {}",
                f.unwrap_or_default(),
                tb.name
            ));
            super::caused_by(err, e)
        })?;
    }
    let mut tasks = Vec::new();
    for mut tb in tables {
        let rows = tb.rows.max(0.0) as u64;
        let bytes = (tb.pages.max(0) as u64) * 8192;
        if let Some(col) = settings.get(&tb.name).and_then(|s| s.split_by.clone()) {
            check_split_by(&mut client, &tb.name, &col)?;
            tasks.push((
                TaskKind::PgRange(PgRangeTask {
                    table: tb.name.clone(),
                    split: PgSplit::Null(col.clone()),
                    start: None,
                    end: None,
                    columns: what(&tb).1,
                    filter: what(&tb).0,
                    small: false,
                }),
                0,
                0,
            ));
            tb.key = Some(col);
        } else if tid_range_scan {
            tb.key = None;
        }
        let (split, bounds) = match &tb.key {
            Some(k) => (
                PgSplit::Key(k.clone()),
                key_bounds(&mut client, &tb, k, max_rows)?,
            ),
            // Before 14 a ctid condition is a filter on a whole scan: one task reads it once.
            None if !tid_range_scan => (PgSplit::Ctid, Vec::new()),
            None => (PgSplit::Ctid, block_bounds(&tb, max_rows)),
        };
        let n = bounds.len() as u64 + 1;
        let small = n == 1 && bytes <= SMALL_TABLE;
        let mut start = None;
        for end in bounds.into_iter().map(Some).chain([None]) {
            tasks.push((
                TaskKind::PgRange(PgRangeTask {
                    table: tb.name.clone(),
                    split: split.clone(),
                    start,
                    end,
                    columns: what(&tb).1,
                    filter: what(&tb).0,
                    small,
                }),
                bytes / n,
                rows / n,
            ));
            start = end;
        }
    }
    Ok(tasks)
}

/// `server_version_num`, e.g. 150004.
fn server_version(client: &mut Client, url: &str) -> Result<u32> {
    let v: String = client
        .query_one("SHOW server_version_num", &[])
        .map_err(sql_err(format!(
            "cannot read the version of {}",
            where_of(url)
        )))?
        .get(0);
    v.trim()
        .parse()
        .map_err(|_| Error::source_err(format!("{} reports version {v:?}", where_of(url))))
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
