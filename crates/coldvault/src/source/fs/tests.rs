use super::*;
use crate::catalog::{FilesTask, PartTask};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A selector that takes everything.
fn everything() -> Selector {
    let job = crate::job::Job::parse(
        "name = \"t\"\n[source]\ntype = \"fs\"\npath = \"/\"\n[repository]\ndirectory = \"d\"\nnodes = [{ name = \"a\", url = \"s3://b/p\" }]\n[run]\nstaging = \"/nonexistent/staging\"\n",
        Path::new("/"),
    )
    .unwrap();
    Selector::new(&job, Path::new("/"), &TreeSelection::default()).unwrap()
}

/// Walks `[start, end)` of the tree at `root`, taking everything.
fn walk(
    root: &Path,
    start: Option<&RelPath>,
    end: Option<&RelPath>,
    visit: &mut dyn FnMut(&RelPath, &Path, &Metadata) -> Result<()>,
) -> Result<()> {
    let select = everything();
    Walk::new(root, &select, true).run(start, end, visit)
}

/// Plans the tree at `root`, taking everything: (kind, estimated bytes, estimated items).
fn plan(root: &Path, target: u64) -> Result<Vec<(TaskKind, u64, u64)>> {
    Ok(
        super::plan::plan_fingerprinted(root, &everything(), target, None)?
            .0
            .into_iter()
            .map(|p| (p.kind, p.bytes, p.items))
            .collect(),
    )
}

/// Builds a tree from (path, size) pairs; paths use '/' and may nest.
fn build(root: &Path, files: &[(String, usize)]) {
    for (p, size) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        if path.is_dir() {
            continue;
        }
        fs::write(&path, vec![b'x'; *size]).unwrap();
    }
}

fn all_entries(root: &Path) -> Vec<RelPath> {
    let mut v = Vec::new();
    walk(root, None, None, &mut |rel, _, _| {
        v.push(rel.clone());
        Ok(())
    })
    .unwrap();
    v
}

fn check_cover(root: &Path, target: u64) {
    let tasks = plan(root, target).unwrap();
    let all = all_entries(root);
    let mut seen: BTreeMap<RelPath, usize> = BTreeMap::new();
    let mut parts: BTreeMap<RelPath, Vec<(u64, u64, u32, u32)>> = BTreeMap::new();
    for (kind, _, _) in &tasks {
        match kind {
            TaskKind::Files(FilesTask {
                start,
                end,
                split_files,
            }) => {
                walk(root, start.as_ref(), end.as_ref(), &mut |rel, _, _| {
                    *seen.entry(rel.clone()).or_default() += 1;
                    Ok(())
                })
                .unwrap();
                for s in split_files {
                    assert!(start.as_ref().is_none_or(|st| s >= st));
                    assert!(end.as_ref().is_none_or(|e| s < e));
                }
            }
            TaskKind::FilePart(PartTask {
                path,
                offset,
                len,
                part,
                parts: n,
            }) => parts
                .entry(path.clone())
                .or_default()
                .push((*offset, *len, *part, *n)),
            TaskKind::Table(_) | TaskKind::PgRange(_) | TaskKind::MyRange(_) => {
                unreachable!()
            }
        }
    }
    for e in &all {
        assert_eq!(
            seen.get(e),
            Some(&1),
            "entry {e} covered {:?} times",
            seen.get(e)
        );
    }
    assert_eq!(seen.len(), all.len());
    for (path, mut ps) in parts {
        let size = fs::metadata(path.to_path(root)).unwrap().len();
        assert!(size > target);
        ps.sort();
        let mut next = 0;
        for (i, (offset, len, part, n)) in ps.iter().enumerate() {
            assert_eq!(*offset, next, "{path}: gap or overlap at part {i}");
            assert_eq!(*part as usize, i);
            assert_eq!(*n as usize, ps.len());
            next += len;
        }
        assert_eq!(next, size, "{path}: parts do not add up to the file");
    }
}

#[test]
fn walk_order_is_rel_path_order() {
    let tmp = tempfile::tempdir().unwrap();
    build(
        tmp.path(),
        &[
            ("a.b".into(), 1),
            ("a/b".into(), 1),
            ("a/c/d".into(), 1),
            ("a-".into(), 1),
            ("b".into(), 1),
        ],
    );
    let v = all_entries(tmp.path());
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(v, sorted);
    assert_eq!(v.len(), 7);
}

#[test]
fn ranges_prune_subtrees() {
    let tmp = tempfile::tempdir().unwrap();
    build(
        tmp.path(),
        &[
            ("a/x".into(), 1),
            ("b/y".into(), 1),
            ("b/z".into(), 1),
            ("c".into(), 1),
        ],
    );
    let start = RelPath::from_untrusted(b"b/y").unwrap();
    let end = RelPath::from_untrusted(b"c").unwrap();
    let mut got = Vec::new();
    walk(tmp.path(), Some(&start), Some(&end), &mut |rel, _, _| {
        got.push(String::from_utf8(rel.as_bytes().to_vec()).unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec!["b/y", "b/z"]);
}

#[test]
fn a_large_file_is_split_into_parts() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), &[("big".into(), 10_000), ("small".into(), 10)]);
    let tasks = plan(tmp.path(), 4096).unwrap();
    let parts = tasks
        .iter()
        .filter(|(k, _, _)| matches!(k, TaskKind::FilePart { .. }))
        .count();
    assert_eq!(parts, 3);
    check_cover(tmp.path(), 4096);
}

#[test]
fn planning_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, usize)> = (0..50)
        .map(|i| (format!("d{}/f{i}", i % 7), i * 300))
        .collect();
    build(tmp.path(), &files);
    assert_eq!(
        plan(tmp.path(), 4096).unwrap(),
        plan(tmp.path(), 4096).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn tasks_cover_every_entry_and_byte_exactly_once(
        files in proptest::collection::vec(
            ("[a-c]{1,2}(/[a-c.]{1,2}){0,3}", prop_oneof![3 => 0usize..600, 1 => 4000usize..20000]),
            1..40),
        target in prop_oneof![Just(4096u64), Just(8192u64), Just(1u64 << 20)],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        // A path that is a prefix directory of another is skipped by build().
        let mut files = files;
        files.sort();
        let mut kept: Vec<(String, usize)> = Vec::new();
        for (p, s) in files {
            if p.split('/').any(|c| c == "." || c == "..") { continue; }
            if kept.iter().any(|(k, _)| p.starts_with(&format!("{k}/")) || k.starts_with(&format!("{p}/")) || *k == p) { continue; }
            kept.push((p, s));
        }
        build(tmp.path(), &kept);
        check_cover(tmp.path(), target);
    }
}
