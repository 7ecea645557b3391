//! Planning a file tree: ranges of the walk order of about `target_bytes`, and parts of larger
//! files, each with a fingerprint of the metadata of what it reads.

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::select::Selector;
use super::{read_err, Walk, ENTRY_OVERHEAD};
use crate::catalog::{FilesTask, Manifest, PartTask, TaskKind};
use crate::error::Result;
use crate::path::RelPath;
use crate::source::Planned;

/// The range boundaries of the parent snapshot, which a plan after it keeps: a range whose
/// boundaries stay can store only what changed in it.
pub(crate) struct Cuts(Vec<RelPath>);

impl Cuts {
    /// The starts of the parent's ranges, in walk order.
    pub(crate) fn of(parent: &Manifest) -> Cuts {
        let mut starts: Vec<RelPath> = parent
            .tasks
            .iter()
            .filter_map(|t| match &t.kind {
                TaskKind::Files(f) => f.start.clone(),
                _ => None,
            })
            .collect();
        starts.sort();
        Cuts(starts)
    }
}

/// Plans a tree into ranges of about `target` bytes and parts of larger files. Each task comes
/// with a fingerprint of the metadata of what it reads (path, mode, owner, size, modification and
/// change times, inode): equal fingerprints mean unchanged entries, which an incremental backup
/// takes from the parent snapshot without reading them.
///
/// After a parent (`cuts`), its boundaries stay where they were, whatever was added or removed
/// around them: a range is cut at the parent's boundaries, and also where it has grown past
/// twice `target`; a parent's boundary is dropped when the range before it has shrunk under an
/// eighth of `target` (the two ranges become one).
pub(crate) fn plan_fingerprinted(
    root: &Path,
    select: &Selector,
    target: u64,
    cuts: Option<Cuts>,
) -> Result<(Vec<Planned>, u64)> {
    let hinted = cuts.is_some();
    let cuts = cuts.map(|c| c.0).unwrap_or_default();
    let mut cuts = cuts.iter().peekable();
    let mut tasks = Vec::new();
    let mut start: Option<RelPath> = None;
    let mut split_files = Vec::new();
    let mut bytes = 0u64;
    let mut items = 0u64;
    let root_meta = fs::symlink_metadata(root).map_err(|e| read_err("cannot stat", root, e))?;
    let mut print = blake3::Hasher::new();
    fingerprint(&mut print, &RelPath::root(), &root_meta);
    // Entries that cannot be read are the read's to report; the plan only leaves them out.
    let mut walk = Walk::new(root, select, false);
    walk.run(None, None, &mut |rel, _path, meta| {
        // The parent's last boundary at or before this path: a range starts there again, even
        // when no entry has that path any more.
        let mut at_cut = None;
        while let Some(c) = cuts.next_if(|c| *c <= rel) {
            at_cut = Some(c);
        }
        let boundary = match at_cut {
            Some(c) if bytes >= target / 8 => Some(c.clone()),
            _ if (hinted && bytes >= 2 * target) || (!hinted && bytes >= target) => {
                Some(rel.clone())
            }
            _ => None,
        };
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
