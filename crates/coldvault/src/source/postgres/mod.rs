//! PostgreSQL source: tables split into block ranges (`ctid`, TID range scans) or key ranges
//! (`split_by`, or an integer primary key before PostgreSQL 14), read with `COPY … TO STDOUT`
//! straight into staging, all under one snapshot.
//!
//! Consistency, as `pg_dump -j` does it: the coordinator opens a REPEATABLE READ transaction,
//! exports its snapshot (`pg_export_snapshot()`) and keeps it open for the whole run
//! ([`SnapshotGuard`]); every task imports it (`SET TRANSACTION SNAPSHOT`), so all tasks read the
//! same point in time although they run in parallel on their own connections. The snapshot id
//! travels in the task specs.
//!
//! Splitting never scans: blocks from the table's size on disk, keys from the key's histogram
//! (`pg_stats`) when the table was analysed, else min/max of the key (an index lookup) and
//! `reltuples`. The first and last ranges are unbounded, so rows added or keys outside the
//! statistics are still covered once. Every table read is locked for the run before the snapshot
//! is taken, as pg_dump locks what it dumps: a rewrite would move rows between blocks, and a
//! `TRUNCATE` would empty the table for the snapshot.

use std::io::Write;

use postgres::{Client, NoTls};

mod client;
mod plan;
mod preflight;
mod restore;
mod schema;
mod wire;

use std::sync::Mutex;

use super::{
    database, EntryRestored, EntryWork, RestoreRun, Restored, RunRecord, RunSource, Sessions,
    SourceKind, SourcePlan, TaskRead,
};
use crate::catalog::{PgRangeTask, PgSplit, ReadStats, Schema, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::{Database, Job, PasswordSource};
use crate::repo::Repository;
use crate::stage::Staging;
use plan::plan;
use schema::Cover;

/// A PostgreSQL database.
pub(crate) struct PostgresSource;

impl SourceKind for PostgresSource {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn plan(&self, job: &Job, _parent: Option<&crate::catalog::Manifest>) -> Result<SourcePlan> {
        Ok(super::planned(plan(database(job)?, job.split.max_rows)?))
    }

    fn preflight(&self, job: &Job) -> Vec<crate::check::CheckLine> {
        preflight::preflight(job)
    }

    fn open_run<'a>(
        &self,
        job: &'a Job,
        kinds: &[&TaskKind],
        _parallel: usize,
    ) -> Result<Box<dyn RunSource + 'a>> {
        let db = database(job)?;
        let server = PgServer::of(db);
        let mut tables: Vec<String> = kinds
            .iter()
            .filter_map(|k| match k {
                TaskKind::PgRange(r) => Some(r.table.clone()),
                _ => None,
            })
            .collect();
        tables.dedup();
        let mut guard = SnapshotGuard::open(&server, &tables)?;
        let cover = if db.tables.is_empty() {
            Cover::Whole
        } else {
            Cover::Tables(guard.with_ancestors(tables)?)
        };
        let sequences = guard.sequences(&cover)?;
        Ok(Box::new(Held {
            job,
            server,
            guard: Some(Mutex::new(guard.client)),
            snapshot: Some(guard.id),
            cover,
            sequences,
            schema: Mutex::new(None),
            kept: Sessions::default(),
        }))
    }

    fn open_worker<'a>(&self, job: &'a Job) -> Result<Box<dyn RunSource + 'a>> {
        Ok(Box::new(Held {
            job,
            server: PgServer::of(database(job)?),
            guard: None,
            snapshot: None,
            cover: Cover::Whole,
            sequences: Vec::new(),
            schema: Mutex::new(None),
            kept: Sessions::default(),
        }))
    }

    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored> {
        restore::restore(r).map(Into::into)
    }

    fn restore_entry(
        &self,
        ctx: &Fetcher<'_>,
        job: &Job,
        work: &EntryWork,
        sessions: &Sessions,
    ) -> Result<EntryRestored> {
        let (stats, problems) = restore::load_range(ctx, job, work, sessions)?;
        Ok(EntryRestored {
            stats,
            problems,
            ..EntryRestored::default()
        })
    }
}

/// The database held for a run: the exporting transaction (coordinator only), its snapshot id,
/// what the schema covers, the sequences' values read in it, and the schema dumped beside the
/// tasks.
struct Held<'a> {
    job: &'a Job,
    server: PgServer<'a>,
    guard: Option<Mutex<Client>>,
    snapshot: Option<String>,
    cover: Cover,
    sequences: Vec<(String, i64)>,
    schema: Mutex<Option<crate::catalog::PostgresSchema>>,
    kept: Sessions,
}

impl RunSource for Held<'_> {
    fn read(
        &self,
        kind: &TaskKind,
        _attempt: u32,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead> {
        let TaskKind::PgRange(t) = kind else {
            return Err(Error::internal(format!(
                "a {} task for a PostgreSQL source",
                kind.name()
            )));
        };
        let copy = copy_out(t);
        if t.small {
            return Ok(read_kept(&self.kept, &self.server, snapshot, &copy, out)?.into());
        }
        Ok(read_range(&self.server, snapshot, &copy, out)?.into())
    }

    fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }

    fn consistency(&self) -> Option<String> {
        self.snapshot
            .as_ref()
            .map(|id| format!("every task read one exported snapshot ({id})"))
    }

    /// `pg_dump --schema-only` of the same snapshot, while the data tasks run.
    fn beside_tasks(&self, repo: &Repository, staging: &Staging) -> Result<()> {
        let Some(id) = &self.snapshot else {
            return Ok(());
        };
        let schema = schema::capture(
            self.job,
            &self.server,
            id,
            &self.cover,
            self.sequences.clone(),
            repo,
            staging,
        )?;
        *self.schema.lock().unwrap_or_else(|p| p.into_inner()) = Some(schema);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<RunRecord> {
        drop(self.guard);
        Ok(RunRecord {
            schema: self
                .schema
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .map(|s| Schema::Postgres(Box::new(s))),
        })
    }
}

/// A PostgreSQL server and database to connect to (no secret inside).
#[derive(Debug, Clone)]
pub(crate) struct PgServer<'a> {
    /// `postgres://user@host:port/db`.
    pub url: &'a str,
    /// Where the password comes from.
    pub password: &'a PasswordSource,
}

impl<'a> PgServer<'a> {
    /// The server of a `postgres` source.
    pub fn of(db: &'a Database) -> PgServer<'a> {
        PgServer {
            url: &db.url,
            password: &db.password,
        }
    }
}

/// Connects, with an error that names the server and the cause (never the password).
pub(crate) fn connect(t: &PgServer<'_>) -> Result<Client> {
    let mut config: postgres::Config = t.url.parse().map_err(|e| {
        Error::config(format!("postgres URL {:?} is malformed", t.url)).with_source(e)
    })?;
    if let Some(pw) = crate::secrets::db_password(t.password, "PGPASSWORD")? {
        config.password(pw);
    }
    config.application_name("coldvault");
    config.connect_timeout(std::time::Duration::from_secs(10));
    config.connect(NoTls).map_err(|e| {
        caused_by(
            Error::source_err(format!("cannot connect to {}", where_of(t.url))),
            e,
        )
    })
}

pub use super::where_of;

fn sql_err(what: String) -> impl FnOnce(postgres::Error) -> Error {
    move |e| caused_by(Error::source_err(what), e)
}

/// `err` caused by `e`, in the server's own words (`ERROR: …`) when it said something: the
/// client's error alone says only "db error".
pub(crate) fn caused_by(err: Error, e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => err.with_source(db.clone()),
        None => err.with_source(e),
    }
}

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table as `"schema"."name"`.
pub(crate) fn qualified(table: &str) -> String {
    match table.split_once('.') {
        Some((s, n)) => format!("{}.{}", ident(s), ident(n)),
        None => ident(table),
    }
}

/// The exporting transaction, held open while the tasks run.
struct SnapshotGuard {
    client: Client,
    id: String,
}

impl SnapshotGuard {
    /// Opens a REPEATABLE READ transaction, locks `tables` in it and exports its snapshot.
    fn open(t: &PgServer<'_>, tables: &[String]) -> Result<SnapshotGuard> {
        let mut client = connect(t)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(sql_err("cannot start the snapshot transaction".into()))?;
        lock(&mut client, tables)?;
        let id: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .map_err(sql_err("cannot export the snapshot".into()))?
            .get(0);
        Ok(SnapshotGuard { client, id })
    }

    /// The sequences of `cover` and their values in the snapshot: every one of the database,
    /// or those the selected tables own (serial and identity columns).
    fn sequences(&mut self, cover: &Cover) -> Result<Vec<(String, i64)>> {
        let rows = self
            .client
            .query(
                "SELECT s.schemaname || '.' || s.sequencename, s.last_value, \
                   (SELECT tn.nspname || '.' || t.relname FROM pg_depend d \
                      JOIN pg_class t ON t.oid = d.refobjid \
                      JOIN pg_namespace tn ON tn.oid = t.relnamespace \
                    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                      AND d.deptype IN ('a', 'i') AND d.objid = format('%I.%I', s.schemaname, \
                      s.sequencename)::regclass LIMIT 1) \
                 FROM pg_sequences s WHERE s.last_value IS NOT NULL ORDER BY 1",
                &[],
            )
            .map_err(sql_err("cannot read sequences".into()))?;
        Ok(rows
            .iter()
            .filter(|r| match cover {
                Cover::Whole => true,
                Cover::Tables(t) => r
                    .get::<_, Option<String>>(2)
                    .is_some_and(|o| t.contains(&o)),
            })
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// `tables` and the partitioned tables their partitions hang from, which their schema needs.
    fn with_ancestors(&mut self, mut tables: Vec<String>) -> Result<Vec<String>> {
        let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
        let rows = self
            .client
            .query(
                "SELECT DISTINCT n.nspname || '.' || c.relname \
                 FROM unnest($1::text[]) t, pg_partition_ancestors(t::regclass) a \
                 JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'p' ORDER BY 1",
                &[&quoted],
            )
            .map_err(sql_err("cannot read the partitioned tables".into()))?;
        tables.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        Ok(tables)
    }
}

/// How long any wait of a backup for a lock lasts before it fails (the run's own locks, the
/// plan's sizes, a range's read, the schema's pg_dump): a session that wants to rewrite a table
/// the run holds waits for the run, and a wait queued behind it would last for ever.
pub(super) const LOCK_WAIT: &str = "60s";

/// Locks `tables` for the run, before the snapshot is taken, as pg_dump does: a `TRUNCATE` or a
/// table-rewriting `ALTER TABLE` committed after the snapshot would show the snapshot an empty
/// table, and a `VACUUM FULL` or `CLUSTER` moves rows between the blocks two ranges read.
fn lock(client: &mut Client, tables: &[String]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    client
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = '{LOCK_WAIT}'; LOCK TABLE ONLY {} IN ACCESS SHARE MODE",
            list.join(", ")
        ))
        .map_err(sql_err(format!(
            "cannot lock the tables for the backup (waited at most {LOCK_WAIT}; another \
             session holds or waits for an exclusive lock on one of {})",
            tables.join(", ")
        )))
}

/// The `SELECT` of one range.
pub(crate) fn range_query(
    table: &str,
    split: &PgSplit,
    start: Option<i64>,
    end: Option<i64>,
    filter: Option<&str>,
    columns: &[String],
) -> String {
    let cond = match split {
        // A key range bounded at neither end still leaves out the NULL keys: with `split_by`,
        // they are a range of their own.
        PgSplit::Key(k) if start.is_none() && end.is_none() => {
            vec![format!("{} IS NOT NULL", ident(k))]
        }
        PgSplit::Key(k) => super::range::bounds(&ident(k), start, end),
        PgSplit::Ctid => super::range::bounds(
            "ctid",
            start.map(|s| format!("'({s},0)'::tid")),
            end.map(|e| format!("'({e},0)'::tid")),
        ),
        PgSplit::Null(k) => vec![format!("{} IS NULL", ident(k))],
    };
    // No columns: a table without any, or whose every column is generated. Its rows are empty
    // lines, as `COPY table TO` writes them (`*` would read the generated values, which the
    // restore's COPY refuses).
    let cols = if columns.is_empty() {
        String::new()
    } else {
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // ONLY: an inheritance parent's own rows; each child is a table of its own.
    super::range::select(&cols, &format!("ONLY {}", qualified(table)), cond, filter)
}

/// The `COPY … TO STDOUT` of one range. A table read whole is copied by name, as pg_dump does:
/// the server then sends the rows of its heap without planning and running a query, which costs
/// it about a twentieth less CPU per row than `COPY (SELECT …)`. Both read the table's own rows
/// only (`COPY t TO` as `SELECT … FROM ONLY t`).
pub(crate) fn copy_out(t: &PgRangeTask) -> String {
    if t.whole_table() && t.filter.is_none() {
        let list = column_list(&t.columns);
        return format!("COPY {}{list} TO STDOUT", qualified(&t.table));
    }
    let query = range_query(
        &t.table,
        &t.split,
        t.start,
        t.end,
        t.filter.as_deref(),
        &t.columns,
    );
    format!("COPY ({query}) TO STDOUT")
}

/// ` ("a", "b")`: the column list of a `COPY`, empty for every column.
pub(crate) fn column_list(columns: &[String]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    format!(" ({})", cols.join(", "))
}

/// The statements that open a read-only transaction in `snapshot` (the run's exported one).
/// As pg_dump does, `row_security` is off: a policy that would hide rows from the backup's role
/// makes the read fail instead of storing a silently partial table.
pub(super) fn reading_in(snapshot: Option<&str>) -> Vec<String> {
    let mut statements = vec!["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned()];
    if let Some(id) = snapshot {
        statements.push(format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            id.replace('\'', "")
        ));
    }
    statements.push("SET row_security = off".to_owned());
    // As pg_dump sets them: dates, times and intervals in the styles every server reads back
    // the same whatever its own settings (`SQL, DMY` output read back under `ISO, MDY` swaps
    // day and month), and floats with every digit before PostgreSQL 12.
    statements.push("SET datestyle = ISO".to_owned());
    statements.push("SET intervalstyle = postgres".to_owned());
    statements.push("SET extra_float_digits = 3".to_owned());
    statements.push(format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"));
    // Block ranges are TID range scans only where the planner may use them.
    statements.push("SET LOCAL enable_tidscan = on".to_owned());
    statements
}

/// A connection reading in a snapshot, kept between the tasks of small tables (in the run's
/// [`Sessions`]): such a task costs one COPY on an open connection, not a new `psql` and a new
/// backend. At most one per task running at once; closed (their transactions ending) when the
/// run ends.
struct Reading {
    snapshot: Option<String>,
    client: Client,
}

/// Streams the rows of `copy` (a `COPY … TO STDOUT`) into `out` on a connection in `snapshot`
/// kept in `kept`.
fn read_kept(
    kept: &Sessions,
    server: &PgServer<'_>,
    snapshot: Option<&str>,
    copy: &str,
    out: &mut dyn Write,
) -> Result<ReadStats> {
    let mut session = match kept.take(|s: &Reading| s.snapshot.as_deref() == snapshot) {
        Some(s) => s,
        None => {
            let mut client = connect(server)?;
            client
                .batch_execute(&reading_in(snapshot).join(";"))
                .map_err(sql_err("cannot import the snapshot".into()))?;
            Reading {
                snapshot: snapshot.map(str::to_owned),
                client,
            }
        }
    };
    let mut stats = ReadStats::default();
    let mut counted = Counted {
        out,
        stats: &mut stats,
    };
    let mut rows = session
        .client
        .copy_out(copy)
        .map_err(sql_err("reading a range failed".into()))?;
    std::io::copy(&mut rows, &mut counted).map_err(|e| {
        Error::source_err(format!(
            "reading a range failed on {}",
            where_of(server.url)
        ))
        .with_source(e)
    })?;
    drop(rows);
    kept.put(session);
    Ok(stats)
}

/// Counts the rows and bytes of COPY text on their way to `out`.
struct Counted<'a> {
    out: &'a mut dyn Write,
    stats: &'a mut ReadStats,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.stats.rows += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        self.stats.bytes_read += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Streams the rows of `copy` (a `COPY … TO STDOUT`, text format) into `out`, inside the shared
/// snapshot, on a connection of its own that speaks the wire protocol ([`wire`]): the bytes of
/// the rows pass through untouched, gathered into large chunks.
pub(crate) fn read_range(
    t: &PgServer<'_>,
    snapshot: Option<&str>,
    copy: &str,
    out: &mut dyn Write,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut counted = Counted {
        out,
        stats: &mut stats,
    };
    wire::copy_out(t, &reading_in(snapshot), copy, &mut |chunk: &[u8]| {
        counted
            .write_all(chunk)
            .map_err(|e| Error::io("cannot write staged data", e))
    })
    .map_err(|e| {
        Error::source_err(format!("reading a range failed on {}", where_of(t.url))).with_source(e)
    })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(start: Option<i64>, end: Option<i64>, filter: Option<&str>) -> PgRangeTask {
        PgRangeTask {
            table: "s.t".into(),
            split: PgSplit::Ctid,
            start,
            end,
            columns: vec!["a".into(), "b c".into()],
            filter: filter.map(str::to_owned),
            small: false,
        }
    }

    #[test]
    fn a_table_read_whole_is_copied_by_name_and_a_range_or_filter_by_query() {
        assert_eq!(
            copy_out(&task(None, None, None)),
            r#"COPY "s"."t" ("a", "b c") TO STDOUT"#
        );
        assert_eq!(
            copy_out(&task(Some(8), None, None)),
            r#"COPY (SELECT "a", "b c" FROM ONLY "s"."t" WHERE ctid >= '(8,0)'::tid) TO STDOUT"#
        );
        assert_eq!(
            copy_out(&task(None, None, Some("a > 1"))),
            r#"COPY (SELECT "a", "b c" FROM ONLY "s"."t" WHERE (a > 1)) TO STDOUT"#
        );
        let mut keyed = task(None, None, None);
        keyed.split = PgSplit::Key("a".into());
        assert_eq!(
            copy_out(&keyed),
            r#"COPY (SELECT "a", "b c" FROM ONLY "s"."t" WHERE "a" IS NOT NULL) TO STDOUT"#
        );
        let mut nulls = task(None, None, None);
        nulls.split = PgSplit::Null("a".into());
        assert_eq!(
            copy_out(&nulls),
            r#"COPY (SELECT "a", "b c" FROM ONLY "s"."t" WHERE "a" IS NULL) TO STDOUT"#
        );
        let mut no_columns = task(None, None, None);
        no_columns.columns.clear();
        assert_eq!(copy_out(&no_columns), r#"COPY "s"."t" TO STDOUT"#);
        no_columns.end = Some(4);
        assert_eq!(
            copy_out(&no_columns),
            r#"COPY (SELECT  FROM ONLY "s"."t" WHERE ctid < '(4,0)'::tid) TO STDOUT"#
        );
    }
}
