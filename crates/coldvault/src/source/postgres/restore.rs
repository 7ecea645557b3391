//! Restoring a PostgreSQL snapshot into a database, in three steps:
//!
//! 1. the schema's pre-data section (types, functions, tables, views) and the large objects,
//!    in one transaction: into a database that already holds any of them it fails having
//!    changed nothing, unless `force` is given; then the snapshot's `DROP … IF EXISTS` block
//!    runs first, in the same transaction, and replaces exactly the snapshot's objects (nothing
//!    cascades: an object of the target that depends on one of them stops the restore);
//! 2. every range's rows with `COPY … FROM STDIN` naming their columns, in parallel; a table
//!    whose rows are one range of at least [`FREEZE_FROM`] bytes with `COPY … FREEZE` after a
//!    `TRUNCATE` in the same transaction;
//! 3. the post-data section (indexes, constraints, triggers, rules, policies, built once over
//!    the loaded rows), the materialized views' refresh and the sequences' values, in one
//!    transaction.
//!
//! A failure in step 2 or 3 leaves the snapshot's schema and some of its rows in the target,
//! and nothing else in it touched: the error says so ([`ErrorKind::Incomplete`]) and names the
//! way out (`--force`, or dropping the database). Objects of the target that are not the
//! snapshot's are never dropped, emptied or altered.
//!
//! [`ErrorKind::Incomplete`]: crate::ErrorKind::Incomplete

use std::io::{BufRead, BufReader, Read};

use super::{client, column_list, connect, qualified, sql_err, where_of, PgServer};
use crate::catalog::{PostgresSchema, ReadStats, TaskEntry, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::source::{EntryWork, RestoreRun, Sessions};
use crate::store::Receipt;

pub(super) fn restore(r: &RestoreRun<'_>) -> Result<(ReadStats, Vec<String>)> {
    let (ctx, job, manifest, opts) = (r.fetch, r.job, r.manifest, r.opts);
    let schema = manifest
        .postgres
        .as_ref()
        .ok_or_else(|| Error::integrity("the snapshot has no PostgreSQL schema"))?;
    let url = r.to.url(
        &["postgres://", "postgresql://"],
        "PostgreSQL",
        "postgres://user@host:port/database",
    )?;
    let password = crate::source::password_of(job);
    let t = PgServer {
        url,
        password: &password,
    };
    let mut tables: Vec<&str> = manifest
        .tasks
        .iter()
        .filter_map(|task| match &task.kind {
            TaskKind::PgRange(r) => Some(r.table.as_str()),
            _ => None,
        })
        .collect();
    tables.dedup();
    let mut client = connect(&t)?;
    let mut present = Vec::new();
    for table in &tables {
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&qualified(table)])
            .map_err(sql_err("cannot inspect the target".into()))?
            .get(0);
        if exists.is_some() {
            present.push(qualified(table));
        }
    }
    if !present.is_empty() && !opts.force {
        return Err(refused(url, &format!("table {}", tables_named(&present))));
    }
    let mut problems = create_schema(ctx, &t, schema, opts.force)?;
    let partial = |step: &str, e: Error| {
        Error::incomplete(format!(
            "{step} failed; the database {} now holds the schema of snapshot {} and some of its \
             rows, and nothing else in it was touched: restore again with --force to replace \
             them, or drop the database",
            where_of(url),
            &manifest.id.as_str()[..8]
        ))
        .with_source(e)
    };
    let entries: Vec<&TaskEntry> = manifest.tasks.iter().collect();
    let loaded = r
        .each_entry(&entries, r.to)
        .map_err(|e| partial("loading the rows", e))?;
    problems.extend(loaded.problems);
    crate::failpoint::hit("pg-rows-loaded");
    // A transaction id makes step 3's commit write a commit record and wait for the WAL to be
    // on disk, the ranges' (committed without waiting) included, even when it changes nothing.
    let mut finish = b"SELECT pg_catalog.txid_current();\n".to_vec();
    for (seq, value) in &schema.sequences {
        finish.extend(
            format!(
                "SELECT pg_catalog.setval({}, {value}, true);\n",
                literal(&qualified(seq))
            )
            .into_bytes(),
        );
    }
    let (post, post_problems) = ctx
        .fetch(&schema.post_data)
        .map_err(|e| partial("reading the post-data schema", e))?;
    problems.extend(post_problems);
    let script = post
        .open()
        .map_err(|e| partial("reading the post-data schema", e))?;
    in_one_transaction(&t, vec![script, Box::new(std::io::Cursor::new(finish))])
        .map_err(|e| partial("building indexes, constraints and triggers", e))?;
    Ok((loaded.stats, problems))
}

/// Step 1: the snapshot's `DROP`s (with `force`), its pre-data section and its large objects,
/// in one transaction.
fn create_schema(
    ctx: &Fetcher<'_>,
    t: &PgServer<'_>,
    schema: &PostgresSchema,
    force: bool,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut open = |data: &Receipt| -> Result<Box<dyn Read + Send>> {
        let (verified, p) = ctx.fetch(data)?;
        problems.extend(p);
        verified.open()
    };
    let mut scripts = Vec::new();
    if force {
        if let Some(drops) = &schema.drops {
            scripts.push(open(drops)?);
        }
    }
    scripts.push(open(&schema.pre_data)?);
    if let Some(los) = &schema.large_objects {
        let los = open(los)?;
        scripts.push(if force {
            Box::new(ReplacingLargeObjects::new(los))
        } else {
            los
        });
    }
    in_one_transaction(t, scripts).map_err(|e| {
        if !force && e.to_string().contains("already exists") {
            refused(t.url, "objects of the snapshot").with_source(e)
        } else {
            e.with_context("step", "creating the schema (nothing was changed)")
        }
    })?;
    Ok(problems)
}

/// Runs `scripts` one after another with `psql` inside `BEGIN` … `COMMIT`, stopping at the first
/// error, which rolls everything back.
fn in_one_transaction(t: &PgServer<'_>, scripts: Vec<Box<dyn Read + Send>>) -> Result<()> {
    let mut all: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(b"BEGIN;\n".to_vec()));
    for s in scripts {
        all = Box::new(all.chain(s).chain(std::io::Cursor::new(b"\n".to_vec())));
    }
    let mut all = all.chain(std::io::Cursor::new(b"COMMIT;\n".to_vec()));
    client::PgTool::psql(t).run(Some(&mut all), None, "the restore's SQL failed")
}

/// The error of a restore into a database that holds `what` already.
fn refused(url: &str, what: &str) -> Error {
    Error::config(format!(
        "the target database {} already has {what}; nothing was changed: restore into a new \
         database, or pass --force to replace them",
        where_of(url)
    ))
}

/// A large-object script that first unlinks each object's OID where the target has it.
struct ReplacingLargeObjects<R> {
    lines: BufReader<R>,
    pending: Vec<u8>,
    at: usize,
}

impl<R: Read> ReplacingLargeObjects<R> {
    fn new(inner: R) -> Self {
        ReplacingLargeObjects {
            lines: BufReader::new(inner),
            pending: Vec::new(),
            at: 0,
        }
    }
}

impl<R: Read> Read for ReplacingLargeObjects<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            self.pending.clear();
            self.at = 0;
            let mut line = Vec::new();
            if self.lines.read_until(b'\n', &mut line)? == 0 {
                return Ok(0);
            }
            const CREATE: &[u8] = b"SELECT pg_catalog.lo_create('";
            if let Some(rest) = line.strip_prefix(CREATE) {
                let oid: String = rest
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .map(|&b| b as char)
                    .collect();
                self.pending.extend(
                    format!(
                        "SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata \
                         WHERE oid = '{oid}';\n"
                    )
                    .into_bytes(),
                );
            }
            self.pending.extend(line);
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Loads one range's rows into the database of `work` with `COPY … FROM STDIN`.
pub(super) fn load_range(
    ctx: &Fetcher<'_>,
    job: &Job,
    work: &EntryWork,
    sessions: &Sessions,
) -> Result<(ReadStats, Vec<String>)> {
    let task = &work.entry;
    let TaskKind::PgRange(range) = &task.kind else {
        return Err(Error::integrity(
            "a non-table task in a PostgreSQL snapshot",
        ));
    };
    let (table, columns) = (&range.table, &range.columns);
    let password = crate::source::password_of(job);
    let t = PgServer {
        url: work.to.url(
            &["postgres://", "postgresql://"],
            "PostgreSQL",
            "postgres://user@host:port/database",
        )?,
        password: &password,
    };
    let (data, problems) = ctx.fetch(&task.data)?;
    let mut reader = BufReader::with_capacity(256 << 10, data.open()?);
    // A kept session the server or the network dropped while idle is replaced, not used.
    let kept = sessions
        .take(|s: &Loading| s.url == t.url)
        .and_then(|mut s| {
            let alive = s.client.is_valid(std::time::Duration::from_secs(10));
            alive.is_ok().then_some(s)
        });
    let mut session = match kept {
        Some(s) => s,
        None => Loading::open(&t)?,
    };
    let load_err = |e| sql_err(format!("cannot load {table}"))(e);
    let copy = format!(
        "COPY {}{} FROM STDIN",
        qualified(table),
        column_list(columns)
    );
    let mut tx = session.client.transaction().map_err(load_err)?;
    // A table loaded from one range of at least FREEZE_FROM bytes is emptied in the loading
    // transaction (`TRUNCATE ONLY`: step 1 created it empty, and no other range loads it), so
    // that its rows can be loaded with `COPY … FREEZE`: written frozen and all-visible, as
    // `VACUUM FREEZE` would leave them. Neither the index builds of step 3 nor the first reads
    // after the restore then rewrite every page to set hint bits, no anti-wraparound vacuum
    // rewrites them later, and where `wal_level` is `minimal` the rows skip the WAL. A retried
    // load replaces, never adds.
    let frozen = range.whole_table()
        && task.stats.bytes_read >= FREEZE_FROM
        && emptied(&mut tx, table).map_err(load_err)?;
    let mut writer = if frozen {
        tx.copy_in(&format!("{copy} (FREEZE)"))
    } else {
        tx.copy_in(&copy)
    }
    .map_err(load_err)?;
    let n = std::io::copy(&mut reader, &mut writer)
        .map_err(|e| Error::source_err(format!("cannot load {table}")).with_source(e))?;
    let rows = writer.finish().map_err(load_err)?;
    tx.commit().map_err(load_err)?;
    sessions.put(session);
    ctx.progress.add_bytes(n);
    Ok((
        ReadStats {
            rows,
            bytes_read: n,
            ..ReadStats::default()
        },
        problems,
    ))
}

/// Empties `table` in `tx` for a frozen load. `false`, with nothing changed, when the server
/// refuses (a role that may insert into the table but not truncate it) or another session
/// holds a lock on the table for more than 5 s: the rows are then loaded as any other range's,
/// as they were before loads were frozen.
fn emptied(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
) -> std::result::Result<bool, postgres::Error> {
    let truncate = format!(
        "SAVEPOINT coldvault_freeze; SET LOCAL lock_timeout = '5s'; TRUNCATE ONLY {}; \
         RELEASE SAVEPOINT coldvault_freeze",
        qualified(table)
    );
    if tx.batch_execute(&truncate).is_ok() {
        return Ok(true);
    }
    tx.batch_execute("ROLLBACK TO SAVEPOINT coldvault_freeze; RELEASE SAVEPOINT coldvault_freeze")?;
    Ok(false)
}

/// The COPY text of a range from which it is loaded frozen. A `TRUNCATE` gives the table a
/// new file, which costs the server 0.4–1.7 ms (measured on PostgreSQL 15 here); loading
/// frozen saves about 1.4 ms per MB of COPY text (0.7 in the load, 0.7 in the index builds
/// that no longer set hint bits). Below this size, the 615 small tables of PostgreSQL's
/// regression database restored in 1.8–3.2 s frozen against 1.2–2.2 s not.
const FREEZE_FROM: u64 = 2 << 20;

/// A connection loading rows into the database at `url`, kept between ranges.
struct Loading {
    url: String,
    client: postgres::Client,
}

impl Loading {
    fn open(t: &PgServer<'_>) -> Result<Loading> {
        let mut client = connect(t)?;
        // A range's commit need not wait for its WAL to reach the disk: step 3 commits after
        // every range, synchronously, and WAL is flushed in order, so the restore ends with all
        // of it on disk; one wait per restore instead of one per range.
        client
            .batch_execute("SET synchronous_commit = off")
            .map_err(sql_err("cannot set up the loading session".into()))?;
        Ok(Loading {
            url: t.url.to_owned(),
            client,
        })
    }
}

/// `"public"."x", "s"."y"` as `public.x, s.y`.
fn tables_named(quoted: &[String]) -> String {
    quoted.join(", ").replace('"', "")
}
