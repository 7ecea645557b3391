//! A file-tree range's task: its tar stream and its index, and, when the task extends the
//! parent's entry for the range, only what changed since (a delta tar and the paths gone).
//!
//! Invariant: an entry that extends a parent keeps the parent's data file and deltas and adds
//! one delta; an entry read whole has none. Either way it names the index of exactly what the
//! snapshot holds of the range. When the parent's index cannot be had from any replica, the
//! range is read whole: a delta is never made against a guess.

use std::io::BufReader;

use super::{stager, store, write_receipt};
use crate::catalog::{Delta, TaskEntry};
use crate::error::{ErrorKind, Result};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::plan::TaskSpec;
use crate::progress::CountingWriter;
use crate::source::{Changes, RunSource, LAST_ATTEMPT};

/// Reads the range of `task` (whole, or its changes since `task.parent`), stages and stores its
/// data files, and answers with its entry and the bytes it read (its stats also count the bytes
/// of the unchanged files, which the snapshot holds).
pub(super) fn stage_and_store(
    job: &Job,
    ctx: &Fetcher<'_>,
    reader: &dyn RunSource,
    task: &TaskSpec,
) -> Result<(TaskEntry, u64)> {
    let parent = task.parent.as_deref();
    let parent_index = match parent.and_then(|p| p.index.as_ref()) {
        Some(index) => match ctx.fetch(index) {
            Ok((verified, _)) => Some(verified),
            Err(e) => {
                log::warn!(
                    "task {}: the parent's index of the range cannot be read ({e}): the range \
                     is read whole",
                    task.id
                );
                None
            }
        },
        None => None,
    };
    let id = task.id.as_str();
    let mut attempt = 0;
    let (read, unchanged, tar, index, deleted) = loop {
        let mut out = CountingWriter {
            inner: stager(job, ctx, id)?,
            progress: ctx.progress,
        };
        let mut index = stager(job, ctx, &format!("{id}.index"))?;
        let mut deleted = stager(job, ctx, &format!("{id}.deleted"))?;
        let parent: Option<Box<dyn std::io::BufRead>> = match &parent_index {
            Some(v) => Some(Box::new(BufReader::new(v.open()?))),
            None => None,
        };
        let mut changes = Changes {
            parent,
            index: &mut index,
            deleted: &mut deleted,
            unchanged_bytes: 0,
        };
        let read = reader.read_changes(&task.kind, attempt, &mut out, &mut changes);
        let unchanged = changes.unchanged_bytes;
        drop(changes);
        match read {
            Err(e) if e.kind() == ErrorKind::Changed && attempt < LAST_ATTEMPT => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
            Ok(read) => {
                crate::failpoint::hit("read");
                let gone = deleted.raw_bytes() > 0;
                let deleted = gone.then(|| deleted.finish()).transpose()?;
                break (
                    read,
                    unchanged,
                    out.inner.finish()?,
                    index.finish()?,
                    deleted,
                );
            }
        }
    };
    crate::failpoint::hit("staged");
    let ext = task.kind.data_ext();
    let data = store(ctx, &tar, ext)?;
    let index = store(ctx, &index, "index.zst")?;
    let deleted = deleted.map(|d| store(ctx, &d, "deleted.zst")).transpose()?;
    crate::failpoint::hit("stored");
    let (data, deltas) = match parent.filter(|_| parent_index.is_some()) {
        Some(p) => {
            let mut deltas = p.deltas.clone();
            deltas.push(Delta { data, deleted });
            (p.data.clone(), deltas)
        }
        None => (data, Vec::new()),
    };
    let entry = TaskEntry {
        id: task.id.clone(),
        kind: task.kind.clone(),
        data,
        stats: read.stats,
        file: read.file,
        fingerprint: task.fingerprint.clone(),
        warnings: read.warnings,
        index: Some(index),
        deltas,
    };
    write_receipt(ctx.repo, task, &entry)?;
    let read_now = entry.stats.bytes_read.saturating_sub(unchanged);
    Ok((entry, read_now))
}
