//! The worker protocol: one JSON line per request on `coldvault worker`'s stdin, one JSON line per
//! reply on its stdout. A request carries the validated job (never a secret: only the names of the
//! variables and files that hold them) and one task; the worker runs it with exactly the code the
//! local engine runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::catalog::TaskEntry;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::plan::TaskSpec;
use crate::repo::Repository;
use crate::restore::Deferred;
use crate::source::ReadStats;
use crate::stage::Staging;
use crate::task::{run_task, TaskReport};

/// One piece of work for a worker.
// One value per task, serialised at once: the size of a variant does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WorkRequest {
    /// Read, stage and store one map task.
    Backup {
        /// The job.
        job: Job,
        /// The task.
        task: TaskSpec,
    },
    /// Restore one data file of a file-tree snapshot into a target all workers share.
    RestoreFiles {
        /// The job.
        job: Job,
        /// The shared target directory.
        target: PathBuf,
        /// `--include` patterns.
        include: Vec<String>,
        /// Replace existing files.
        force: bool,
        /// The data file.
        entry: TaskEntry,
    },
    /// Load one range of a PostgreSQL snapshot into the target database (whose schema's
    /// pre-data section the coordinator has created).
    RestorePgRange {
        /// The job.
        job: Job,
        /// `postgres://user@host:port/db` of the target (no password in it).
        target: String,
        /// The data file.
        entry: TaskEntry,
    },
}

/// A worker's answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WorkReply {
    /// The outcome of a backup task.
    Backup {
        /// The report.
        report: TaskReport,
    },
    /// The outcome of restoring one data file.
    Restore {
        /// What was written.
        stats: ReadStats,
        /// Replicas skipped.
        problems: Vec<String>,
        /// Metadata to apply at the end.
        deferred: Deferred,
        /// Why it failed, when it did.
        error: Option<String>,
    },
}

/// Runs one request in this process (the `coldvault worker` side).
pub fn handle(request: WorkRequest) -> WorkReply {
    match request {
        WorkRequest::Backup { job, task } => {
            let report = (|| {
                let repo = Repository::open(&job)?;
                let staging = Staging::create(&job.run.staging, &job.name)?;
                Ok::<_, Error>(run_task(&job, &repo, &staging, &task, &Progress::default()))
            })()
            .unwrap_or_else(|e| TaskReport {
                task: task.clone(),
                entry: None,
                error: Some(e.with_context("task", &task.id).to_string()),
            });
            WorkReply::Backup { report }
        }
        WorkRequest::RestoreFiles {
            job,
            target,
            include,
            force,
            entry,
        } => restore_reply(
            crate::restore::restore_one(&job, &target, &include, force, &entry),
            &entry,
        ),
        WorkRequest::RestorePgRange { job, target, entry } => restore_reply(
            crate::restore::restore_pg_range(&job, &target, &entry)
                .map(|(stats, problems)| (stats, problems, Deferred::default())),
            &entry,
        ),
    }
}

/// The reply to a restore request: what was written, or why not.
fn restore_reply(
    result: Result<(ReadStats, Vec<String>, Deferred)>,
    entry: &TaskEntry,
) -> WorkReply {
    match result {
        Ok((stats, problems, deferred)) => WorkReply::Restore {
            stats,
            problems,
            deferred,
            error: None,
        },
        Err(e) => WorkReply::Restore {
            stats: ReadStats::default(),
            problems: Vec::new(),
            deferred: Deferred::default(),
            error: Some(e.with_context("task", &entry.id).to_string()),
        },
    }
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<WorkRequest> {
    serde_json::from_str(line).map_err(|e| Error::config("malformed work request").with_source(e))
}
