//! Whether a file-tree manifest describes every byte it claims: each file stored in parts has
//! every part, once, in order, without gaps, all read from one version of the file, each holding
//! its share of that version's size (a file that shrank below a part's offset leaves the part
//! empty). A manifest that does not (a part entry lost or edited) is damage: restore refuses it
//! before writing anything and verify reports it.
//!
//! Files the snapshot says it does not hold (gone before a part was read, unreadable, or whose
//! parts never agreed: each with a warning in the manifest) are not damage; restore leaves them
//! out.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{FileMeta, Manifest, PartTask, Problem, TaskKind};
use crate::path::RelPath;

/// One part as the manifest lists it: its parameters, the file's metadata, the bytes read.
type Part<'m> = (&'m PartTask, Option<&'m FileMeta>, u64);

/// What is wrong with the manifest's split files, one line each; empty when nothing is.
pub(crate) fn incomplete_files(manifest: &Manifest) -> Vec<String> {
    let not_held = not_held(manifest);
    let mut parts: BTreeMap<&RelPath, Vec<Part<'_>>> = BTreeMap::new();
    let mut split: BTreeSet<&RelPath> = BTreeSet::new();
    for t in &manifest.tasks {
        match &t.kind {
            TaskKind::FilePart(p) => {
                parts
                    .entry(&p.path)
                    .or_default()
                    .push((p, t.file.as_ref(), t.stats.bytes_read));
            }
            TaskKind::Files(f) => split.extend(f.split_files.iter()),
            _ => {}
        }
    }
    let mut problems: Vec<String> = split
        .iter()
        .filter(|p| !parts.contains_key(*p))
        .map(|p| format!("{p}: stored in parts, but the manifest lists none"))
        .collect();
    for (path, mut ps) in parts {
        if not_held.contains(path) {
            continue;
        }
        ps.sort_by_key(|(p, _, _)| p.part);
        if let Some(why) = file_problem(&ps) {
            problems.push(format!("{path}: {why}"));
        }
    }
    problems
}

/// The files stored in parts that the snapshot does not hold, by its own account: a part found
/// the file gone, could not read it, or the parts never came from one version.
pub(crate) fn not_held(manifest: &Manifest) -> BTreeSet<&RelPath> {
    manifest
        .tasks
        .iter()
        .filter_map(|t| match &t.kind {
            TaskKind::FilePart(p)
                if t.warnings.iter().any(|w| {
                    matches!(
                        w.problem,
                        Problem::Vanished | Problem::Unreadable | Problem::KeptChanging
                    )
                }) =>
            {
                Some(&p.path)
            }
            _ => None,
        })
        .collect()
}

/// The first thing wrong with the parts of one file (sorted by part number), if any.
fn file_problem(ps: &[Part<'_>]) -> Option<String> {
    let n = ps.first()?.0.parts;
    if ps.len() != n as usize || ps.iter().any(|(p, _, _)| p.parts != n) {
        return Some(format!("{} of {n} parts listed", ps.len()));
    }
    let mut next = 0u64;
    for (i, (p, meta, read)) in ps.iter().enumerate() {
        if p.part != i as u32 {
            return Some(format!("part {} is missing", i + 1));
        }
        if p.offset != next {
            return Some(format!("part {} starts at {}, not {next}", i + 1, p.offset));
        }
        let last = i + 1 == ps.len();
        let (Some(meta), Some(first)) = (meta, ps[0].1) else {
            return Some(format!("part {} has no file metadata", i + 1));
        };
        if meta.size != first.size || meta.version != first.version {
            return Some(format!(
                "its parts were read from different versions ({} and {} bytes)",
                first.size, meta.size
            ));
        }
        // Its share of the file: up to `len` bytes from `offset`, the last part all the rest.
        let left = meta.size.saturating_sub(p.offset);
        let share = if last { left } else { left.min(p.len) };
        if *read != share {
            return Some(format!(
                "part {} holds {read} bytes, not the {share} of a file of {} bytes",
                i + 1,
                meta.size
            ));
        }
        next = p.offset + p.len;
    }
    None
}
