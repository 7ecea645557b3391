//! The whole pipeline through fault-injecting nodes: retry, node substitution, no snapshot on
//! failure, fallback to a healthy replica on restore, and verify finding the damage.

use std::path::Path;
use std::sync::Arc;

use coldvault::store::{Backoff, RetryingTarget, SharedTarget, Target};
use coldvault::{
    backup, restore, verify, Job, Progress, Repository, RestoreOptions, RestoreTarget, Status,
};
use coldvault_testing::{fixtures, Fault, FaultyTarget, MemoryTarget};

struct Setup {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    out: std::path::PathBuf,
    job: Job,
    faulty: Vec<Arc<FaultyTarget>>,
    repo: Repository,
}

fn setup(replicas: usize) -> Setup {
    setup_split(replicas, "64KiB")
}

fn setup_split(replicas: usize, target_bytes: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fixtures::odd_tree(&src, 200_000);
    let text = format!(
        r#"
name = "pipe"
[source]
type = "fs"
path = "{}"
[split]
target_bytes = "{target_bytes}"
[repository]
directory = "cold"
replicas = {replicas}
nodes = [
  {{ name = "a", url = "file:nodes/a" }},
  {{ name = "b", url = "file:nodes/b" }},
  {{ name = "c", url = "file:nodes/c" }},
]
[run]
staging = "staging"
retries = 2
retry_delay = "1ms"
"#,
        src.display()
    );
    let job = Job::parse(&text, dir.path()).unwrap();
    let faulty: Vec<Arc<FaultyTarget>> = ["a", "b", "c"]
        .iter()
        .map(|n| Arc::new(FaultyTarget::new(Arc::new(MemoryTarget::new(n)), vec![])))
        .collect();
    let nodes: Vec<SharedTarget> = faulty
        .iter()
        .map(|f| {
            Arc::new(RetryingTarget::new(
                f.clone(),
                Backoff::new(2, std::time::Duration::from_millis(1)),
            )) as SharedTarget
        })
        .collect();
    let repo = Repository::with_nodes("pipe", nodes, replicas);
    Setup {
        out: dir.path().join("restored"),
        _dir: dir,
        src,
        job,
        faulty,
        repo,
    }
}

fn run_backup(s: &Setup) -> backup::BackupReport {
    backup::backup_to(&s.job, &s.repo, 2, &Progress::default()).unwrap()
}

fn run_restore(s: &Setup) -> restore::RestoreReport {
    let opts = RestoreOptions {
        parallel: 2,
        ..Default::default()
    };
    restore::restore_from(
        &s.job,
        &s.repo,
        "latest",
        &RestoreTarget::Path(s.out.clone()),
        &opts,
        &Progress::default(),
    )
    .unwrap()
}

fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(fixtures::listing(a), fixtures::listing(b));
}

#[test]
fn temporary_failures_are_retried_and_the_restore_is_exact() {
    let s = setup(2);
    for f in &s.faulty {
        f.set_faults(vec![
            Fault::FailPut(1, Status::Temporary),
            Fault::FailPut(3, Status::Temporary),
        ]);
    }
    let r = run_backup(&s);
    assert!(r.failed_tasks.is_empty(), "{:?}", r.failed_tasks);
    assert!(r.snapshot.is_some());
    assert!(r.tasks > 3, "the tree should split into several tasks");
    run_restore(&s);
    assert_same_tree(&s.src, &s.out);
}

#[test]
fn a_dead_node_is_replaced_and_the_snapshot_is_complete() {
    let s = setup(2);
    s.faulty[0].set_faults(vec![Fault::FailAllPuts(Status::Permanent)]);
    let r = run_backup(&s);
    assert!(r.failed_tasks.is_empty(), "{:?}", r.failed_tasks);
    let (m, _) = s.repo.find("latest").unwrap();
    for t in &m.tasks {
        assert_eq!(t.data.nodes.len(), 2);
        assert!(!t.data.nodes.contains(&"a".to_string()));
    }
    run_restore(&s);
    assert_same_tree(&s.src, &s.out);
}

#[test]
fn too_few_nodes_commits_no_snapshot_and_names_the_nodes() {
    let s = setup(2);
    for f in &s.faulty[1..] {
        f.set_faults(vec![Fault::FailAllPuts(Status::Temporary)]);
    }
    let r = run_backup(&s);
    assert!(r.snapshot.is_none());
    assert_eq!(r.failed_tasks.len() as u64, r.tasks);
    let e = &r.failed_tasks[0].error;
    assert!(e.contains("node b") && e.contains("node c"), "{e}");
    // The cause is kept as data, not only as text.
    assert_eq!(r.failed_tasks[0].cause.kind(), coldvault::ErrorKind::Target);
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert!(s.repo.list().snapshots.is_empty(), "no snapshot is listed");
    let staging = s.job.run.staging.clone();
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "staging is empty after the run: {left:?}");
}

#[test]
fn a_corrupt_replica_is_found_by_verify_and_passed_over_by_restore() {
    let s = setup(3);
    let r = run_backup(&s);
    assert!(r.snapshot.is_some());
    s.faulty[1].set_faults(vec![Fault::FlipOnGet]);
    let (m, nodes) = s.repo.find("latest").unwrap();
    // Node b garbles everything it hands out: its copies of the manifest and the marker read as
    // damaged (they check themselves), its data files' sizes are intact.
    let quick = verify::verify(&s.repo, &m, &nodes, None, 2);
    assert!(
        quick.problems.iter().all(|p| p.node == "b"
            && p.problem == "damaged"
            && (p.file.starts_with("snapshots/") || p.file == "config.json")),
        "sizes are intact: {:?}",
        quick.problems
    );
    let full = verify::verify(
        &s.repo,
        &m,
        &nodes,
        Some(&verify::DataReads {
            subset: verify::Subset::All,
            max_duration: None,
        }),
        2,
    );
    assert!(!full.ok);
    let corrupt: Vec<_> = full
        .problems
        .iter()
        .filter(|p| p.problem == "corrupt")
        .collect();
    assert_eq!(corrupt.len(), m.receipts().len());
    assert!(full.problems.iter().all(|p| p.node == "b"));
    let rr = run_restore(&s);
    assert_same_tree(&s.src, &s.out);
    // Replica b is passed over wherever it is the first choice.
    assert!(
        rr.replica_problems.iter().all(|p| p.contains("node b")),
        "{:?}",
        rr.replica_problems
    );
}

#[test]
fn a_corrupt_replica_too_large_to_check_in_memory_is_passed_over_through_staging() {
    let s = setup_split(2, "64MiB");
    // Random bytes do not compress: a data file larger than the 24 MiB a restore checks in
    // memory, so its replica is copied into staging and checked there.
    std::fs::write(s.src.join("noise"), fixtures::bytes(7, 30 << 20)).unwrap();
    let r = run_backup(&s);
    assert!(r.snapshot.is_some());
    let (m, _) = s.repo.find("latest").unwrap();
    let big = m.tasks.iter().find(|t| t.data.size > 24 << 20).unwrap();
    let first = &big.data.nodes[0];
    for f in &s.faulty {
        if f.name() == first {
            f.set_faults(vec![Fault::FlipOnGet]);
        }
    }
    let rr = run_restore(&s);
    assert_same_tree(&s.src, &s.out);
    let key = big.data.key.to_string();
    assert!(
        rr.replica_problems.iter().any(|p| p.contains(&key)
            && p.contains(&format!("node {first}"))
            && p.contains("checksum")),
        "{:?}",
        rr.replica_problems
    );
    let staging = s.job.run.staging.clone();
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(
        left.is_empty(),
        "staging is empty after the restore: {left:?}"
    );
}
