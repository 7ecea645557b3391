//! Restoring a SQLite snapshot into a new database file: tables first, then the rows of every
//! table task in order (each data file checked before it is decoded, each task in one transaction),
//! then AUTOINCREMENT counters, indexes, triggers and views, then `user_version`.

use std::io::{BufRead, BufReader};
use std::path::Path;

use rusqlite::Connection;

use crate::catalog::{Manifest, ReadStats, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;

pub(super) fn restore(
    ctx: &Fetcher<'_>,
    manifest: &Manifest,
    target: &Path,
    force: bool,
) -> Result<(ReadStats, Vec<String>)> {
    let schema = manifest
        .sqlite
        .as_ref()
        .ok_or_else(|| Error::integrity("the snapshot has no SQLite schema"))?;
    if target.exists() {
        if !force {
            return Err(Error::config(format!(
                "restore target {} already exists (use --force to replace it)",
                target.display()
            )));
        }
        std::fs::remove_file(target)
            .map_err(|e| Error::io(format!("cannot replace {}", target.display()), e))?;
    }
    let err = |what: &str, e: rusqlite::Error| {
        Error::new(
            crate::ErrorKind::Io,
            format!("{what} in {}", target.display()),
        )
        .with_source(e)
    };
    let conn = Connection::open(target).map_err(|e| err("cannot create the database", e))?;
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(|e| err("cannot configure", e))?;
    for o in schema.objects.iter().filter(|o| o.kind == "table") {
        exec_only(&conn, &o.sql, "CREATE ").map_err(|e| e.with_context("table", &o.name))?;
    }
    let mut stats = ReadStats::default();
    let mut problems = Vec::new();
    for t in &manifest.tasks {
        let TaskKind::Table(task) = &t.kind else {
            return Err(Error::integrity("a file task in a SQLite snapshot"));
        };
        let (data, p) = ctx
            .fetch(&t.data)
            .map_err(|e| e.with_context("task", &t.id))?;
        problems.extend(p);
        let rows = load(&conn, BufReader::new(data.open()?), ctx).map_err(|e| {
            e.with_context("table", &task.table)
                .with_context("task", &t.id)
        })?;
        stats.rows += rows;
        ctx.progress.task_done();
    }
    if !schema.sequences.is_empty() {
        // Loading rows with explicit ids already moved the counters; set them as they were.
        conn.execute_batch("DELETE FROM sqlite_sequence")
            .map_err(|e| err("cannot restore sqlite_sequence", e))?;
        let mut stmt = conn
            .prepare("INSERT INTO sqlite_sequence(name, seq) VALUES(?1, ?2)")
            .map_err(|e| err("cannot restore sqlite_sequence", e))?;
        for (name, seq) in &schema.sequences {
            stmt.execute(rusqlite::params![name, seq])
                .map_err(|e| err("cannot restore sqlite_sequence", e))?;
        }
    }
    for o in schema.objects.iter().filter(|o| o.kind != "table") {
        exec_only(&conn, &o.sql, "CREATE ").map_err(|e| e.with_context("object", &o.name))?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {}", schema.user_version))
        .map_err(|e| err("cannot set user_version", e))?;
    Ok((stats, problems))
}

/// Executes the statements of one data file (one per line) in one transaction.
fn load(conn: &Connection, mut r: impl BufRead, ctx: &Fetcher<'_>) -> Result<u64> {
    let sql_err = |e| Error::integrity("cannot load rows").with_source(e);
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let mut batch = String::with_capacity(1 << 20);
    let mut line = Vec::new();
    let mut rows = 0u64;
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::integrity("cannot decode a data file").with_source(e))?;
        if n > 0 {
            let text = std::str::from_utf8(&line)
                .map_err(|e| Error::integrity("a data file is not UTF-8").with_source(e))?;
            batch.push_str(text);
            rows += 1;
            ctx.progress.add_bytes(n as u64);
        }
        if (n == 0 && !batch.is_empty()) || batch.len() >= 1 << 20 {
            exec_only(conn, &batch, "INSERT INTO ")?;
            batch.clear();
        }
        if n == 0 {
            break;
        }
    }
    conn.execute_batch("COMMIT").map_err(sql_err)?;
    Ok(rows)
}

/// Executes the statements of `sql`, each of which must start with `prefix`: a tampered data file
/// or manifest cannot run anything else (no `ATTACH`, no `VACUUM INTO` writing outside the
/// target, no `PRAGMA`).
fn exec_only(conn: &Connection, sql: &str, prefix: &str) -> Result<()> {
    use rusqlite::fallible_iterator::FallibleIterator as _;
    let sql_err = |e| Error::integrity("cannot load rows").with_source(e);
    let mut batch = rusqlite::Batch::new(conn, sql);
    while let Some(mut stmt) = batch.next().map_err(sql_err)? {
        let text = stmt.expanded_sql().unwrap_or_default();
        if !text.trim_start().starts_with(prefix) {
            let head: String = text.trim_start().chars().take(40).collect();
            return Err(Error::integrity(format!(
                "refusing a statement that is not {}…: {head:?}",
                prefix.trim_end()
            )));
        }
        stmt.raw_execute().map_err(sql_err)?;
    }
    Ok(())
}
