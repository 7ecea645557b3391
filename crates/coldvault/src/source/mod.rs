//! Sources: where a job's data comes from, and where a restore puts it back.
//!
//! One folder per kind of source (`fs`, `sqlite`, `postgres`, `mysql`), each holding its planning,
//! reading, schema capture and restore behind one trait, [`SourceKind`]. [`kind_of`] and
//! [`kind_named`] are the one place that maps a job's source (or a manifest's) to its
//! implementation; nothing outside this folder matches on the kind of a source or of a task.
//!
//! A backup run asks its source for a [`RunSource`]: the value that holds whatever consistency
//! state the run needs (an exported PostgreSQL snapshot, MySQL connections opened under one lock,
//! a SQLite read transaction) for as long as the run holds it, and reads tasks under it. It is
//! owned by the run, never a process-wide global. A worker process (a Spark executor) gets its
//! own [`RunSource`] from the job and what the task spec carries (the snapshot id).
//!
//! The encodings are open formats: a tar (pax) stream for file trees, raw byte ranges for the
//! parts of large files, SQL statements in the form of the `sqlite3` shell's `.dump` for SQLite
//! tables, `COPY`'s text format for PostgreSQL and `LOAD DATA`'s for MySQL.

pub mod fs;
pub mod mysql;
pub mod postgres;
mod range;
pub mod sqlite;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::catalog::{FileMeta, Manifest, ReadStats, TaskEntry, TaskId, TaskKind, Warning};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::{Job, Source};
use crate::repo::Repository;
use crate::stage::Staging;

/// The implementation of the job's source kind.
pub(crate) fn kind_of(job: &Job) -> &'static dyn SourceKind {
    match job.source {
        Source::Fs { .. } => &fs::FsSource,
        Source::Sqlite { .. } => &sqlite::SqliteSource,
        Source::Postgres(_) => &postgres::PostgresSource,
        Source::Mysql(_) => &mysql::MysqlSource,
    }
}

/// The implementation of a source kind by its name in a manifest (`fs`, `sqlite`, ...).
pub(crate) fn kind_named(name: &str) -> Result<&'static dyn SourceKind> {
    [
        &fs::FsSource as &'static dyn SourceKind,
        &sqlite::SqliteSource,
        &postgres::PostgresSource,
        &mysql::MysqlSource,
    ]
    .into_iter()
    .find(|k| k.name() == name)
    .ok_or_else(|| Error::integrity(format!("unknown source type {name:?} in the manifest")))
}

/// One task as a source plans it, before it gets its id.
pub(crate) struct Planned {
    /// What it reads.
    pub kind: TaskKind,
    /// About how many bytes.
    pub bytes: u64,
    /// About how many files or rows.
    pub items: u64,
    /// The fingerprint of the metadata of what it reads, when the source can tell unchanged
    /// tasks without reading them (file trees).
    pub fingerprint: Option<String>,
}

/// The tasks a source plans, and what its selection left out, for people.
#[derive(Default)]
pub(crate) struct SourcePlan {
    /// The tasks.
    pub tasks: Vec<Planned>,
    /// What was left out of the plan and why (excluded entries, coldvault's own directories).
    pub notes: Vec<String>,
}

/// What reading one task gave besides its bytes.
pub(crate) struct TaskRead {
    /// What was read.
    pub stats: ReadStats,
    /// For a part of a large file: the file's metadata, restored once every part is written.
    pub file: Option<FileMeta>,
    /// What the read left out, found changing or could not keep, naming each entry.
    pub warnings: Vec<Warning>,
}

impl From<ReadStats> for TaskRead {
    fn from(stats: ReadStats) -> Self {
        TaskRead {
            stats,
            file: None,
            warnings: Vec::new(),
        }
    }
}

/// The index of a range as a snapshot holds it: its newest full index, and the patches of the
/// deltas since, oldest first. A patch holds the records of the entries its delta stored or
/// touched and, with the type `-` and the digest of 32 zeros, one of each path gone, in walk
/// order: the full index with each patch applied in turn (a path's record replaced, added, or,
/// when gone, removed) is the snapshot's index. A delta writes a patch while the chain has fewer
/// than [`MAX_PATCHES`] since its full index, and a full index then, so a read merges a bounded
/// number of streams.
pub(crate) struct ParentIndex<'a> {
    pub full: Box<dyn std::io::BufRead + 'a>,
    pub patches: Vec<Box<dyn std::io::BufRead + 'a>>,
}

/// The most patches a range's chain has after its newest full index.
pub(crate) const MAX_PATCHES: usize = 8;

/// What a file-tree range writes beside its tar stream: the index of the entries the snapshot
/// holds of it, and, when only changes are stored, the paths of the parent's index that are gone.
pub(crate) struct Changes<'a> {
    /// The parent's index of the range (decoded), when only changes are stored.
    pub parent: Option<ParentIndex<'a>>,
    /// Where the range's index goes.
    pub index: &'a mut dyn Write,
    /// Whether the index is written as a patch of the parent's (what differs), not whole.
    pub patch: bool,
    /// Where the paths gone since the parent go.
    pub deleted: &'a mut dyn Write,
    /// Where the files whose metadata alone changed go, with their new metadata.
    pub touched: &'a mut dyn Write,
    /// Set by the read: what it found.
    pub tally: ChangeTally,
}

/// What a file-tree range's read against its parent's index found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChangeTally {
    /// Bytes of the regular files found unchanged and not read (counted in the read's stats all
    /// the same: the snapshot holds them).
    pub unchanged_bytes: u64,
    /// Entries stored: new or changed. With none stored and none gone, nothing of the range
    /// changed.
    pub changed: u64,
    /// Paths written to the deleted list.
    pub gone: u64,
    /// Files written to the touched list: read, their content found the parent's.
    pub touched: u64,
    /// The bytes of those files (of a hard-link group, once).
    pub touched_bytes: u64,
    /// The part of `touched_bytes` not read by this task: files with other links whose content
    /// a read in another range of the run proved ([`crate::source::fs`]'s `Proven`).
    pub proven_bytes: u64,
    /// The range must be read whole for its hard links: a path joined a group whose content
    /// this read left to an older layer (its link entry would name a path of that layer).
    pub read_whole: bool,
}

/// What a backup run keeps of its source besides the data files.
#[derive(Default)]
pub(crate) struct RunRecord {
    /// The schema to store in the manifest.
    pub schema: Option<crate::catalog::Schema>,
}

/// What every kind of source does.
pub(crate) trait SourceKind: Sync {
    /// The name in job files and manifests.
    fn name(&self) -> &'static str;

    /// Plans the tasks of the job's selection, reading structure, never data. `parent` is the
    /// newest snapshot, whose ranges a file tree keeps where it can (so that its tasks can store
    /// only what changed).
    fn plan(&self, job: &Job, parent: Option<&Manifest>) -> Result<SourcePlan>;

    /// What `check` looks at besides planning: the client programs and privileges a backup of
    /// this source needs.
    fn preflight(&self, _job: &Job) -> Vec<crate::check::CheckLine> {
        Vec::new()
    }

    /// Why this source cannot run its tasks in other processes (the Spark engine), if it cannot.
    fn local_only(&self) -> Option<&'static str> {
        None
    }

    /// Opens the run's point in time for the tasks of `kinds`; `parallel` of them read at once.
    fn open_run<'a>(
        &self,
        job: &'a Job,
        kinds: &[&TaskKind],
        parallel: usize,
    ) -> Result<Box<dyn RunSource + 'a>>;

    /// A reader for a worker process that has only the job and the task specs.
    fn open_worker<'a>(&self, job: &'a Job) -> Result<Box<dyn RunSource + 'a>>;

    /// Looks over the entries of a run's tasks together and returns the tasks to read again
    /// (the parts of a file read from different versions of it). With `last`, nothing is read
    /// again: what still does not agree is marked in the entries' warnings instead.
    fn recheck(&self, _entries: &mut [&mut TaskEntry], _last: bool) -> Vec<TaskId> {
        Vec::new()
    }

    /// What the snapshot's manifest is missing or gets wrong for this kind of source (a part of
    /// a split file), one line each: damage that verify reports and restore refuses.
    fn check_manifest(&self, _manifest: &Manifest) -> Vec<String> {
        Vec::new()
    }

    /// The data files a restore of `manifest` with `include` patterns reads.
    fn needed<'m>(
        &self,
        manifest: &'m Manifest,
        _include: &[String],
    ) -> Result<Vec<&'m crate::store::Receipt>> {
        Ok(manifest.receipts())
    }

    /// Restores a snapshot of this source.
    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored>;

    /// Restores one data file in a worker process; the sources whose restores the coordinator
    /// hands out (file trees, PostgreSQL ranges) implement it.
    fn restore_entry(
        &self,
        _ctx: &Fetcher<'_>,
        _job: &Job,
        _work: &EntryWork,
        _sessions: &Sessions,
    ) -> Result<EntryRestored> {
        Err(Error::internal(format!(
            "a {} snapshot is restored by the coordinator alone",
            self.name()
        )))
    }
}

/// A source held at one point in time for a run: reads tasks under it.
pub(crate) trait RunSource: Send + Sync {
    /// Reads one task's share into `out`; `snapshot` is the id the task carries, if any.
    /// `attempt` counts the reads of this task in this run from 0: a read that finds its source
    /// changing under it fails with [`ErrorKind::Changed`](crate::ErrorKind::Changed) and is
    /// sent again, up to [`LAST_ATTEMPT`], which must not fail that way.
    fn read(
        &self,
        kind: &TaskKind,
        attempt: u32,
        snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead>;

    /// Reads a file-tree range like [`RunSource::read`], and writes its index into `changes`;
    /// with the parent's index there, only the entries added or changed go into `out`, and the
    /// paths gone into `changes.deleted`. Only file trees have ranges.
    fn read_changes(
        &self,
        kind: &TaskKind,
        _attempt: u32,
        _out: &mut dyn Write,
        _changes: &mut Changes<'_>,
    ) -> Result<TaskRead> {
        Err(crate::Error::internal(format!(
            "a {} task read as changes",
            kind.name()
        )))
    }

    /// Work done beside the tasks under the same point in time (PostgreSQL's schema dump), which
    /// stores what it makes through `repo`.
    fn beside_tasks(&self, _repo: &Repository, _staging: &Staging) -> Result<()> {
        Ok(())
    }

    /// The id every task carries to read under the run's point in time (a worker elsewhere
    /// imports it), if the source has one.
    fn snapshot(&self) -> Option<&str> {
        None
    }

    /// How the run's consistency was obtained, for the report.
    fn consistency(&self) -> Option<String> {
        None
    }

    /// Ends the run's hold on the source; returns what the manifest keeps of it.
    fn finish(self: Box<Self>) -> Result<RunRecord>;
}

/// A restore as a source's [`SourceKind::restore`] sees it.
pub(crate) struct RestoreRun<'a> {
    /// The job.
    pub job: &'a Job,
    /// Reads data files back.
    pub fetch: &'a Fetcher<'a>,
    /// The snapshot.
    pub manifest: &'a Manifest,
    /// Where to.
    pub to: &'a RestoreTarget,
    /// How.
    pub opts: &'a RestoreOptions,
    /// Runs per-data-file work on this machine or on executors (its request and reply files go
    /// in the coordinator's spool, `fetch.staging`).
    pub engine: &'a crate::engine::Engine<'a>,
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTarget {
    /// A directory (a file tree) or a new database file (SQLite).
    Path(PathBuf),
    /// A database server: `postgres://user@host:port/db`, `mysql://user@host:port/db` (never with
    /// a password).
    Url(String),
}

impl RestoreTarget {
    /// `--to`'s value: a database URL when it starts with a database scheme, else a path.
    pub fn parse(text: &std::ffi::OsStr) -> RestoreTarget {
        const SCHEMES: [&str; 4] = ["postgres://", "postgresql://", "mysql://", "mariadb://"];
        match text.to_str() {
            Some(s) if SCHEMES.iter().any(|p| s.starts_with(p)) => RestoreTarget::Url(s.to_owned()),
            _ => RestoreTarget::Path(PathBuf::from(text)),
        }
    }

    /// The path; an error naming what `kind` needs instead of a URL.
    pub(crate) fn path(&self, kind: &str) -> Result<&Path> {
        match self {
            RestoreTarget::Path(p) => Ok(p),
            RestoreTarget::Url(u) => Err(Error::config(format!(
                "restore of a {kind} snapshot needs --to PATH, not the URL {}",
                where_of(u)
            ))),
        }
    }

    /// The database URL (one of `schemes`); an error naming `example` otherwise.
    pub(crate) fn url(&self, schemes: &[&str], kind: &str, example: &str) -> Result<&str> {
        match self {
            RestoreTarget::Url(u) if schemes.iter().any(|s| u.starts_with(s)) => Ok(u),
            other => Err(Error::config(format!(
                "restore of a {kind} snapshot needs --to {example}, not {other}"
            ))),
        }
    }
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Path(p) => write!(f, "{}", p.display()),
            RestoreTarget::Url(u) => f.write_str(&without_password(u)),
        }
    }
}

/// A URL as given, less a password in it (`scheme://user:secret@host` shows `scheme://user@host`).
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only paths matching one of these globs (or inside a matching directory).
    pub include: Vec<String>,
    /// Data files restored at once.
    pub parallel: usize,
    /// Restore into a non-empty directory (replacing files) or over an existing database.
    pub force: bool,
    /// MySQL / MariaDB: create views, routines, triggers and events without their `DEFINER`, so
    /// they belong to the restoring account (for a target without the source's accounts).
    pub skip_definer: bool,
    /// For data files only archive nodes hold: retrieve them (again) and wait; `None` fails
    /// such a data file instead.
    pub retrieval: Option<crate::retrieve::Retrieval>,
}

/// One data file to restore in a worker, with what the coordinator decided for all of them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntryWork {
    /// The snapshot's source kind (`fs`, `postgres`, ...), as its manifest names it: the job's
    /// may have changed since.
    pub source: String,
    /// Where to.
    pub to: RestoreTarget,
    /// `--include` patterns.
    #[serde(default)]
    pub include: Vec<String>,
    /// Replace what is there.
    #[serde(default)]
    pub force: bool,
    /// For data files only archive nodes hold: retrieve them (again) and wait.
    #[serde(default)]
    pub retrieval: Option<crate::retrieve::Retrieval>,
    /// The data file.
    pub entry: TaskEntry,
}

/// What a restore did.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// What was written.
    pub stats: ReadStats,
    /// Replicas that were missing or damaged and were skipped for another.
    pub problems: Vec<String>,
    /// What could not be restored as it was (an attribute or a device node a restore without
    /// privileges cannot make), naming each entry.
    pub warnings: Vec<String>,
    /// What could not be restored at all (a database object the target refused), naming each:
    /// the restore ran, but is incomplete.
    pub not_restored: Vec<String>,
}

impl From<(ReadStats, Vec<String>)> for Restored {
    fn from((stats, problems): (ReadStats, Vec<String>)) -> Self {
        Restored {
            stats,
            problems,
            ..Restored::default()
        }
    }
}

/// What restoring one data file did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EntryRestored {
    /// What was written.
    pub stats: ReadStats,
    /// Replicas that were missing or damaged and were skipped for another.
    pub problems: Vec<String>,
    /// What could not be restored as it was, naming each entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Metadata the coordinator applies once every data file is restored (file trees).
    #[serde(default)]
    pub deferred: fs::Deferred,
}

impl EntryRestored {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: EntryRestored) {
        self.stats.add(&other.stats);
        self.problems.extend(other.problems);
        self.warnings.extend(other.warnings);
        self.deferred.merge(other.deferred);
    }
}

/// Planned tasks that carry no fingerprint (database tables, read whole every time).
pub(crate) fn planned(tasks: Vec<(TaskKind, u64, u64)>) -> SourcePlan {
    SourcePlan {
        tasks: tasks
            .into_iter()
            .map(|(kind, bytes, items)| Planned {
                kind,
                bytes,
                items,
                fingerprint: None,
            })
            .collect(),
        notes: Vec::new(),
    }
}

/// Connections a source keeps open from one task or request to the next (a restore's loading
/// sessions held by its worker, a backup's reading sessions held by the run's source), so that a
/// thousand small tables do not cost a thousand logins; closed when their owner ends. At most
/// one per task running at once: a session goes back only after a task that succeeded on it.
#[derive(Default)]
pub(crate) struct Sessions(std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>);

impl Sessions {
    /// An idle session of type `T` for which `fits` holds.
    pub(crate) fn take<T: 'static>(&self, fits: impl Fn(&T) -> bool) -> Option<T> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = idle
            .iter()
            .position(|s| s.downcast_ref::<T>().is_some_and(&fits))?;
        idle.swap_remove(at).downcast::<T>().ok().map(|s| *s)
    }

    /// Keeps `session` for a later request.
    pub(crate) fn put<T: Send + 'static>(&self, session: T) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(session));
    }
}

/// The attempt of a task's read that must succeed whatever the source does meanwhile.
pub(crate) const LAST_ATTEMPT: u32 = 3;

/// The database of a `postgres` or `mysql` job.
pub(crate) fn database(job: &Job) -> Result<&crate::job::Database> {
    job.source
        .database()
        .ok_or_else(|| Error::internal("a database source for a job of another kind"))
}

/// Where the job's database password comes from (nowhere, for other sources).
pub(crate) fn password_of(job: &Job) -> crate::job::PasswordSource {
    job.source
        .database()
        .map(|db| db.password.clone())
        .unwrap_or_default()
}

/// `host:port/db` of a database URL, for messages (never the user or a secret).
pub fn where_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.rsplit('@').next().unwrap_or(rest).to_owned()
}

/// Keeps the tables that `patterns` name (every table when there are none). A pattern that names
/// no table is an error naming the pattern and `place`, so a typo never backs up less than meant.
pub(crate) fn select_tables<T>(
    all: Vec<T>,
    patterns: &[String],
    place: &str,
    matches: impl Fn(&glob::Pattern, &T) -> bool,
) -> crate::Result<Vec<T>> {
    if patterns.is_empty() {
        return Ok(all);
    }
    let mut globs = Vec::with_capacity(patterns.len());
    for p in patterns {
        let g = glob::Pattern::new(p).map_err(|e| {
            crate::Error::config(format!(
                "[source] tables: {p:?} is not a valid pattern: {e}"
            ))
        })?;
        if !all.iter().any(|t| matches(&g, t)) {
            return Err(crate::Error::config(format!(
                "[source] tables: {p:?} matches no table in {place}"
            )));
        }
        globs.push(g);
    }
    Ok(all
        .into_iter()
        .filter(|t| globs.iter().any(|g| matches(g, t)))
        .collect())
}
