//! Planning a file tree: ranges of the walk order of about `target_bytes`, and parts of larger
//! files, each with a fingerprint of the metadata of what it reads.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::select::Selector;
use super::{read_err, Walk, ENTRY_OVERHEAD};
use crate::catalog::{FilesTask, Manifest, PartTask, TaskKind};
use crate::error::Result;
use crate::job::Job;
use crate::path::RelPath;
use crate::source::Planned;

/// The range boundaries of the parent snapshot, which a plan after it keeps: a range whose
/// boundaries stay can store only what changed in it.
#[derive(Default)]
pub(crate) struct Cuts {
    /// The starts of the parent's ranges, in walk order.
    pub(super) starts: Vec<RelPath>,
    /// The starts (`None`: the first range's) of the parent's ranges whose entry a delta may
    /// extend ([`crate::backup::extendable`]).
    pub(super) extendable: HashSet<Option<RelPath>>,
}

impl Cuts {
    /// The parent's range boundaries, and which of its ranges `job` may extend with a delta.
    pub(crate) fn of(parent: &Manifest, job: &Job) -> Cuts {
        let mut cuts = Cuts::default();
        for t in &parent.tasks {
            if let TaskKind::Files(f) = &t.kind {
                cuts.starts.extend(f.start.clone());
                if crate::backup::extendable(job, t) {
                    cuts.extendable.insert(f.start.clone());
                }
            }
        }
        cuts.starts.sort();
        cuts
    }
}

/// How many times `target` a range may grow to while a delta can extend its entry: cutting it
/// reads both parts whole, so that waits until the range is rewritten anyway (past its chain's
/// bounds) or this large.
const EXTENDABLE_GROWTH: u64 = 8;

/// Plans a tree into ranges of about `target` bytes and parts of larger files. Each task comes
/// with a fingerprint of the metadata of what it reads (path, mode, owner, size, modification and
/// change times, inode): equal fingerprints mean unchanged entries, which an incremental backup
/// takes from the parent snapshot without reading them.
///
/// After a parent (`cuts`), its boundaries stay where they were, whatever was added or removed
/// around them: a range is cut at the parent's boundaries, and a range that has grown past twice
/// `target` (past [`EXTENDABLE_GROWTH`] times while its entry can take a delta) is cut where it
/// passed `target`, leaving two ranges of about `target` (cut where it
/// passed twice, the rest would be a sliver that the next parent boundary drops, re-cutting the
/// next range too, and every later growth would cut it again); a parent's boundary is dropped
/// when the range before it has shrunk under an eighth of `target` (the two ranges become one).
pub(crate) fn plan_fingerprinted(
    root: &Path,
    select: &Selector,
    target: u64,
    cuts: Option<Cuts>,
) -> Result<(Vec<Planned>, u64)> {
    let hinted = cuts.is_some();
    let Cuts { starts, extendable } = cuts.unwrap_or_default();
    let mut cuts = starts.iter().peekable();
    // Whether the parent's range the walk is in can take a delta.
    let mut in_extendable = extendable.contains(&None);
    let mut tasks = Vec::new();
    let mut start: Option<RelPath> = None;
    let mut split_files = Vec::new();
    let mut bytes = 0u64;
    let mut items = 0u64;
    let root_meta = fs::symlink_metadata(root).map_err(|e| read_err("cannot stat", root, e))?;
    let mut print = blake3::Hasher::new();
    fingerprint(&mut print, &RelPath::root(), &root_meta);
    // After a parent: where the range being planned passed `target`, with its fingerprint,
    // bytes and entries up to there, and the fingerprint of its entries since.
    let mut passed: Option<(RelPath, blake3::Hasher, u64, u64)> = None;
    let mut since = blake3::Hasher::new();
    // Entries that cannot be read are the read's to report; the plan only leaves them out.
    let mut walk = Walk::new(root, select, false);
    walk.run(None, None, &mut |rel, _path, meta| {
        // The parent's last boundary at or before this path: a range starts there again, even
        // when no entry has that path any more.
        let mut at_cut = None;
        while let Some(c) = cuts.next_if(|c| *c <= rel) {
            at_cut = Some(c);
            in_extendable = extendable.contains(&Some(c.clone()));
        }
        let grown = if in_extendable {
            EXTENDABLE_GROWTH * target
        } else {
            2 * target
        };
        let boundary = match at_cut {
            Some(c) if bytes >= target / 8 => Some(c.clone()),
            _ if hinted && bytes >= grown => {
                if let Some((at, first, first_bytes, first_items)) = passed.take() {
                    // Cut where it passed `target`; the rest goes on as the next range.
                    let kind = TaskKind::Files(FilesTask {
                        start: start.take(),
                        end: Some(at.clone()),
                        split_files: split_files.extract_if(.., |f| *f < at).collect(),
                    });
                    tasks.push(planned(kind, first_bytes, first_items, &first));
                    start = Some(at);
                    print = std::mem::replace(&mut since, blake3::Hasher::new());
                    bytes -= first_bytes;
                    items -= first_items;
                }
                None
            }
            _ if !hinted && bytes >= target => Some(rel.clone()),
            _ => None,
        };
        if hinted && passed.is_none() && bytes >= target && items > 0 {
            passed = Some((rel.clone(), print.clone(), bytes, items));
            since = blake3::Hasher::new();
        }
        if let Some(boundary) = boundary.filter(|_| items > 0) {
            let kind = TaskKind::Files(FilesTask {
                start: start.take(),
                end: Some(boundary.clone()),
                split_files: std::mem::take(&mut split_files),
            });
            let print = std::mem::replace(&mut print, blake3::Hasher::new());
            tasks.push(planned(kind, bytes, items, &print));
            start = Some(boundary);
            bytes = 0;
            items = 0;
            passed = None;
        }
        bytes += ENTRY_OVERHEAD;
        items += 1;
        if meta.is_file() && meta.len() > target {
            split_files.push(rel.clone());
            let mut own = blake3::Hasher::new();
            fingerprint(&mut own, rel, meta);
            let parts = meta.len().div_ceil(target);
            for part in 0..parts {
                let offset = part * target;
                let len = target.min(meta.len() - offset);
                let kind = TaskKind::FilePart(PartTask {
                    path: rel.clone(),
                    offset,
                    len,
                    part: part as u32,
                    parts: parts as u32,
                });
                tasks.push(planned(kind, len, 1, &own));
            }
        } else {
            fingerprint(&mut print, rel, meta);
            if passed.is_some() {
                fingerprint(&mut since, rel, meta);
            }
            if meta.is_file() {
                bytes += meta.len().div_ceil(512) * 512;
            }
        }
        Ok(())
    })?;
    let kind = TaskKind::Files(FilesTask {
        start,
        end: None,
        split_files,
    });
    tasks.push(planned(kind, bytes, items, &print));
    Ok((tasks, walk.excluded))
}

fn planned(kind: TaskKind, bytes: u64, items: u64, print: &blake3::Hasher) -> Planned {
    Planned {
        kind,
        bytes,
        items,
        fingerprint: Some(print.finalize().to_hex().to_string()),
    }
}

/// Adds what says whether an entry changed to `h`.
pub(super) fn fingerprint(h: &mut blake3::Hasher, rel: &RelPath, m: &Metadata) {
    h.update(&(rel.as_bytes().len() as u64).to_le_bytes());
    h.update(rel.as_bytes());
    for v in [
        m.mode() as i64,
        m.uid() as i64,
        m.gid() as i64,
        m.len() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino() as i64,
        m.dev() as i64,
    ] {
        h.update(&v.to_le_bytes());
    }
}
