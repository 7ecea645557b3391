//! `verify` at archive scale: `--read-data-subset N/M` and `P%`, `--max-duration`, and the
//! coverage record each node keeps of what was read and when, so that repeated partial runs
//! go round every replica before reading one again.

mod common;

use std::collections::BTreeMap;

use common::Env;
use serde_json::Value;

/// A tree of many data files (64 KiB tasks), two copies each on three disks.
fn env() -> Env {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    env
}

/// How many replicas each run read, by (node, data file): from the coverage record on every
/// node, which must be a self-checking document naming its node.
fn recorded(env: &Env) -> BTreeMap<(String, String), u64> {
    let mut all = BTreeMap::new();
    for n in ["a", "b", "c"] {
        let path = env.node_dir(n).join("coverage.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc["blake3"].is_string(), "{doc}");
        assert_eq!(doc["body"]["node"], n, "{doc}");
        for (key, when) in doc["body"]["read"].as_object().unwrap() {
            all.insert((n.to_owned(), key.clone()), when.as_u64().unwrap());
        }
    }
    all
}

fn replicas(v: &Value) -> u64 {
    v["coverage"]["replicas"].as_u64().unwrap()
}

#[test]
fn m_subset_runs_read_every_replica_once() {
    let env = env();
    let mut read = 0;
    let mut last = None;
    for n in 1..=4 {
        let v = env.json(
            &["verify", "latest", "--read-data-subset", &format!("{n}/4")],
            0,
        );
        read += v["bytes_read"].as_u64().unwrap();
        assert_eq!(
            v["coverage"]["never_read"].as_u64().unwrap() > 0,
            n < 4,
            "{v}"
        );
        last = Some(v);
    }
    let last = last.unwrap();
    assert_eq!(
        last["coverage"]["read_30d_replicas"],
        last["coverage"]["replicas"]
    );
    assert_eq!(
        last["coverage"]["read_30d_bytes"],
        last["coverage"]["bytes"]
    );
    // Every replica read once: the bytes add up to all replicas' bytes, as one full read.
    let full = env.json(&["verify", "latest", "--read-data"], 0);
    assert_eq!(read, full["bytes_read"].as_u64().unwrap());
    assert_eq!(recorded(&env).len() as u64, replicas(&full));
}

#[test]
fn share_runs_read_the_least_recently_read_first_and_go_round_everything() {
    let env = env();
    let first = env.json(&["verify", "latest", "--read-data-subset", "34%"], 0);
    let total = replicas(&first);
    let after_one = recorded(&env);
    assert!(!after_one.is_empty() && (after_one.len() as u64) < total);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.json(&["verify", "latest", "--read-data-subset", "34%"], 0);
    let after_two = recorded(&env);
    // The second run read none of what the first did.
    for (k, when) in &after_one {
        assert_eq!(after_two[k], *when, "{k:?} read again before the others");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = env.json(&["verify", "latest", "--read-data-subset", "34%"], 0);
    assert_eq!(recorded(&env).len() as u64, total, "{third}");
    assert_eq!(third["coverage"]["never_read"], 0, "{third}");
}

#[test]
fn a_run_out_of_time_reads_nothing_more_and_says_so() {
    let env = env();
    let v = env.json(&["verify", "latest", "--max-duration", "0s"], 0);
    assert_eq!(v["bytes_read"], 0, "{v}");
    assert_eq!(
        v["coverage"]["not_reached"], v["coverage"]["replicas"],
        "{v}"
    );
    let (c, out, _) = env.run(&["verify", "latest", "--max-duration", "0s"]);
    assert_eq!(c, 0);
    assert!(out.contains("not read: --max-duration ran out"), "{out}");
    assert!(recorded(&env).is_empty());
}

#[test]
fn a_damaged_coverage_record_is_a_warning_and_only_makes_verify_read_more() {
    let env = env();
    env.json(&["verify", "latest", "--read-data"], 0);
    let path = env.node_dir("a").join("coverage.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"read\"", "\"reaD\"", 1)).unwrap();
    let v = env.json(&["verify", "latest", "--read-data-subset", "1%"], 0);
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("coverage record of node a") && warnings.contains("never read"),
        "{v}"
    );
    // Node a's replicas now count as never read, so they come first.
    let never = v["coverage"]["never_read"].as_u64().unwrap();
    assert!(never > 0, "{v}");
    // The record was written anew, checksum and all.
    assert!(recorded(&env).keys().any(|(n, _)| n == "a"));
}

#[test]
fn a_bad_subset_is_refused_with_its_form() {
    let env = env();
    let (c, _, err) = env.run(&["verify", "latest", "--read-data-subset", "5/4"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("N must be between 1 and M"), "{err}");
}

#[test]
fn a_share_is_read_from_the_nodes_that_answer_and_a_damaged_replica_is_not_covered() {
    let env = env();
    // Node c is unmounted: its replicas would be the never-read ones that come first.
    std::fs::rename(env.path("nodes/c"), env.path("c-away")).unwrap();
    let v = env.json(&["verify", "latest", "--read-data-subset", "50%"], 1);
    assert!(v["bytes_read"].as_u64().unwrap() > 0, "{v}");
    let read: Vec<_> = recorded(&env).into_keys().collect();
    assert!(
        !read.is_empty() && read.iter().all(|(n, _)| n != "c"),
        "{read:?}"
    );
    std::fs::rename(env.path("c-away"), env.path("nodes/c")).unwrap();

    // A replica whose bytes are wrong is read, found corrupt, and not counted as covered.
    let victim = env.data_files("a").remove(0);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let v = env.json(&["verify", "latest", "--read-data"], 1);
    assert!(v["problems"].to_string().contains("corrupt"), "{v}");
    assert_eq!(v["coverage"]["never_read"], 1, "{v}");
}
