//! End to end through the real binary on real file trees: backup, restore and compare exactly;
//! damage a replica, then verify, repair, verify again; bad input gives clear errors.

mod common;

use std::process::Command as Proc;

use coldvault_testing::fixtures;
use common::Env;

fn backup(env: &Env) -> serde_json::Value {
    let r = env.json(&["backup"], 0);
    assert!(r["snapshot"].is_string(), "{r}");
    r
}

fn restore_exact(env: &Env, to: &str) {
    let (code, out, err) = env.run(&["restore", "latest", "--to", env.path(to).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fixtures::listing(&env.path("src")),
        fixtures::listing(&env.path(to))
    );
}

#[test]
fn backup_then_restore_is_exact() {
    let env = Env::odd_tree(2);
    let r = backup(&env);
    assert_eq!(r["failed_tasks"].as_array().unwrap().len(), 0);
    assert!(r["tasks"].as_u64().unwrap() >= 4, "{r}");
    assert!(r["files"].as_u64().unwrap() >= 12, "{r}");
    assert!(r["bytes_stored"].as_u64().unwrap() > 0);
    // Every data file is on exactly two nodes.
    let m = env.manifest("a");
    for t in m["tasks"].as_array().unwrap() {
        assert_eq!(t["data"]["nodes"].as_array().unwrap().len(), 2, "{t}");
    }
    // Staging is empty after the run.
    assert_eq!(std::fs::read_dir(env.path("staging")).unwrap().count(), 0);
    restore_exact(&env, "restored");
}

#[test]
fn the_same_job_plans_the_same_tasks() {
    let env = Env::odd_tree(2);
    let p1 = env.json(&["plan"], 0);
    let p2 = env.json(&["plan"], 0);
    assert_eq!(p1, p2);
    let tasks = p1["tasks"].as_array().unwrap();
    let parts = tasks
        .iter()
        .filter(|t| t["kind"] == "file_part" && t["path"] == "big.bin")
        .count();
    assert_eq!(parts, 5, "300000 bytes in 64KiB parts");
    for t in tasks {
        assert!(t["id"].is_string() && t["estimated_bytes"].is_u64(), "{t}");
    }
}

#[test]
fn a_second_backup_of_an_unchanged_tree_stores_nothing_new() {
    let env = Env::odd_tree(2);
    backup(&env);
    let before = env.data_files("a").len() + env.data_files("b").len() + env.data_files("c").len();
    backup(&env);
    let after = env.data_files("a").len() + env.data_files("b").len() + env.data_files("c").len();
    assert_eq!(before, after, "content-addressed data files are reused");
    let s = env.json(&["snapshots"], 0);
    assert_eq!(s["snapshots"].as_array().unwrap().len(), 2);
}

#[test]
fn data_files_restore_by_hand_with_tar_and_zstd() {
    let env = Env::odd_tree(2);
    backup(&env);
    let m = env.manifest("a");
    let out = env.path("byhand");
    std::fs::create_dir_all(&out).unwrap();
    let mut parts: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for t in m["tasks"].as_array().unwrap() {
        let node = t["data"]["nodes"][0].as_str().unwrap();
        let file = env.node_dir(node).join(t["data"]["key"].as_str().unwrap());
        match t["kind"].as_str().unwrap() {
            "files" => {
                let st = Proc::new("tar")
                    .args(["--zstd", "-xf"])
                    .arg(&file)
                    .current_dir(&out)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            "file_part" if t["path"] == "big.bin" => {
                parts.push((t["part"].as_u64().unwrap(), file))
            }
            "file_part" => {}
            k => panic!("{k}"),
        }
    }
    parts.sort();
    let joined = Proc::new("zstdcat")
        .args(parts.iter().map(|(_, p)| p))
        .output()
        .unwrap();
    assert!(joined.status.success());
    let hash = |b: &[u8]| blake3::hash(b).to_hex().to_string();
    assert_eq!(
        hash(&joined.stdout),
        hash(&std::fs::read(env.path("src/big.bin")).unwrap())
    );
    for f in [
        "plain.txt",
        "dir/a.txt",
        "line\nbreak.txt",
        "日本語のファイル.txt",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(env.path("src").join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_link(out.join("dangling")).unwrap(),
        std::path::PathBuf::from("does/not/exist")
    );
}

#[test]
fn a_deleted_node_directory_is_found_repaired_and_verified_clean() {
    let env = Env::odd_tree(2);
    backup(&env);
    std::fs::remove_dir_all(env.node_dir("a")).unwrap();
    let v = env.json(&["verify", "latest"], 1);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p["node"] == "a" && p["problem"] == "missing"),
        "{v}"
    );
    // Restore still works from the other replicas.
    restore_exact(&env, "restored");
    let r = env.json(&["repair", "latest"], 0);
    assert!(!r["copied"].as_array().unwrap().is_empty(), "{r}");
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_flipped_byte_is_found_by_read_data_and_repaired() {
    let env = Env::odd_tree(2);
    backup(&env);
    let victim = env.data_files("b").into_iter().next().unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    // Presence and size look fine; only the checksum finds it.
    env.json(&["verify", "latest"], 0);
    let v = env.json(&["verify", "latest", "--read-data"], 1);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["node"], "b");
    assert_eq!(problems[0]["problem"], "corrupt");
    // Restore skips the corrupt replica and says so.
    let (code, _, err) = env.run(&["restore", "latest", "--to", env.path("r").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fixtures::listing(&env.path("src")),
        fixtures::listing(&env.path("r"))
    );
    env.json(&["repair", "latest"], 0);
    env.json(&["verify", "latest", "--read-data"], 0);
}

#[test]
fn a_node_gone_for_good_is_replaced_by_repair() {
    let env = Env::odd_tree(2);
    backup(&env);
    std::fs::remove_dir_all(env.path("nodes/b")).unwrap();
    env.json(&["verify", "latest"], 1);
    let r = env.json(&["repair", "latest"], 0);
    let copied = r["copied"].as_array().unwrap();
    assert!(!copied.is_empty());
    assert!(copied.iter().all(|c| c["to"] != "b"), "{r}");
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert!(!v["warnings"].as_array().unwrap().is_empty(), "{v}");
    let m = env.manifest("a");
    for t in m["tasks"].as_array().unwrap() {
        let nodes = t["data"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(!nodes.contains(&"b".into()));
    }
    restore_exact(&env, "restored");
}

#[test]
fn too_few_reachable_nodes_is_refused_up_front_naming_them() {
    let env = Env::odd_tree(2);
    backup(&env);
    std::fs::remove_dir_all(env.path("nodes/b")).unwrap();
    std::fs::remove_dir_all(env.path("nodes/c")).unwrap();
    std::fs::write(env.path("src/new-file"), b"changed").unwrap();
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("only 1 of the 2 nodes needed"), "{err}");
    assert!(err.contains("node b") && err.contains("node c"), "{err}");
    assert!(err.contains("not reachable"), "{err}");
    let s = env.json(&["snapshots"], 0);
    assert_eq!(s["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(env.path("staging")).unwrap().count(), 0);
}

#[test]
fn one_unreachable_node_is_left_out_when_the_others_suffice() {
    let env = Env::odd_tree(2);
    backup(&env);
    std::fs::remove_dir_all(env.path("nodes/c")).unwrap();
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("warning") && err.contains("node c"), "{err}");
    let m = env.manifest("a");
    for t in m["tasks"].as_array().unwrap() {
        let mut nodes: Vec<&str> = t["data"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["a", "b"], "{t}");
    }
    restore_exact(&env, "restored");
}

#[test]
fn include_restores_only_matching_paths() {
    let env = Env::odd_tree(2);
    backup(&env);
    let to = env.path("some");
    let (code, _, err) = env.run(&[
        "restore",
        "latest",
        "--to",
        to.to_str().unwrap(),
        "--include",
        "dir",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(to.join("dir/nested/deep.bin").exists());
    assert!(!to.join("plain.txt").exists());
    assert!(!to.join("big.bin").exists());
    let (code, _, err) = env.run(&[
        "restore",
        "latest",
        "--to",
        env.path("big").to_str().unwrap(),
        "--include",
        "big.*",
    ]);
    assert_eq!(code, 0, "{err}");
    let hash = |p: &str| {
        blake3::hash(&std::fs::read(env.path(p)).unwrap())
            .to_hex()
            .to_string()
    };
    assert_eq!(hash("big/big.bin"), hash("src/big.bin"));
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let env = Env::odd_tree(1);
    backup(&env);
    let to = env.path("busy");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("plain.txt"), b"old").unwrap();
    let (code, _, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(to.join("plain.txt")).unwrap(), b"old");
    let (code, _, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fixtures::listing(&env.path("src")), fixtures::listing(&to));
}

#[test]
fn bad_job_files_name_the_line_or_key_and_exit_2() {
    let env = Env::odd_tree(2);
    let good = std::fs::read_to_string(&env.job).unwrap();
    let cases = [
        (good.replace("[split]", "[split"), "line 7"),
        (good.replace("replicas = 2", "replicas = 4"), "replicas = 4"),
        (
            good.replace("retries = 2", "retries = 2\nretrys = 3"),
            "unknown field `retrys`",
        ),
        (
            good.replace("file:nodes/c", "gopher://x"),
            "unknown scheme \"gopher\"",
        ),
        (
            good.replace("name = \"c\"", "name = \"a\""),
            "\"a\" is used twice",
        ),
        (
            good.replace("path = \"src\"", "path = \"nowhere\""),
            "nowhere",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&env.job, &text).unwrap();
        let (code, _, err) = env.run(&["plan"]);
        assert_eq!(code, 2, "{want}: {err}");
        assert!(
            err.contains(want) && err.contains("job.toml"),
            "want {want:?} in {err}"
        );
    }
}

#[test]
fn snapshots_exits_1_naming_a_manifest_no_node_can_read_and_0_while_one_copy_reads() {
    let env = Env::odd_tree(2);
    let id = backup(&env)["snapshot"].as_str().unwrap().to_owned();
    let manifest = |n: &str| env.node_dir(n).join(format!("snapshots/{id}.json"));
    let garble = |n: &str| std::fs::write(manifest(n), b"{ not a manifest").unwrap();
    garble("a");
    let (code, out, err) = env.run(&["snapshots", "--json"]);
    assert_eq!(code, 0, "one good copy lists the snapshot: {out}{err}");
    assert!(out.contains(&id), "{out}");
    assert!(err.contains("warning") && err.contains("node a"), "{err}");
    for n in ["b", "c"] {
        if manifest(n).exists() {
            garble(n);
        }
    }
    let (code, out, err) = env.run(&["snapshots", "--json"]);
    assert_eq!(code, 1, "no copy reads: {out}{err}");
    assert!(err.contains(&format!("snapshots/{id}.json")), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["snapshots"].as_array().unwrap().len(), 0);
    assert_eq!(doc["unreadable"][0], format!("snapshots/{id}.json"));
}

/// Rewrites the manifest of snapshot `id` on every node with `edit`.
fn edit_manifest(env: &Env, id: &str, edit: impl Fn(&mut serde_json::Value)) {
    for n in ["a", "b", "c"] {
        let path = env.node_dir(n).join(format!("snapshots/{id}.json"));
        let mut m = common::read_doc(&path);
        edit(&mut m);
        common::write_doc(&path, &m);
    }
}

#[test]
fn a_manifest_missing_a_part_of_a_file_is_damage_for_verify_and_restore_writes_nothing() {
    let env = Env::odd_tree(2);
    let id = backup(&env)["snapshot"].as_str().unwrap().to_owned();
    let is_part = |t: &serde_json::Value| t["kind"] == "file_part";
    let part_of = env.manifest("a")["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| is_part(t) && t["part"] == 1)
        .expect("the tree has a file stored in parts")["path"]
        .clone();
    edit_manifest(&env, &id, |m| {
        let tasks = m["tasks"].as_array_mut().unwrap();
        tasks.retain(|t| !(is_part(t) && t["path"] == part_of && t["part"] == 1));
    });
    let (code, out, err) = env.run(&["verify", "latest", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &report["problems"][0];
    assert_eq!(p["problem"], "incomplete", "{report}");
    assert!(p["detail"].as_str().unwrap().contains("part"), "{report}");
    let to = env.path("out");
    let (code, _, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("incomplete"), "{err}");
    assert!(!to.exists(), "nothing is written");
}

#[test]
fn a_forced_restore_never_writes_through_a_hard_link_planted_in_the_target() {
    let env = Env::odd_tree(2);
    backup(&env);
    let split: String = env.manifest("a")["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "file_part")
        .expect("the tree has a file stored in parts")["path"]
        .as_str()
        .unwrap()
        .to_owned();
    restore_exact(&env, "r");
    // Someone replaces the restored large file by a hard link to a file outside the target.
    let outside = env.path("outside.txt");
    std::fs::write(&outside, b"not yours").unwrap();
    let planted = env.path("r").join(&split);
    std::fs::remove_file(&planted).unwrap();
    std::fs::hard_link(&outside, &planted).unwrap();
    let (code, out, err) = env.run(&[
        "restore",
        "latest",
        "--to",
        env.path("r").to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    assert_eq!(
        fixtures::listing(&env.path("src")),
        fixtures::listing(&env.path("r"))
    );
}

#[test]
fn repair_never_writes_through_a_data_directory_replaced_by_a_symlink() {
    let env = Env::odd_tree(2);
    backup(&env);
    let files = env.data_files("a");
    let victim = &files[0];
    let hh = victim.parent().unwrap().to_path_buf();
    // The data directory is moved out of the node and a symlink left in its place; the replica
    // inside is gone, so repair wants to write it there again.
    let outside = env.path("outside");
    std::fs::rename(&hh, &outside).unwrap();
    std::fs::remove_file(outside.join(victim.file_name().unwrap())).unwrap();
    std::os::unix::fs::symlink(&outside, &hh).unwrap();
    let before: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    let (code, out, err) = env.run(&["repair", "latest"]);
    assert_ne!(code, 2, "{out}{err}");
    let after: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert_eq!(
        before.len(),
        after.len(),
        "nothing is written outside the node"
    );
    assert!(
        !outside.join(victim.file_name().unwrap()).exists(),
        "the replica is not written through the symlink"
    );
    let (code, out, err) = env.run(&["verify", "latest", "--read-data"]);
    assert_eq!(code, 0, "the copy went to another node: {out}{err}");
}

#[test]
fn backup_snapshots_and_restore_count_the_files_the_tree_holds() {
    let env = Env::odd_tree(2);
    fn regular_files(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    regular_files(&p)
                } else {
                    u64::from(m.is_file())
                }
            })
            .sum()
    }
    let files = regular_files(&env.path("src"));
    let b = backup(&env);
    assert!(
        env.manifest("a")["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "file_part"),
        "the tree has a file in parts"
    );
    assert_eq!(b["files"], files, "backup: {b}");
    let s = env.json(&["snapshots"], 0);
    assert_eq!(s["snapshots"][0]["files"], files, "snapshots: {s}");
    let to = env.path("r");
    let r = env.json(&["restore", "latest", "--to", to.to_str().unwrap()], 0);
    assert_eq!(r["files"], files, "restore: {r}");
}

#[test]
fn an_error_names_its_cause_once() {
    let env = Env::odd_tree(2);
    let missing = env.path("no-such-job.toml");
    let out = assert_cmd::Command::cargo_bin("coldvault")
        .unwrap()
        .args(["plan", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-job.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

#[test]
fn an_unknown_snapshot_is_a_clear_error() {
    let env = Env::odd_tree(2);
    backup(&env);
    let (code, _, err) = env.run(&[
        "restore",
        "ffff0000",
        "--to",
        env.path("x").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no snapshot \"ffff0000\""), "{err}");
}

#[test]
fn init_is_idempotent_and_refuses_a_foreign_repository() {
    let env = Env::odd_tree(2);
    let first = env.json(&["init"], 0);
    assert_eq!(first["created"].as_array().unwrap().len(), 3);
    let again = env.json(&["init"], 0);
    assert_eq!(again["existing"].as_array().unwrap().len(), 3);
    assert_eq!(first["repository_id"], again["repository_id"]);
    let marker = env.node_dir("c").join("config.json");
    let mut other = common::read_doc(&marker);
    other["repository_id"] = "0123456789abcdef0123456789abcdef".into();
    common::write_doc(&marker, &other);
    let (code, _, err) = env.run(&["init"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("different repositories") && err.contains(" c"),
        "{err}"
    );
}

#[test]
fn every_example_job_file_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            coldvault::Job::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "{n} examples");
}
