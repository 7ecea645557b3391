//! Incremental file-tree backups: a task whose entries have the same metadata as in the parent
//! snapshot (size, modification and change time, inode, mode, owner) is taken from it without
//! reading a byte; anything changed — even with the same size and a restored modification time —
//! is read again; every snapshot restores exactly.

mod common;

use coldvault_testing::fixtures;
use common::Env;

fn env() -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"32KiB\"",
        2,
    );
    let src = env.path("src");
    for i in 0..60 {
        let dir = src.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), fixtures::bytes(i, 7000)).unwrap();
    }
    std::fs::write(src.join("big"), fixtures::bytes(99, 200_000)).unwrap();
    env
}

fn restore(env: &Env, snapshot: &str, to: &str) -> Vec<String> {
    let to = env.path(to);
    env.json(&["restore", snapshot, "--to", to.to_str().unwrap()], 0);
    fixtures::listing(&to)
}

#[test]
fn an_unchanged_tree_is_not_read_and_changes_are() {
    let env = env();
    let first = env.json(&["backup"], 0);
    let tasks = first["tasks"].as_u64().unwrap();
    assert!(tasks > 10, "{first}");
    assert_eq!(first["unchanged_tasks"], 0);
    let original = fixtures::listing(&env.path("src"));
    let files_before = env.data_files("a").len() + env.data_files("b").len();

    // Nothing changed: every task comes from the parent, nothing new is stored.
    let second = env.json(&["backup"], 0);
    assert_eq!(second["unchanged_tasks"], tasks, "{second}");
    assert_eq!(
        env.data_files("a").len() + env.data_files("b").len(),
        files_before,
        "only a manifest was added"
    );
    assert_eq!(
        second["files"], first["files"],
        "the manifest still lists every file"
    );

    // One file appended to, one rewritten with the same size and its old modification time
    // (its change time and contents differ), one large file touched.
    let src = env.path("src");
    let grown = src.join("d1/f1");
    let mut bytes = std::fs::read(&grown).unwrap();
    bytes.extend_from_slice(b"more");
    std::fs::write(&grown, &bytes).unwrap();
    let sneaky = src.join("d4/f40");
    let mtime =
        filetime::FileTime::from_last_modification_time(&std::fs::metadata(&sneaky).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&sneaky, fixtures::bytes(12345, 7000)).unwrap();
    filetime::set_file_mtime(&sneaky, mtime).unwrap();
    let third = env.json(&["backup"], 0);
    let unchanged = third["unchanged_tasks"].as_u64().unwrap();
    assert!(
        unchanged > 0 && unchanged <= tasks - 2,
        "the two changed files' tasks are read again: {third}"
    );
    let third_id = third["snapshot"].as_str().unwrap().to_owned();

    assert_eq!(
        restore(&env, first["snapshot"].as_str().unwrap(), "r1"),
        original
    );
    assert_eq!(
        restore(&env, second["snapshot"].as_str().unwrap(), "r2"),
        original
    );
    let now = fixtures::listing(&src);
    assert_ne!(now, original);
    assert_eq!(restore(&env, &third_id, "r3"), now);
    assert_eq!(
        std::fs::read(env.path("r3/d4/f40")).unwrap(),
        fixtures::bytes(12345, 7000),
        "same size and modification time, new contents: read again"
    );
}
