//! `restore`: a snapshot back into a directory (file trees), a new database file (SQLite) or a
//! database server (PostgreSQL, MySQL / MariaDB).
//!
//! Each data file is read from the first healthy replica: its BLAKE3 is checked before a byte of it
//! is decoded (in place on a local node, through a checked copy in staging otherwise). A missing or
//! corrupt replica is reported and the next one is tried. Nothing is ever written outside the target:
//! paths are checked component by component, no write follows a symlink, and a non-empty target is
//! refused unless `force` is given.

mod fs;
mod mysql;
mod postgres;
mod sqlite;

pub use fs::Deferred;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::{Manifest, TaskEntry};
use crate::engine::protocol::{WorkReply, WorkRequest};
use crate::engine::spark::SparkEngine;
use crate::engine::{local::map_parallel, Progress};
use crate::error::{Error, Result};
use crate::job::{EngineKind, Job};
use crate::path::RelPath;
use crate::plan::TaskKind;
use crate::repo::Repository;
use crate::source::ReadStats;
use crate::stage::{check_replica, hash_stream, StagedFile, Staging};
use crate::store::Receipt;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only paths matching one of these globs (or inside a matching directory).
    pub include: Vec<String>,
    /// Data files restored at once.
    pub parallel: usize,
    /// Restore into a non-empty directory (replacing files) or over an existing database file.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// Where to.
    pub target: String,
    /// Entries and bytes written.
    #[serde(flatten)]
    pub stats: ReadStats,
    /// Replicas that were missing or damaged and were skipped for another.
    pub replica_problems: Vec<String>,
}

/// Restores snapshot `spec` of `job` into `target`.
pub fn restore(
    job: &Job,
    spec: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    restore_from(job, &Repository::open(job)?, spec, target, opts, progress)
}

/// Restores snapshot `spec` of `job` from `repo` (whose nodes may be wrapped) into `target`.
pub fn restore_from(
    job: &Job,
    repo: &Repository,
    spec: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let (manifest, _) = repo.find(spec)?;
    let staging = Staging::create(&job.run.staging, &format!("{}-restore", job.name))?;
    let ctx = Ctx {
        repo,
        staging: &staging,
        progress,
    };
    progress.start(manifest.tasks.len() as u64, manifest.totals.read.bytes_read);
    if manifest.postgres.is_some() || manifest.mysql.is_some() {
        let (stats, problems) = match manifest.postgres {
            Some(_) => postgres::restore(&ctx, job, &manifest, target, opts)?,
            None => mysql::restore(&ctx, job, &manifest, target, opts)?,
        };
        return Ok(RestoreReport {
            snapshot: manifest.id.to_string(),
            target: target.display().to_string(),
            stats,
            replica_problems: problems,
        });
    }
    let (stats, problems) =
        match (&manifest.sqlite, job.run.engine) {
            (Some(_), EngineKind::Local) => sqlite::restore(&ctx, &manifest, target, opts.force)?,
            (Some(_), EngineKind::Spark) => return Err(Error::config(
                "a SQLite database is written by one process: restore it without --engine spark",
            )),
            (None, EngineKind::Local) => fs::restore(&ctx, &manifest, target, opts)?,
            (None, EngineKind::Spark) => restore_on_spark(job, &staging, &manifest, target, opts)?,
        };
    Ok(RestoreReport {
        snapshot: manifest.id.to_string(),
        target: target.display().to_string(),
        stats,
        replica_problems: problems,
    })
}

/// Restores a file-tree snapshot with the executors of a Spark cluster writing into `target`,
/// which they all share; the coordinator applies directory and large-file metadata at the end.
fn restore_on_spark(
    job: &Job,
    staging: &Staging,
    manifest: &Manifest,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<(ReadStats, Vec<String>)> {
    let master = job.run.spark.master.as_deref().ok_or_else(|| {
        Error::config("the spark engine needs a master: [run.spark] master or --spark-master")
    })?;
    fs::prepare_target(target, opts.force)?;
    let target = std::path::absolute(target)
        .map_err(|e| Error::io(format!("cannot resolve {}", target.display()), e))?;
    let include = Include::new(&opts.include)?;
    let requests: Vec<WorkRequest> = manifest
        .tasks
        .iter()
        .filter(|t| fs::wanted(&include, &t.kind))
        .map(|t| WorkRequest::RestoreFiles {
            job: job.clone(),
            target: target.clone(),
            include: opts.include.clone(),
            force: opts.force,
            entry: t.clone(),
        })
        .collect();
    let replies = SparkEngine::new(job, master).run(&requests, staging.dir())?;
    let (stats, problems, deferred) = merge_restore_replies(replies, Error::integrity)?;
    fs::apply_deferred(&target, deferred)?;
    Ok((stats, problems))
}

/// Adds up the replies of restore workers; the first failure becomes `failed(its message)`.
pub(crate) fn merge_restore_replies(
    replies: Vec<WorkReply>,
    failed: fn(String) -> Error,
) -> Result<(ReadStats, Vec<String>, Deferred)> {
    let mut stats = ReadStats::default();
    let mut problems = Vec::new();
    let mut deferred = Deferred::default();
    for r in replies {
        match r {
            WorkReply::Restore { error: Some(e), .. } => return Err(failed(e)),
            WorkReply::Restore {
                stats: s,
                problems: p,
                deferred: d,
                error: None,
            } => {
                stats.add(&s);
                problems.extend(p);
                deferred.merge(d);
            }
            WorkReply::Backup { .. } => {
                return Err(Error::integrity(
                    "spark engine: a backup reply to a restore request",
                ))
            }
        }
    }
    Ok((stats, problems, deferred))
}

/// What a worker process needs to restore: the job's nodes, a spool, counters nobody reads.
fn worker_parts(job: &Job) -> Result<(Repository, Staging, Progress)> {
    Ok((
        Repository::open(job)?,
        Staging::create(&job.run.staging, &format!("{}-restore", job.name))?,
        Progress::default(),
    ))
}

/// Restores one data file into `target` in this process (a Spark executor's `coldvault worker`).
pub(crate) fn restore_one(
    job: &Job,
    target: &Path,
    include: &[String],
    force: bool,
    entry: &TaskEntry,
) -> Result<(ReadStats, Vec<String>, Deferred)> {
    let (repo, staging, progress) = worker_parts(job)?;
    let ctx = Ctx {
        repo: &repo,
        staging: &staging,
        progress: &progress,
    };
    let include = Include::new(include)?;
    let r = fs::Restorer::new(target, &include, force);
    let (stats, problems) = r.restore_entry(&ctx, entry)?;
    Ok((stats, problems, r.into_deferred()))
}

/// Loads one range of a PostgreSQL snapshot into `target` in this process (a Spark executor).
pub(crate) fn restore_pg_range(
    job: &Job,
    target: &str,
    entry: &TaskEntry,
) -> Result<(ReadStats, Vec<String>)> {
    let (repo, staging, progress) = worker_parts(job)?;
    let ctx = Ctx {
        repo: &repo,
        staging: &staging,
        progress: &progress,
    };
    let password = job
        .source
        .database()
        .map(|db| db.password.clone())
        .unwrap_or_default();
    let t = crate::source::postgres::PgTarget {
        url: target,
        password: &password,
    };
    postgres::load_range(&ctx, &t, entry)
}

/// What restoring one data file needs.
pub(crate) struct Ctx<'a> {
    repo: &'a Repository,
    staging: &'a Staging,
    progress: &'a Progress,
}

/// A data file whose checksum has been checked, ready to decode.
pub(crate) struct Verified {
    path: PathBuf,
    _staged: Option<StagedFile>,
    crypt: Option<std::sync::Arc<crate::crypt::Crypt>>,
}

impl Verified {
    /// The decompressed (and decrypted) bytes.
    pub(crate) fn open(&self) -> Result<Box<dyn Read + Send>> {
        let f = File::open(&self.path)
            .map_err(|e| Error::io(format!("cannot open {}", self.path.display()), e))?;
        let f = BufReader::with_capacity(1 << 20, f);
        match &self.crypt {
            None => Ok(Box::new(
                zstd::Decoder::with_buffer(f).map_err(|e| Error::io("cannot start zstd", e))?,
            )),
            Some(c) => {
                let plain = c.open_reader(f)?;
                Ok(Box::new(
                    zstd::Decoder::new(plain).map_err(|e| Error::io("cannot start zstd", e))?,
                ))
            }
        }
    }
}

impl Ctx<'_> {
    /// The first healthy replica of `data`, and the problems met before it.
    pub(crate) fn fetch(&self, data: &Receipt) -> Result<(Verified, Vec<String>)> {
        let mut problems = Vec::new();
        for name in &data.nodes {
            let Some(node) = self.repo.replicator().node(name) else {
                problems.push(format!("{}: node {name} is no longer in the job", data.key));
                continue;
            };
            let attempt = || -> Result<Verified> {
                if let Some(path) = node.local_path(&data.key) {
                    let mut f = File::open(&path).map_err(|e| {
                        Error::not_found(format!("replica {} is missing", path.display()))
                            .with_source(e)
                    })?;
                    let (n, hash) = hash_stream(&mut f)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                    check_replica(n, &hash, data.size, &data.checksum)?;
                    return Ok(Verified {
                        path,
                        _staged: None,
                        crypt: self.repo.crypt()?,
                    });
                }
                let mut r = node.get(&data.key)?;
                let staged =
                    self.staging
                        .fetch(&data.checksum[..16], &mut r, data.size, &data.checksum)?;
                Ok(Verified {
                    path: staged.path().to_path_buf(),
                    _staged: Some(staged),
                    crypt: self.repo.crypt()?,
                })
            };
            match attempt() {
                Ok(v) => return Ok((v, problems)),
                Err(e) => problems.push(format!("{} on node {name}: {e}", data.key)),
            }
        }
        Err(Error::integrity(format!(
            "no healthy replica of {}: {}",
            data.key,
            problems.join("; ")
        )))
    }
}

/// `--include` patterns.
pub(crate) struct Include(Vec<glob::Pattern>);

impl Include {
    pub(crate) fn new(patterns: &[String]) -> Result<Include> {
        patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p.trim_start_matches('/').trim_end_matches('/'))
                    .map_err(|e| Error::config(format!("--include {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Include)
    }

    /// True when `rel` or one of its ancestors matches (everything matches without patterns).
    pub(crate) fn matches(&self, rel: &RelPath) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let text = String::from_utf8_lossy(rel.as_bytes());
        let mut prefix = String::new();
        for comp in text.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if self.0.iter().any(|p| p.matches(&prefix)) {
                return true;
            }
        }
        false
    }
}

/// Runs the per-task restores in parallel and gathers their stats and replica problems.
pub(crate) fn run_tasks<'m>(
    manifest: &'m Manifest,
    parallel: usize,
    keep: impl Fn(&TaskKind) -> bool,
    f: impl Fn(&crate::catalog::TaskEntry) -> Result<(ReadStats, Vec<String>)> + Sync,
) -> Result<(ReadStats, Vec<String>)> {
    let tasks: Vec<&'m crate::catalog::TaskEntry> =
        manifest.tasks.iter().filter(|t| keep(&t.kind)).collect();
    let results = map_parallel(&tasks, parallel, |t| {
        f(t).map_err(|e| e.with_context("task", &t.id))
    });
    let mut stats = ReadStats::default();
    let mut problems = Vec::new();
    for r in results {
        let (s, p) = r?;
        stats.add(&s);
        problems.extend(p);
    }
    Ok((stats, problems))
}

/// The database URL of `--to` (one of `schemes`) and the password source of the job's source;
/// `kind` and `example` name them in the error.
pub(crate) fn database_target<'t>(
    job: &Job,
    target: &'t Path,
    schemes: &[&str],
    kind: &str,
    example: &str,
) -> Result<(&'t str, crate::job::PasswordSource)> {
    let url = target.to_str().unwrap_or("");
    if !schemes.iter().any(|s| url.starts_with(s)) {
        return Err(Error::config(format!(
            "restore of a {kind} snapshot needs --to {example}, not {}",
            target.display()
        )));
    }
    let password = job
        .source
        .database()
        .map(|db| db.password.clone())
        .unwrap_or_default();
    Ok((url, password))
}
