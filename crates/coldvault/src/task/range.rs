//! A file-tree range's task: its tar stream and its index, and, when the task extends the
//! parent's entry for the range, only what changed since (a delta tar, the paths gone and the
//! files whose metadata alone changed).
//!
//! Invariant: an entry that extends a parent keeps the parent's data file and deltas and adds
//! one delta; an entry read whole has none. Either way it names the index of exactly what the
//! snapshot holds of the range. When the parent's index cannot be had from any replica, the
//! range is read whole: a delta is never made against a guess.

use std::io::BufReader;

use super::{stager, store, with_attempts, write_receipt, Stored};
use crate::catalog::{Delta, TaskEntry};
use crate::error::Result;
use crate::fetch::{Fetcher, Verified};
use crate::job::Job;
use crate::plan::TaskSpec;
use crate::progress::CountingWriter;
use crate::source::{ChangeTally, Changes, ParentIndex, RunSource, TaskRead, MAX_PATCHES};
use crate::stage::Stager;

/// Reads the range of `task` (whole, or its changes since `task.parent`), stages and stores its
/// data files, and answers with its entry and the bytes it read (its stats also count the bytes
/// of the unchanged files, which the snapshot holds).
pub(super) fn stage_and_store(
    job: &Job,
    ctx: &Fetcher<'_>,
    reader: &dyn RunSource,
    task: &TaskSpec,
) -> Result<Stored> {
    let parent = task.parent.as_deref();
    let mut parent_index = match parent.map(|p| fetch_index(ctx, p)).transpose() {
        Ok(index) => index.flatten(),
        Err(e) => {
            log::warn!(
                "task {}: the parent's index of the range cannot be read ({e}): the range is \
                 read whole",
                task.id
            );
            None
        }
    };
    // A patch of the parent's index while its chain has few; the whole index then.
    let patch = parent.is_some_and(|p| p.index_patches().len() < MAX_PATCHES);
    let first = read_range(job, ctx, reader, task, parent_index.as_ref(), patch)?;
    let r = if first.tally.read_whole && parent_index.is_some() {
        // A path of a hard-link group left the range while others stayed: the parent's layers
        // may link to it. Read the range whole (into the same staged files: the first read's
        // are removed first).
        drop(first);
        parent_index = None;
        read_range(job, ctx, reader, task, None, false)?
    } else {
        first
    };
    crate::failpoint::hit("read");
    let RangeRead {
        read,
        tally,
        tar,
        index,
        deleted,
        touched,
    } = r;
    let parent = parent.filter(|_| parent_index.is_some());
    if let Some(p) = parent.filter(|_| tally.changed == 0 && tally.gone == 0 && tally.touched == 0)
    {
        // Nothing of the range changed (its fingerprint moved for what it cannot store, a
        // socket, a file still unreadable): the parent's entry stands, with this read's account.
        let entry = TaskEntry {
            id: task.id.clone(),
            kind: task.kind.clone(),
            stats: read.stats,
            fingerprint: task.fingerprint.clone(),
            warnings: read.warnings,
            ..p.clone()
        };
        write_receipt(ctx.repo, task, &entry)?;
        return Ok(Stored {
            entry,
            bytes_read: 0,
            stored: Vec::new(),
        });
    }
    let deleted = (tally.gone > 0).then(|| deleted.finish()).transpose()?;
    let touched = (tally.touched > 0).then(|| touched.finish()).transpose()?;
    let (tar, index) = (tar.finish()?, index.finish()?);
    crate::failpoint::hit("staged");
    let ext = task.kind.data_ext();
    let data = store(ctx, &tar, ext)?;
    let index = store(ctx, &index, crate::store::INDEX_EXT)?;
    let deleted = deleted.map(|d| store(ctx, &d, "deleted.zst")).transpose()?;
    let touched = touched.map(|t| store(ctx, &t, "touched.zst")).transpose()?;
    crate::failpoint::hit("stored");
    let stored: Vec<_> = [&data, &index]
        .into_iter()
        .chain(&deleted)
        .chain(&touched)
        .cloned()
        .collect();
    let (data, deltas, dead_bytes, index, indexed_deltas) = match parent {
        Some(p) => {
            // The parent's bytes this snapshot does not hold as they were: gone or replaced.
            let kept = tally.unchanged_bytes + tally.touched_bytes;
            let dead = p.stats.bytes_read.saturating_sub(kept);
            let mut deltas = p.deltas.clone();
            let (index, patch, indexed) = if patch {
                let indexed = p.indexed_deltas.unwrap_or(p.deltas.len());
                (p.index.clone(), Some(index), Some(indexed))
            } else {
                (Some(index), None, None)
            };
            deltas.push(Delta {
                data,
                deleted,
                touched,
                index: patch,
            });
            (p.data.clone(), deltas, p.dead_bytes + dead, index, indexed)
        }
        None => (data, Vec::new(), 0, Some(index), None),
    };
    let entry = TaskEntry {
        id: task.id.clone(),
        kind: task.kind.clone(),
        data,
        stats: read.stats,
        file: read.file,
        fingerprint: task.fingerprint.clone(),
        warnings: read.warnings,
        index,
        indexed_deltas,
        deltas,
        dead_bytes,
    };
    write_receipt(ctx.repo, task, &entry)?;
    Ok(Stored {
        bytes_read: (entry.stats.bytes_read)
            .saturating_sub(tally.unchanged_bytes + tally.proven_bytes),
        stored,
        entry,
    })
}

/// The parent's index of the range, fetched: its full index and the patches after it; `None`
/// when it has none.
fn fetch_index(ctx: &Fetcher<'_>, p: &TaskEntry) -> Result<Option<(Verified, Vec<Verified>)>> {
    let Some(full) = &p.index else {
        return Ok(None);
    };
    let full = ctx.fetch(full)?.0;
    let patches = p
        .index_patches()
        .iter()
        .map(|d| match &d.index {
            Some(r) => Ok(ctx.fetch(r)?.0),
            None => Err(crate::error::Error::integrity(
                "a delta after the range's index has no patch of it",
            )),
        })
        .collect::<Result<_>>()?;
    Ok(Some((full, patches)))
}

/// One read of a range, its four files staged but not finished.
struct RangeRead {
    read: TaskRead,
    tally: ChangeTally,
    tar: Stager,
    index: Stager,
    deleted: Stager,
    touched: Stager,
}

/// Reads the range of `task` into its tar, index, deleted and touched lists, against
/// `parent_index` when there is one; read again while the tree changes under it
/// ([`with_attempts`]).
fn read_range(
    job: &Job,
    ctx: &Fetcher<'_>,
    reader: &dyn RunSource,
    task: &TaskSpec,
    parent_index: Option<&(Verified, Vec<Verified>)>,
    patch: bool,
) -> Result<RangeRead> {
    let id = task.id.as_str();
    with_attempts(|attempt| {
        let mut out = CountingWriter {
            inner: stager(job, ctx, id)?,
            progress: ctx.progress,
        };
        let mut index = stager(job, ctx, &format!("{id}.index"))?;
        let mut deleted = stager(job, ctx, &format!("{id}.deleted"))?;
        let mut touched = stager(job, ctx, &format!("{id}.touched"))?;
        let open = |v: &Verified| -> Result<Box<dyn std::io::BufRead>> {
            Ok(Box::new(BufReader::new(v.open()?)))
        };
        let parent = match parent_index {
            Some((full, patches)) => Some(ParentIndex {
                full: open(full)?,
                patches: patches.iter().map(open).collect::<Result<_>>()?,
            }),
            None => None,
        };
        let mut changes = Changes {
            parent,
            index: &mut index,
            patch,
            deleted: &mut deleted,
            touched: &mut touched,
            tally: ChangeTally::default(),
        };
        let read = reader.read_changes(&task.kind, attempt, &mut out, &mut changes)?;
        let tally = changes.tally;
        drop(changes);
        Ok(RangeRead {
            read,
            tally,
            tar: out.inner,
            index,
            deleted,
            touched,
        })
    })
}
