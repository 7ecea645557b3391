//! The worker: runs one work request (a backup task, or the restore of one data file) the same
//! way whichever engine carried it. The local engine calls [`WorkRequest::run`] on its threads with
//! the run's own repository, spool and source reader; `coldvault worker` on a Spark executor reads
//! requests as JSON lines, opens those from the request's job ([`handle`]) and calls the same
//! function. A request carries the validated job (never a secret: only the names of the variables
//! and files that hold them).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::plan::TaskSpec;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::source::{EntryRestored, EntryWork, RunSource};
use crate::stage::Staging;
use crate::task::{run_task, TaskReport};

/// One piece of work.
// One value per task, serialised at once: the size of a variant does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WorkRequest<'a> {
    /// Read, stage and store one map task.
    Backup {
        /// The job (borrowed on the local engine, which never copies it per request).
        job: Cow<'a, Job>,
        /// The task.
        task: TaskSpec,
    },
    /// Restore one data file.
    Restore {
        /// The job.
        job: Cow<'a, Job>,
        /// The data file and where it goes.
        work: EntryWork,
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
        /// What was written, when it succeeded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored: Option<EntryRestored>,
        /// Why it failed, when it did: kind, status and context kept as data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Error>,
    },
}

impl WorkReply {
    /// The report of a backup reply.
    pub(crate) fn into_task_report(self) -> Result<TaskReport> {
        match self {
            WorkReply::Backup { report } => Ok(report),
            WorkReply::Restore { .. } => Err(Error::internal(
                "a worker answered a backup request with a restore reply",
            )),
        }
    }

    /// What a restore reply restored, or its error.
    pub(crate) fn into_restored(self) -> Result<EntryRestored> {
        match self {
            WorkReply::Restore { error: Some(e), .. } => Err(e),
            WorkReply::Restore {
                restored: Some(r), ..
            } => Ok(r),
            WorkReply::Restore { .. } => Err(Error::internal(
                "a worker's restore reply holds neither a result nor an error",
            )),
            WorkReply::Backup { .. } => Err(Error::internal(
                "a worker answered a restore request with a backup reply",
            )),
        }
    }
}

/// What running requests in one process needs, opened once and shared by its requests.
pub(crate) struct Worker<'a> {
    /// The job.
    pub job: &'a Job,
    /// The repository, the spool and the counters.
    pub fetch: Fetcher<'a>,
    /// The source held for the run (backup requests only).
    pub reader: Option<&'a dyn RunSource>,
    /// Sessions kept between restore requests.
    pub sessions: &'a crate::source::Sessions,
}

impl WorkRequest<'_> {
    /// Runs the request with `w`'s repository, spool and source. Never panics on bad input:
    /// failures are in the reply.
    pub(crate) fn run(&self, w: &Worker<'_>) -> WorkReply {
        match self {
            WorkRequest::Backup { task, .. } => {
                let report = match w.reader {
                    Some(reader) => run_task(w.job, &w.fetch, reader, task),
                    None => TaskReport::failed(
                        task,
                        Error::internal("a backup request without a source to read"),
                    ),
                };
                WorkReply::Backup { report }
            }
            WorkRequest::Restore { work, .. } => {
                let result = crate::source::kind_named(&work.source)
                    .and_then(|kind| kind.restore_entry(&w.fetch, w.job, work, w.sessions))
                    .map_err(|e| e.with_context("task", &work.entry.id));
                w.fetch.progress.task_done();
                match result {
                    Ok(r) => WorkReply::Restore {
                        restored: Some(r),
                        error: None,
                    },
                    Err(e) => WorkReply::Restore {
                        restored: None,
                        error: Some(e),
                    },
                }
            }
        }
    }

    fn job(&self) -> &Job {
        match self {
            WorkRequest::Backup { job, .. } | WorkRequest::Restore { job, .. } => job,
        }
    }
}

/// Runs one request in a process of its own (the `coldvault worker` side): opens the job's
/// repository, a spool and, for a backup task, the source as a worker reads it.
pub fn handle(request: WorkRequest<'_>) -> WorkReply {
    let job = request.job();
    let opened = (|| {
        let repo = Repository::open(job)?;
        let spool = match request {
            WorkRequest::Backup { .. } => job.name.clone(),
            WorkRequest::Restore { .. } => format!("{}-restore", job.name),
        };
        let staging = Staging::create(&job.run.staging, &spool)?;
        let reader = match request {
            WorkRequest::Backup { .. } => Some(crate::source::kind_of(job).open_worker(job)?),
            WorkRequest::Restore { .. } => None,
        };
        Ok::<_, Error>((repo, staging, reader))
    })();
    let progress = Progress::default();
    let sessions = crate::source::Sessions::default();
    match opened {
        Ok((repo, staging, reader)) => request.run(&Worker {
            job,
            fetch: Fetcher {
                repo: &repo,
                staging: &staging,
                progress: &progress,
                retrieval: match &request {
                    WorkRequest::Restore { work, .. } => work.retrieval,
                    WorkRequest::Backup { .. } => None,
                },
            },
            reader: reader.as_deref(),
            sessions: &sessions,
        }),
        Err(e) => match &request {
            WorkRequest::Backup { task, .. } => WorkReply::Backup {
                report: TaskReport::failed(task, e.with_context("task", &task.id)),
            },
            WorkRequest::Restore { work, .. } => WorkReply::Restore {
                restored: None,
                error: Some(e.with_context("task", &work.entry.id)),
            },
        },
    }
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<WorkRequest<'static>> {
    serde_json::from_str(line).map_err(|e| Error::config("malformed work request").with_source(e))
}
