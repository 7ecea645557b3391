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
    plan_after(root, target, None)
}

/// [`plan`] after a parent whose ranges start at `cuts`, none of which a delta may extend.
fn plan_after(
    root: &Path,
    target: u64,
    cuts: Option<Vec<RelPath>>,
) -> Result<Vec<(TaskKind, u64, u64)>> {
    let cuts = cuts.map(|starts| super::plan::Cuts {
        starts,
        extendable: Default::default(),
    });
    plan_cut(root, target, cuts)
}

fn plan_cut(
    root: &Path,
    target: u64,
    cuts: Option<super::plan::Cuts>,
) -> Result<Vec<(TaskKind, u64, u64)>> {
    Ok(
        super::plan::plan_fingerprinted(root, &everything(), target, cuts)?
            .0
            .into_iter()
            .map(|p| (p.kind, p.bytes, p.items))
            .collect(),
    )
}

/// The starts of a plan's ranges (the first's is none).
fn starts(tasks: &[(TaskKind, u64, u64)]) -> Vec<RelPath> {
    tasks
        .iter()
        .filter_map(|(k, _, _)| match k {
            TaskKind::Files(f) => f.start.clone(),
            _ => None,
        })
        .collect()
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

fn check_cover(root: &Path, target: u64, cuts: Option<Vec<RelPath>>) {
    let tasks = plan_after(root, target, cuts).unwrap();
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
    check_cover(tmp.path(), 4096, None);
}

#[test]
fn a_range_grown_past_twice_the_target_is_cut_in_two_when_read_whole_and_its_neighbours_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, usize)> = (0..40)
        .map(|i| (format!("d{}/f{i:02}", i / 10), 1000))
        .collect();
    build(tmp.path(), &files);
    let target = 16 << 10;
    let first = plan(tmp.path(), target).unwrap();
    let cuts = starts(&first);
    // A range of `d1` grows to about three times the target.
    let grown: Vec<(String, usize)> = (0..16).map(|i| (format!("d1/g{i:02}"), 1000)).collect();
    build(tmp.path(), &grown);
    // While a delta can extend the grown range's entry, it is not cut (that would read it whole).
    let grown_start = cuts
        .iter()
        .rev()
        .find(|c| c.lossy().as_str() < "d1/g00")
        .unwrap();
    let extendable = super::plan::Cuts {
        starts: cuts.clone(),
        extendable: [Some(grown_start.clone())].into_iter().collect(),
    };
    let kept = plan_cut(tmp.path(), target, Some(extendable)).unwrap();
    assert_eq!(starts(&kept), cuts);
    let second = plan_after(tmp.path(), target, Some(cuts.clone())).unwrap();
    let new = starts(&second);
    assert!(cuts.iter().all(|c| new.contains(c)), "{cuts:?} -> {new:?}");
    let added: Vec<&RelPath> = new.iter().filter(|c| !cuts.contains(c)).collect();
    assert!(!added.is_empty(), "{cuts:?} -> {new:?}");
    for (k, bytes, _) in &second {
        if let TaskKind::Files(f) = k {
            let at_new = |c: Option<&RelPath>| c.is_some_and(|c| added.contains(&c));
            if at_new(f.start.as_ref()) || at_new(f.end.as_ref()) {
                assert!(*bytes >= target / 2, "a half, not a sliver: {f:?} {bytes}");
            }
        }
    }
    // A little more growth at the start of the grown range moves nothing (cut where it passed
    // twice the target, the first piece would pass it again, cut again, and so on).
    build(tmp.path(), &[(format!("{}0", grown_start.lossy()), 1000)]);
    let third = plan_after(tmp.path(), target, Some(new.clone())).unwrap();
    assert_eq!(starts(&third), new);
    check_cover(tmp.path(), target, Some(new));
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
        check_cover(tmp.path(), target, None);
        // After a parent planned with a larger target: its ranges past twice this one are cut.
        let parent = starts(&plan(tmp.path(), target * 4).unwrap());
        check_cover(tmp.path(), target, Some(parent));
    }
}
