//! The parts of one large file, looked at together once every part is read: they make up the file
//! only when every part was read from the same version of it (size, times, inode). When they were
//! not, every part is read again; a file whose parts never agree is left out, with a warning, and
//! never stored as a mix of versions.

use std::collections::BTreeMap;

use crate::catalog::{Problem, TaskEntry, TaskId, TaskKind, Warning};
use crate::path::RelPath;

/// The tasks to read again: every part of each file whose parts disagree. With `last`, none:
/// such files get a [`Problem::KeptChanging`] warning instead and restore leaves them out.
pub(super) fn recheck(entries: &mut [&mut TaskEntry], last: bool) -> Vec<TaskId> {
    let mut files: BTreeMap<RelPath, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let TaskKind::FilePart(p) = &e.kind {
            files.entry(p.path.clone()).or_default().push(i);
        }
    }
    let mut again = Vec::new();
    for (path, idx) in files {
        if agree(idx.iter().map(|&i| &*entries[i])) {
            continue;
        }
        if !last {
            again.extend(idx.iter().map(|&i| entries[i].id.clone()));
            continue;
        }
        if let Some(&first) = idx.iter().min_by_key(|&&i| match &entries[i].kind {
            TaskKind::FilePart(p) => p.part,
            _ => u32::MAX,
        }) {
            entries[first].warnings.push(Warning::new(
                path.lossy(),
                Problem::KeptChanging,
                "its parts were read from different versions of it, every time they were read: \
                 left out rather than stored as a mix of versions",
            ));
        }
    }
    again
}

/// Whether the parts of one file need no second read: all read from one version, all gone (the
/// file vanished), or some unreadable (the file is left out whatever is read again).
fn agree<'a>(parts: impl Iterator<Item = &'a TaskEntry>) -> bool {
    let mut versions = Vec::new();
    let mut gone = 0;
    let mut n = 0;
    for e in parts {
        n += 1;
        if e.warnings
            .iter()
            .any(|w| matches!(w.problem, Problem::Unreadable | Problem::KeptChanging))
        {
            return true;
        }
        match e.file.as_ref() {
            None => gone += 1,
            Some(meta) => match meta.version {
                Some(v) if !e.warnings.iter().any(|w| w.problem == Problem::Changed) => {
                    versions.push(v)
                }
                _ => return false,
            },
        }
    }
    gone == n || (gone == 0 && versions.windows(2).all(|w| w[0] == w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FileMeta, FileVersion, PartTask, ReadStats};
    use crate::store::{ObjectKey, Receipt};

    fn part(i: u32, size: Option<u64>) -> TaskEntry {
        TaskEntry {
            id: serde_json::from_str(&format!("\"{i:016x}\"")).unwrap(),
            kind: TaskKind::FilePart(PartTask {
                path: RelPath::from_untrusted(b"big").unwrap(),
                offset: u64::from(i) * 10,
                len: 10,
                part: i,
                parts: 2,
            }),
            data: Receipt {
                key: ObjectKey::new("k"),
                size: 0,
                checksum: String::new(),
                nodes: Vec::new(),
            },
            dead_bytes: 0,
            indexed_deltas: None,
            stats: ReadStats::default(),
            file: size.map(|size| FileMeta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 1,
                mtime_nsec: 0,
                size,
                version: Some(FileVersion {
                    size,
                    mtime: 1,
                    mtime_nsec: 0,
                    ctime: 1,
                    ctime_nsec: 0,
                    ino: 7,
                    dev: 1,
                }),
                attrs: Default::default(),
            }),
            fingerprint: None,
            warnings: Vec::new(),
            index: None,
            deltas: Vec::new(),
        }
    }

    #[test]
    fn parts_of_one_version_are_kept() {
        let (mut a, mut b) = (part(0, Some(20)), part(1, Some(20)));
        assert!(recheck(&mut [&mut a, &mut b], false).is_empty());
    }

    #[test]
    fn parts_of_two_versions_are_read_again_then_left_out() {
        let (mut a, mut b) = (part(0, Some(20)), part(1, Some(25)));
        assert_eq!(recheck(&mut [&mut a, &mut b], false).len(), 2);
        assert!(recheck(&mut [&mut a, &mut b], true).is_empty());
        assert_eq!(a.warnings[0].problem, Problem::KeptChanging);
        assert!(b.warnings.is_empty());
    }

    #[test]
    fn a_file_that_vanished_after_its_first_part_is_read_again() {
        let (mut a, mut b) = (part(0, Some(20)), part(1, None));
        assert_eq!(recheck(&mut [&mut a, &mut b], false).len(), 2);
        let (mut a, mut b) = (part(0, None), part(1, None));
        assert!(recheck(&mut [&mut a, &mut b], false).is_empty());
    }
}
