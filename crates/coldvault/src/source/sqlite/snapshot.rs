//! How a backup run holds a SQLite database at one committed state, and which file its tasks read.
//!
//! Invariant: every task of one run reads the same committed state of the database, whatever its
//! journal mode and wherever the task runs, and that is the state the schema was read in.
//!
//! The coordinator starts a read transaction, reads `PRAGMA journal_mode` and the schema inside it
//! (the mode cannot change while any read transaction is open: switching to or from WAL needs the
//! database to itself), then:
//!
//! - **Rollback journal** (`delete`, `truncate`, `persist`, `memory`, `off`): it keeps that read
//!   transaction open until the run ends ([`Hold::Transaction`]). Its SHARED lock keeps every
//!   writer, in any process, from committing, so the tasks (each on a connection of its own, in
//!   this process or in a Spark executor) all read the state the transaction began in. Writers wait
//!   for the run, as they always did.
//! - **WAL**: a read transaction does not stop writers, and a connection opened later (each task's)
//!   sees their commits. SQLite cannot hand one connection's snapshot to another here: the bundled
//!   library is built without `SQLITE_ENABLE_SNAPSHOT`, so `sqlite3_snapshot_open` is not there. So
//!   the coordinator copies the database, page for page, with SQLite's online backup API in one
//!   step inside its read transaction, into a spool directory of its own below `[run] staging`
//!   ([`Hold::Copy`]), and ends the transaction; every task reads that copy. Writers never wait,
//!   and a checkpoint can reset the WAL as soon as the copy is made. Tasks carry the copy's path
//!   relative to `[run] staging` as their snapshot id, so a Spark executor reads the same copy when
//!   it shares the coordinator's staging directory, and fails naming that directory when it does
//!   not (it never falls back to the live database).
//!
//! Why a copy rather than one connection shared by all tasks (inside the coordinator's read
//! transaction): a shared connection serialises the reads of a run that asks for `parallel` of
//! them, and executors in other processes cannot use it, so the Spark engine would have to be
//! refused. Why not N read transactions opened while a brief `BEGIN IMMEDIATE` holds writers off
//! (as MySQL's snapshots are opened under one lock): it needs write access to a database the backup
//! only reads, keeps checkpoints from resetting the WAL (which grows with every commit) for the
//! whole run, and is as unusable from executors. The copy costs one more pass over the database
//! (read, and written into staging) and its size in staging space for the length of the run;
//! page-for-page copying keeps the rowids the plan split by, which `VACUUM INTO` would not. Memory
//! stays bounded: the backup API goes through each side's page cache, and tasks stream rows from
//! the copy as from the database itself.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{read_schema, sql_err};
use crate::catalog::SqliteSchema;
use crate::error::{Error, Result};
use crate::stage::Staging;

/// The copy's file name in its spool directory.
const COPY_NAME: &str = "consistent-copy.db";

/// What the coordinator holds for the run.
pub(super) enum Hold {
    /// Rollback journal: the read transaction that keeps writers from committing until the run
    /// ends; tasks read the database itself. Held, never read: dropping it ends the transaction.
    Transaction { _open: Mutex<Connection> },
    /// WAL: the copy every task reads, removed with its spool when the run ends.
    Copy(Copy),
}

/// A consistent copy of a database in WAL mode.
pub(super) struct Copy {
    /// The spool directory holding the copy only; removed when dropped.
    spool: Staging,
    /// The copy's path relative to `[run] staging`: what tasks carry as their snapshot id.
    id: String,
    /// The copy's size.
    bytes: u64,
    /// How long copying took.
    took: Duration,
}

impl Hold {
    /// Holds the database at `path` at one committed state for a run whose spool directories go
    /// below `staging`; returns the hold and the schema read in that state.
    pub(super) fn open(path: &Path, staging: &Path, job: &str) -> Result<(Hold, SqliteSchema)> {
        let conn = super::open(path)?;
        conn.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
            .map_err(|e| sql_err("cannot start a read transaction".into(), path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| sql_err("cannot read the journal mode".into(), path, e))?;
        let schema = read_schema(&conn, path)?;
        let hold = if mode.eq_ignore_ascii_case("wal") {
            Hold::Copy(Copy::make(&conn, path, staging, job)?)
        } else {
            Hold::Transaction {
                _open: Mutex::new(conn),
            }
        };
        Ok((hold, schema))
    }

    /// The snapshot id tasks carry: the copy's path below `[run] staging`, when there is a copy.
    pub(super) fn snapshot(&self) -> Option<&str> {
        match self {
            Hold::Transaction { .. } => None,
            Hold::Copy(c) => Some(&c.id),
        }
    }

    /// How the run's consistency was obtained.
    pub(super) fn consistency(&self) -> String {
        match self {
            Hold::Transaction { .. } => "every task read under one read transaction that the \
                 coordinator held for the whole run (rollback journal: writers could not commit \
                 until the run ended)"
                .to_owned(),
            Hold::Copy(c) => format!(
                "every task read one copy of the database, made with SQLite's online backup API \
                 in one read transaction (WAL mode: writers went on; {} copied into the staging \
                 directory in {} ms)",
                size(c.bytes),
                c.took.as_millis()
            ),
        }
    }
}

impl Copy {
    /// Copies the database that `src` reads (inside its open read transaction, so the copy is
    /// exactly that state) into a new spool directory below `staging`.
    fn make(src: &Connection, path: &Path, staging: &Path, job: &str) -> Result<Copy> {
        let started = Instant::now();
        let spool = Staging::create(staging, job)?;
        let file = spool.dir().join(COPY_NAME);
        copy_into(src, path, &file)?;
        let bytes = std::fs::metadata(&file)
            .map_err(|e| Error::io(format!("cannot read the size of {}", file.display()), e))?
            .len();
        let id = copy_id(&spool)?;
        Ok(Copy {
            spool,
            id,
            bytes,
            took: started.elapsed(),
        })
    }

    /// The copy's path.
    pub(super) fn file(&self) -> PathBuf {
        self.spool.dir().join(COPY_NAME)
    }
}

/// Copies what `src` reads of the database at `path`, page for page in one step, into the new
/// file `file`, and leaves the copy in rollback-journal mode.
fn copy_into(src: &Connection, path: &Path, file: &Path) -> Result<()> {
    let err = |what: &str, e| {
        Error::source_err(format!(
            "cannot {what} the consistent copy of {} at {}",
            path.display(),
            file.display()
        ))
        .with_source(e)
    };
    let mut dst = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err("create", e))?;
    let step = Backup::new(src, &mut dst)
        .and_then(|b| b.step(-1))
        .map_err(|e| err("write", e))?;
    if step != StepResult::Done {
        return Err(Error::source_err(format!(
            "the consistent copy of {} at {} did not finish: the database was {step:?}",
            path.display(),
            file.display()
        ))
        .temporary());
    }
    // The copied header still marks WAL mode, in which every task's read-only connection would
    // set up -wal and -shm files beside the copy; in rollback-journal mode it is a plain file.
    let mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(|e| err("take out of WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Error::source_err(format!(
            "the consistent copy of {} at {} stayed in journal mode {mode}",
            path.display(),
            file.display()
        )));
    }
    dst.close().map_err(|(_, e)| err("close", e))
}

/// `bytes` for people: `512 B`, `1.5 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    match unit {
        "B" => format!("{bytes} B"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// `<spool directory name>/<copy name>`: UTF-8, since spool names are made of the job's name
/// and numbers.
fn copy_id(spool: &Staging) -> Result<String> {
    spool
        .dir()
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| format!("{n}/{COPY_NAME}"))
        .ok_or_else(|| {
            Error::internal(format!(
                "the spool directory {} has no UTF-8 name",
                spool.dir().display()
            ))
        })
}

/// The copy that snapshot id `id` names below `staging`, in a worker process; an error naming
/// the staging directory when this machine does not see it.
pub(super) fn copy_in(staging: &Path, id: &str, db: &Path) -> Result<PathBuf> {
    let file = staging.join(id);
    let plain = Path::new(id)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(Error::integrity(format!(
            "the task names {id:?} as the copy of {} to read, which is not a path below the \
             staging directory",
            db.display()
        )));
    }
    if !file.is_file() {
        return Err(Error::config(format!(
            "the consistent copy {} of {} is not on this machine: a database in WAL mode is read \
             from the copy the coordinator made in its staging directory ({}), so the executors \
             must share that directory; otherwise back it up with the local engine",
            file.display(),
            db.display(),
            staging.display()
        )));
    }
    Ok(file)
}
