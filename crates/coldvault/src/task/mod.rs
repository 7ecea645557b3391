//! `run_task`: the one path every engine calls for a map task. It reads the task's share of the
//! source (through the run's [`RunSource`]) into a staged file (encoded, compressed and hashed in
//! one pass), then sends the store request to the replicator, which answers with a receipt or a
//! failure naming the nodes.

mod range;

use serde::{Deserialize, Serialize};

use crate::catalog::{TaskEntry, TaskKind};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::plan::TaskSpec;
use crate::progress::CountingWriter;
use crate::source::{RunSource, LAST_ATTEMPT};
use crate::stage::{StagedFile, Stager};
use crate::store::{data_key, Payload, Receipt};

/// The outcome of one task.
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task: TaskSpec,
    /// What was stored, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<TaskEntry>,
    /// Bytes this run read from the source for the task (a delta's reads, not the unchanged
    /// entries its stats count).
    #[serde(default)]
    pub bytes_read: u64,
    /// The data files this run stored for the task (none when a range's parent entry stands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored: Vec<Receipt>,
    /// Why it failed, when it did: kind, status and context kept as data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

impl TaskReport {
    /// The report of a task that failed with `error`.
    pub(crate) fn failed(task: &TaskSpec, error: Error) -> TaskReport {
        TaskReport {
            task: task.clone(),
            entry: None,
            bytes_read: 0,
            stored: Vec::new(),
            error: Some(error),
        }
    }
}

/// Runs one task: read (through the run's `reader`), stage, store. Never panics on bad input;
/// failures are in the report.
pub(crate) fn run_task(
    job: &Job,
    ctx: &Fetcher<'_>,
    reader: &dyn RunSource,
    task: &TaskSpec,
) -> TaskReport {
    crate::event::emit(
        "task_started",
        serde_json::json!({ "task": task.id.as_str(), "kind": task.kind.name() }),
    );
    let result =
        stage_and_store(job, ctx, reader, task).map_err(|e| e.with_context("task", &task.id));
    ctx.progress.task_done();
    crate::event::emit(
        "task_finished",
        match &result {
            Ok(s) => serde_json::json!({
                "task": task.id.as_str(), "kind": task.kind.name(), "ok": true,
                "bytes_read": s.bytes_read,
                "bytes_stored": s.stored.iter().map(|r| r.size).sum::<u64>(),
                "nodes": s.entry.data.nodes, "warnings": s.entry.warnings.len(),
            }),
            Err(e) => serde_json::json!({
                "task": task.id.as_str(), "kind": task.kind.name(), "ok": false,
                "error": e.to_string(),
            }),
        },
    );
    match result {
        Ok(s) => TaskReport {
            task: task.clone(),
            entry: Some(s.entry),
            bytes_read: s.bytes_read,
            stored: s.stored,
            error: None,
        },
        Err(e) => TaskReport::failed(task, e),
    }
}

fn stage_and_store(
    job: &Job,
    ctx: &Fetcher<'_>,
    reader: &dyn RunSource,
    task: &TaskSpec,
) -> Result<Stored> {
    if let TaskKind::Files(_) = task.kind {
        return range::stage_and_store(job, ctx, reader, task);
    }
    let repo = ctx.repo;
    let (read, out) = with_attempts(|attempt| {
        let mut out = CountingWriter {
            inner: stager(job, ctx, task.id.as_str())?,
            progress: ctx.progress,
        };
        let read = reader.read(&task.kind, attempt, task.snapshot.as_deref(), &mut out)?;
        Ok((read, out.inner))
    })?;
    crate::failpoint::hit("read");
    let staged = out.finish()?;
    crate::failpoint::hit("staged");
    let data = store(ctx, &staged, task.kind.data_ext())?;
    crate::failpoint::hit("stored");
    let entry = TaskEntry {
        id: task.id.clone(),
        kind: task.kind.clone(),
        data,
        stats: read.stats,
        file: read.file,
        fingerprint: task.fingerprint.clone(),
        warnings: read.warnings,
        index: None,
        indexed_deltas: None,
        deltas: Vec::new(),
        dead_bytes: 0,
    };
    write_receipt(repo, task, &entry)?;
    Ok(Stored {
        bytes_read: entry.stats.bytes_read,
        stored: vec![entry.data.clone()],
        entry,
    })
}

/// What a task did: its entry, the bytes it read and the data files it stored.
pub(crate) struct Stored {
    pub entry: TaskEntry,
    pub bytes_read: u64,
    pub stored: Vec<Receipt>,
}

/// Runs `read` (attempt 0, 1, ...) again while it fails because the source changed under it,
/// up to [`LAST_ATTEMPT`], which must not fail that way; what an attempt staged is dropped.
pub(crate) fn with_attempts<T>(mut read: impl FnMut(u32) -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match read(attempt) {
            Err(e) if e.kind() == ErrorKind::Changed && attempt < LAST_ATTEMPT => attempt += 1,
            done => return done,
        }
    }
}

/// A stager for the staged file `name` of a task.
pub(crate) fn stager(job: &Job, ctx: &Fetcher<'_>, name: &str) -> Result<Stager> {
    ctx.staging
        .stager(name, job.run.zstd_level, ctx.repo.crypt()?.as_ref())
}

/// Stores a staged file as a data file with extension `ext`.
pub(crate) fn store(ctx: &Fetcher<'_>, staged: &StagedFile, ext: &str) -> Result<Receipt> {
    let key = data_key(staged.checksum(), ext);
    ctx.repo.replicator().put(
        &key,
        Payload::File(staged.path()),
        staged.size(),
        staged.checksum(),
    )
}

/// Writes the run receipt of a stored task, which an interrupted run's successor reuses.
pub(crate) fn write_receipt(
    repo: &crate::repo::Repository,
    task: &TaskSpec,
    entry: &TaskEntry,
) -> Result<()> {
    if let Some(run) = &task.run_started {
        repo.write_receipt(&crate::repo::RunReceipt {
            run_started: run.clone(),
            entry: entry.clone(),
        })?;
        crate::failpoint::hit("receipt");
    }
    Ok(())
}
