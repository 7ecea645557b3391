//! Repositories written by an older coldvault still restore: `tests/fixtures/v1` holds two
//! repositories (a file tree with a file split in parts, and a SQLite database) written by the
//! binary of 2026-12-01 (manifest format 1), with the sources they were taken from. Today's binary
//! must list, verify and restore them, and plan the same task ids (which incremental backups and
//! resumed runs rely on).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// A copy of the fixture in a temporary directory (commands write spools and locks next to it).
fn fixture() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&src, dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

fn coldvault(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("coldvault")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every entry under `root`: path, kind, whether executable, and the bytes' BLAKE3 or the link.
fn contents(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p: PathBuf = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push(format!(
                    "{rel} link {}",
                    fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                out.push(format!("{rel} dir"));
                walk(root, &p, out);
            } else {
                let exec = m.permissions().mode() & 0o100 != 0;
                let hash = blake3::hash(&fs::read(&p).unwrap());
                out.push(format!("{rel} file exec={exec} {hash}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn manifest_task_ids(dir: &Path, job_dir: &str) -> Vec<String> {
    let snaps = dir.join("nodes/disk1").join(job_dir).join("snapshots");
    let file = fs::read_dir(&snaps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let m: Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
    assert_eq!(m["format"], 1, "the fixture is a format-1 manifest");
    task_ids(&m)
}

/// The sorted ids of the `tasks` of a plan or a manifest.
fn task_ids(doc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn planned_task_ids(dir: &Path, job: &str) -> Vec<String> {
    let (code, out, err) = coldvault(dir, &["plan", job, "--json"]);
    assert_eq!(code, 0, "{err}");
    task_ids(&serde_json::from_str(&out).unwrap())
}

#[test]
fn a_format_1_file_tree_repository_lists_verifies_and_restores_byte_for_byte() {
    let dir = fixture();
    let d = dir.path();
    let (code, out, err) = coldvault(d, &["snapshots", "job-fs.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("\"id\"").count(), 1, "{out}");
    let (code, _, err) = coldvault(d, &["verify", "job-fs.toml", "latest", "--read-data"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = coldvault(d, &["restore", "job-fs.toml", "latest", "--to", "out"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(contents(&d.join("out")), contents(&d.join("tree")));
    let large = fs::metadata(d.join("out/bin/large.bin")).unwrap();
    assert_eq!(large.len(), 40_000, "the file stored in three parts");
}

#[test]
fn todays_planner_gives_a_format_1_snapshots_tasks_the_same_ids() {
    let dir = fixture();
    let d = dir.path();
    assert_eq!(
        planned_task_ids(d, "job-fs.toml"),
        manifest_task_ids(d, "cold/v1-tree")
    );
    assert_eq!(
        planned_task_ids(d, "job-sqlite.toml"),
        manifest_task_ids(d, "cold/v1-sqlite")
    );
}

#[test]
fn a_format_1_sqlite_repository_restores_every_row() {
    let dir = fixture();
    let d = dir.path();
    let (code, _, err) = coldvault(
        d,
        &["restore", "job-sqlite.toml", "latest", "--to", "out.db"],
    );
    assert_eq!(code, 0, "{err}");
    let dump = |db: &str| {
        let c = rusqlite::Connection::open(d.join(db)).unwrap();
        let mut s = c
            .prepare("SELECT id, who, total, quote(note) FROM orders ORDER BY id")
            .unwrap();
        let rows: Vec<String> = s
            .query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, String>(3)?
                ))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let index: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'orders_who'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (rows, index)
    };
    let (restored, index) = dump("out.db");
    assert_eq!(restored.len(), 500);
    assert_eq!(index, 1, "the index comes back");
    assert_eq!(restored, dump("shop.db").0);
}

#[test]
fn a_snapshot_restores_as_its_manifest_says_after_the_job_changed_its_source_type() {
    let dir = fixture();
    let d = dir.path();
    // The same job, now pointed at a SQLite file: its old file-tree snapshot still restores as a
    // file tree, on the local engine's workers too.
    let job = fs::read_to_string(d.join("job-fs.toml")).unwrap().replace(
        "type = \"fs\"\npath = \"tree\"",
        "type = \"sqlite\"\npath = \"shop.db\"",
    );
    assert!(job.contains("sqlite"));
    fs::write(d.join("job-fs.toml"), job).unwrap();
    let (code, _, err) = coldvault(d, &["restore", "job-fs.toml", "latest", "--to", "out"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(contents(&d.join("out")), contents(&d.join("tree")));
}
