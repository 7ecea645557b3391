//! `run_task`: the one path every engine calls for a map task. It reads the task's share of the
//! source into a staged file (encoded, compressed and hashed in one pass), then sends the store
//! request to the replicator, which answers with a receipt or a failure naming the nodes.

use serde::{Deserialize, Serialize};

use crate::catalog::TaskEntry;
use crate::engine::{CountingWriter, Progress};
use crate::error::{Error, Result};
use crate::job::{Job, Source};
use crate::plan::{TaskKind, TaskSpec};
use crate::repo::Repository;
use crate::source;
use crate::stage::Staging;
use crate::store::{data_key, Payload};

/// The outcome of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task: TaskSpec,
    /// What was stored, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<TaskEntry>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs one task: read, stage, store. Never panics on bad input; failures are in the report.
pub fn run_task(
    job: &Job,
    repo: &Repository,
    staging: &Staging,
    task: &TaskSpec,
    progress: &Progress,
) -> TaskReport {
    let result = stage_and_store(job, repo, staging, task, progress)
        .map_err(|e| e.with_context("task", &task.id));
    progress.task_done();
    match result {
        Ok(entry) => TaskReport {
            task: task.clone(),
            entry: Some(entry),
            error: None,
        },
        Err(e) => TaskReport {
            task: task.clone(),
            entry: None,
            error: Some(e.to_string()),
        },
    }
}

fn stage_and_store(
    job: &Job,
    repo: &Repository,
    staging: &Staging,
    task: &TaskSpec,
    progress: &Progress,
) -> Result<TaskEntry> {
    let stager = staging.stager(task.id.as_str(), job.run.zstd_level, repo.crypt()?.as_ref())?;
    let mut out = CountingWriter {
        inner: stager,
        progress,
    };
    let mut file = None;
    let stats = match (&job.source, &task.kind) {
        (
            Source::Fs { path },
            TaskKind::Files {
                start,
                end,
                split_files,
            },
        ) => source::fs::read_files(path, start.as_ref(), end.as_ref(), split_files, &mut out)?,
        (
            Source::Fs { path },
            TaskKind::FilePart {
                path: rel,
                offset,
                len,
                part,
                parts,
            },
        ) => {
            let (stats, meta) =
                source::fs::read_part(path, rel, *offset, *len, part + 1 == *parts, &mut out)?;
            file = Some(meta);
            stats
        }
        (Source::Sqlite { path, .. }, TaskKind::Table { table, start, end }) => {
            source::sqlite::read_table(path, table, *start, *end, &mut out)?
        }
        (
            Source::Postgres(db),
            TaskKind::PgRange {
                table,
                split,
                start,
                end,
                columns,
                filter,
            },
        ) => {
            let query = source::postgres::range_query(
                table,
                split,
                *start,
                *end,
                filter.as_deref(),
                columns,
            );
            let target = source::postgres::PgTarget {
                url: &db.url,
                password: &db.password,
            };
            source::postgres::read_range(&target, task.snapshot.as_deref(), &query, &mut out)?
        }
        (
            Source::Mysql(_),
            TaskKind::MyRange {
                table,
                split,
                start,
                end,
                columns,
                filter,
            },
        ) => {
            let query =
                source::mysql::range_query(table, split, *start, *end, filter.as_deref(), columns);
            source::mysql_snapshot::read_range(task.snapshot.as_deref(), &query, &mut out)?
        }
        (source, kind) => {
            return Err(Error::config(format!(
                "a {} task cannot run on a {} source",
                kind.name(),
                source.type_name()
            )))
        }
    };
    crate::failpoint::hit("read");
    let staged = out.inner.finish()?;
    crate::failpoint::hit("staged");
    let key = data_key(staged.checksum(), task.kind.data_ext());
    let data = repo.replicator().put(
        &key,
        Payload::File(staged.path()),
        staged.size(),
        staged.checksum(),
    )?;
    crate::failpoint::hit("stored");
    let entry = TaskEntry {
        id: task.id.clone(),
        kind: task.kind.clone(),
        data,
        stats,
        file,
        fingerprint: task.fingerprint.clone(),
    };
    if let Some(run) = &task.run_started {
        repo.write_receipt(&crate::repo::RunReceipt {
            run_started: run.clone(),
            entry: entry.clone(),
        })?;
        crate::failpoint::hit("receipt");
    }
    Ok(entry)
}
