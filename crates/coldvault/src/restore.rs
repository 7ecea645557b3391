//! `restore`: a snapshot back into a directory (file trees), a new database file (SQLite) or a
//! database server (PostgreSQL, MySQL / MariaDB).
//!
//! The snapshot's source kind (from its manifest) restores it; per data file the work runs on the
//! job's engine where the source allows it. Each data file is read from the first healthy replica,
//! its checksum checked before a byte of it is decoded ([`crate::fetch`]). Nothing is ever written
//! outside the target: paths are checked component by component, no write follows a symlink, and
//! a non-empty target is refused unless `force` is given.

use std::borrow::Cow;

use serde::Serialize;

use crate::catalog::{ReadStats, TaskEntry};
use crate::engine::Engine;
use crate::error::Result;
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::{EntryRestored, EntryWork, RestoreRun};
use crate::stage::Staging;
use crate::worker::{WorkRequest, Worker};

pub use crate::source::{RestoreOptions, RestoreTarget};

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
    /// What could not be restored as it was (an attribute or a device node that a restore
    /// without root's privileges cannot make), naming each entry.
    pub warnings: Vec<String>,
    /// What could not be restored at all (a database object the target refused), naming each:
    /// the restore ran but is incomplete, and the command ends with exit code 1.
    pub not_restored: Vec<String>,
    /// What had to be retrieved from archive-class nodes first, when anything had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::retrieve::RetrievalReport>,
}

/// Restores snapshot `spec` of `job` into `to`.
pub fn restore(
    job: &Job,
    spec: &str,
    to: &RestoreTarget,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    restore_from(job, &Repository::open(job)?, spec, to, opts, progress)
}

/// Restores snapshot `spec` of `job` from `repo` (whose nodes may be wrapped) into `to`.
pub fn restore_from(
    job: &Job,
    repo: &Repository,
    spec: &str,
    to: &RestoreTarget,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let (manifest, _) = repo.find(spec)?;
    let source = crate::source::kind_named(&manifest.source.kind)?;
    let engine = Engine::for_job(job, opts.parallel)?;
    let staging = Staging::create(&job.run.staging, &format!("{}-restore", job.name))?;
    let fetch = Fetcher {
        repo,
        staging: &staging,
        progress,
        retrieval: opts.retrieval,
    };
    progress.start(manifest.tasks.len() as u64, manifest.totals.read.bytes_read);
    let restored = source.restore(&RestoreRun {
        job,
        fetch: &fetch,
        manifest: &manifest,
        to,
        opts,
        engine: &engine,
    })?;
    Ok(RestoreReport {
        snapshot: manifest.id.to_string(),
        target: to.to_string(),
        stats: restored.stats,
        replica_problems: restored.problems,
        warnings: restored.warnings,
        not_restored: restored.not_restored,
        retrieval: None,
    })
}

impl RestoreRun<'_> {
    /// Restores `entries` one data file per request on the run's engine, with the same function
    /// in this process or on executors; adds up what they did. The first failure is the error.
    pub(crate) fn each_entry(
        &self,
        entries: &[&TaskEntry],
        to: &RestoreTarget,
    ) -> Result<EntryRestored> {
        let requests: Vec<WorkRequest> = entries
            .iter()
            .map(|e| WorkRequest::Restore {
                job: Cow::Borrowed(self.job),
                work: EntryWork {
                    source: self.manifest.source.kind.clone(),
                    to: to.clone(),
                    include: self.opts.include.clone(),
                    force: self.opts.force,
                    retrieval: self.opts.retrieval,
                    entry: (*e).clone(),
                },
            })
            .collect();
        let sessions = crate::source::Sessions::default();
        let worker = Worker {
            job: self.job,
            fetch: *self.fetch,
            reader: None,
            sessions: &sessions,
        };
        let replies = self
            .engine
            .run(&requests, self.fetch.staging.dir(), |r| r.run(&worker))?;
        let mut all = EntryRestored::default();
        for reply in replies {
            all.merge(reply.into_restored()?);
        }
        Ok(all)
    }
}
