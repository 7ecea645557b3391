//! Healing from the source (issue #12 item 3): a data file damaged on every replica, found by
//! `verify --read-data` or by a restore, is recorded as damaged on the nodes; the next backup
//! does not take its task as unchanged, reads it again from the (intact) source and stores good
//! copies over the damaged ones, so the new snapshot and the old ones naming the same key verify
//! clean. `repair` removes the record of a copy it replaces.

mod common;

use std::path::PathBuf;

use coldvault_testing::fixtures;
use common::{walk, Env};
use serde_json::Value;

/// The first task's data file of the latest snapshot: (key, nodes naming it).
fn a_data_file(env: &Env) -> (String, Vec<String>) {
    let m = env.manifest("a");
    let data = &m["tasks"][0]["data"];
    let nodes = data["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    (data["key"].as_str().unwrap().to_owned(), nodes)
}

/// Flips one byte in the middle of `key` on `node`: same size, wrong checksum.
fn flip(env: &Env, node: &str, key: &str) {
    let path = env.node_dir(node).join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
}

/// The damage records on `node`.
fn records(env: &Env, node: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&env.node_dir(node).join("damaged"), &mut out);
    out
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.json(&["snapshots"], 0)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn restore_exact(env: &Env, spec: &str, to: &str) {
    let (code, out, err) = env.run(&["restore", spec, "--to", env.path(to).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fixtures::listing(&env.path("src")),
        fixtures::listing(&env.path(to))
    );
}

/// A backup of the untouched source: exit 0, one task read again, the rest unchanged.
fn healing_backup(env: &Env) -> Value {
    let r = env.json(&["backup"], 0);
    assert!(r["snapshot"].is_string(), "{r}");
    let tasks = r["tasks"].as_u64().unwrap();
    assert_eq!(
        r["unchanged_tasks"],
        tasks - 1,
        "only the damaged task is read: {r}"
    );
    r
}

#[test]
fn a_data_file_damaged_on_every_replica_found_by_verify_is_healed_by_the_next_backup() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let old = snapshot_ids(&env).remove(0);
    let (key, nodes) = a_data_file(&env);
    for n in &nodes {
        flip(&env, n, &key);
    }
    let v = env.json(&["verify", "latest", "--read-data"], 1);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    assert!(problems.iter().all(|p| p["problem"] == "corrupt"), "{v}");
    for n in &nodes {
        assert_eq!(
            records(&env, n).len(),
            1,
            "the damage is recorded on node {n}"
        );
    }
    healing_backup(&env);
    for n in ["a", "b", "c"] {
        assert!(records(&env, n).is_empty(), "records cleared on node {n}");
    }
    env.assert_latest_restores_exactly();
    let m = env.manifest("a");
    assert_eq!(
        m["tasks"][0]["data"]["key"],
        key.as_str(),
        "the same bytes again"
    );
    // The older snapshot names the same key, which now holds good bytes on its nodes.
    env.json(&["verify", &old, "--read-data"], 0);
    restore_exact(&env, &old, "old");
}

#[test]
fn a_data_file_damaged_on_every_replica_found_by_a_restore_is_healed_by_the_next_backup() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let (key, nodes) = a_data_file(&env);
    for n in &nodes {
        flip(&env, n, &key);
    }
    let (code, out, err) = env.run(&[
        "restore",
        "latest",
        "--to",
        env.path("r1").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no healthy replica"), "{err}");
    for n in &nodes {
        assert_eq!(
            records(&env, n).len(),
            1,
            "the damage is recorded on node {n}"
        );
    }
    healing_backup(&env);
    env.assert_latest_restores_exactly();
    for id in snapshot_ids(&env) {
        env.json(&["verify", &id, "--read-data"], 0);
    }
}

#[test]
fn a_backup_without_recorded_damage_trusts_a_copy_of_the_right_size() {
    // The cost side of the choice: damage nobody has found yet is not looked for by a backup
    // (that would mean reading every stored byte); the next verify --read-data finds it.
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let (key, nodes) = a_data_file(&env);
    for n in &nodes {
        flip(&env, n, &key);
    }
    let r = env.json(&["backup"], 0);
    assert_eq!(r["unchanged_tasks"], r["tasks"], "{r}");
    env.json(&["verify", "latest", "--read-data"], 1);
    healing_backup(&env);
    env.assert_latest_restores_exactly();
}

#[test]
fn one_damaged_replica_is_healed_by_the_next_backup_and_its_record_removed() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let (key, nodes) = a_data_file(&env);
    flip(&env, &nodes[1], &key);
    env.json(&["verify", "latest", "--read-data"], 1);
    assert_eq!(records(&env, &nodes[1]).len(), 1);
    assert!(
        records(&env, &nodes[0]).is_empty(),
        "a good copy is not recorded"
    );
    healing_backup(&env);
    assert!(records(&env, &nodes[1]).is_empty());
    for id in snapshot_ids(&env) {
        env.json(&["verify", &id, "--read-data"], 0);
    }
}

#[test]
fn repair_removes_the_record_of_a_copy_it_replaces() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let (key, nodes) = a_data_file(&env);
    flip(&env, &nodes[0], &key);
    env.json(&["verify", "latest", "--read-data"], 1);
    assert_eq!(records(&env, &nodes[0]).len(), 1);
    let r = env.json(&["repair", "latest"], 0);
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        records(&env, &nodes[0]).is_empty(),
        "record removed by repair"
    );
    env.json(&["verify", "latest", "--read-data"], 0);
    // Nothing is left for the next backup to heal: every task is unchanged.
    let b = env.json(&["backup"], 0);
    assert_eq!(b["unchanged_tasks"], b["tasks"], "{b}");
}

#[test]
fn a_resumed_run_does_not_reuse_a_receipt_whose_data_file_is_recorded_damaged() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    std::fs::write(env.path("src/dir/a.txt"), b"changed").unwrap();
    let out = env
        .cmd(&["backup"])
        .env("COLDVAULT_FAILPOINT", "receipt:1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "the run died after its first receipt"
    );
    let mut receipts = Vec::new();
    walk(&env.node_dir("a").join("runs"), &mut receipts);
    assert_eq!(receipts.len(), 1);
    let r: Value = common::read_doc(&receipts[0]);
    // The data file the run stored: the range's delta (its data file is the parent's).
    let data = r["entry"]["deltas"]
        .as_array()
        .and_then(|d| d.last())
        .map_or(&r["entry"]["data"], |d| &d["data"]);
    let key = data["key"].as_str().unwrap();
    // Damaged on every node, and recorded so (as a verify of a snapshot naming the same bytes
    // would have left it).
    for n in data["nodes"].as_array().unwrap() {
        let n = n.as_str().unwrap();
        flip(&env, n, key);
        let record = env.node_dir(n).join("damaged").join(format!("{key}.json"));
        std::fs::create_dir_all(record.parent().unwrap()).unwrap();
        let text = serde_json::json!({
            "format": 1, "key": key, "node": n, "checksum": data["checksum"],
            "size": data["size"], "found_by": "verify",
            "time": "2026-11-25T10:00:00Z", "detail": "corrupt: checksum mismatch",
        });
        std::fs::write(record, text.to_string()).unwrap();
    }
    let b = env.json(&["backup"], 0);
    assert_eq!(b["reused_tasks"], 0, "{b}");
    env.assert_latest_restores_exactly();
    for n in ["a", "b", "c"] {
        assert!(records(&env, n).is_empty(), "records cleared on node {n}");
    }
}

#[test]
fn a_damage_record_is_a_small_json_object_naming_the_key() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let (key, nodes) = a_data_file(&env);
    flip(&env, &nodes[0], &key);
    env.json(&["verify", "latest", "--read-data"], 1);
    let rec = records(&env, &nodes[0]);
    assert_eq!(rec.len(), 1);
    let want = env
        .node_dir(&nodes[0])
        .join("damaged")
        .join(format!("{key}.json"));
    assert_eq!(rec[0], want);
    let v: Value = serde_json::from_slice(&std::fs::read(&rec[0]).unwrap()).unwrap();
    assert_eq!(v["format"], 1, "{v}");
    assert_eq!(v["key"], key.as_str(), "{v}");
    assert_eq!(v["node"], nodes[0].as_str(), "{v}");
    assert_eq!(v["found_by"], "verify", "{v}");
    assert!(v["checksum"].as_str().unwrap().len() == 64, "{v}");
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("checksum"), "{v}");
}

#[test]
fn in_an_encrypted_repository_the_damaged_task_is_stored_again_under_a_new_key() {
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = common::keygen(keys.path(), "key.txt");
    let env = Env::odd_tree(2);
    let text = std::fs::read_to_string(&env.job).unwrap().replace(
        "\n[run]",
        &format!(
            "\n[repository.encryption]\nrecipients = [\"{public}\"]\nidentity_file = \"{}\"\n\n[run]",
            identity.display()
        ),
    );
    std::fs::write(&env.job, text).unwrap();
    env.json(&["backup"], 0);
    let old = snapshot_ids(&env).remove(0);
    // Manifests are sealed here: take a data file of node a and the nodes that hold it.
    let path = env.data_files("a").remove(0);
    let key = path
        .strip_prefix(env.node_dir("a"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let nodes: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| env.node_dir(n).join(&key).exists())
        .collect();
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        flip(&env, n, &key);
    }
    env.json(&["verify", "latest", "--read-data"], 1);
    healing_backup(&env);
    env.assert_latest_restores_exactly();
    // age encrypts with a fresh file key, so the same source gives other stored bytes, under
    // another key: the new snapshot is whole; the old one still names the damaged file, whose
    // record stays, and repair cannot help it (no healthy replica).
    env.json(&["verify", &old, "--read-data"], 1);
    for n in &nodes {
        assert_eq!(records(&env, n).len(), 1, "the record stays on node {n}");
    }
    // Later backups are not disturbed by the record: nothing of the latest snapshot is damaged.
    let b = env.json(&["backup"], 0);
    assert_eq!(b["unchanged_tasks"], b["tasks"], "{b}");
    // Prune deletes the damaged file once no snapshot names it, and its records with it.
    let f = env.json(&["forget", "--keep-last", "1", "--prune"], 0);
    assert_eq!(f["prune"]["damage_records"], 2, "{f}");
    for n in &nodes {
        assert!(records(&env, n).is_empty(), "records pruned on node {n}");
        assert!(!env.node_dir(n).join(&key).exists());
    }
    env.assert_latest_restores_exactly();
}
