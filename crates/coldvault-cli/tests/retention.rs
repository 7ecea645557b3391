//! Locking, forget and prune end to end: a second backup of a job is refused naming the holder
//! (or waits when asked), a dead holder's lock is broken, verify and restore run meanwhile;
//! forget keeps what the policy says and prune deletes exactly the data files nothing needs —
//! also while backups run at the same time.

mod common;

use coldvault_testing::fixtures;
use common::Env;

fn tree_env(files: usize) -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    change(&env, 0, files);
    env
}

/// Rewrites `files` small files with contents derived from `round`.
fn change(env: &Env, round: u64, files: usize) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        let dir = src.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}")),
            fixtures::bytes(round * 1000 + i as u64, 9000),
        )
        .unwrap();
    }
}

/// Plants a backup lock held by `pid` on this host in every node.
fn plant_lock(env: &Env, pid: u32, started: &str) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    for n in ["a", "b", "c"] {
        let dir = env.node_dir(n).join("locks");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = serde_json::json!({
            "kind": "backup", "id": "planted0", "host": host, "pid": pid,
            "started": started, "refreshed": coldvault::util::now_rfc3339(),
        });
        std::fs::write(dir.join("backup-planted0.json"), lock.to_string()).unwrap();
    }
}

fn remove_lock(env: &Env) {
    for n in ["a", "b", "c"] {
        let _ = std::fs::remove_file(env.node_dir(n).join("locks/backup-planted0.json"));
    }
}

#[test]
fn a_second_backup_is_refused_naming_the_holder_and_verify_restore_still_run() {
    let env = tree_env(40);
    env.json(&["backup"], 0);
    let started = "2026-11-25T10:00:00.000000000Z";
    plant_lock(&env, std::process::id(), started);
    let (c, _, err) = env.run(&["backup"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("another backup of this job is running")
            && err.contains(&format!("pid {}", std::process::id()))
            && err.contains(started)
            && err.contains("host "),
        "{err}"
    );
    env.assert_latest_restores_exactly();
}

#[test]
fn backup_with_wait_runs_once_the_holder_is_gone() {
    let env = tree_env(20);
    plant_lock(&env, std::process::id(), "2026-11-25T10:00:00Z");
    let child = env
        .spawnable(&["backup", "--wait", "60s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        env.json(&["snapshots"], 0)["snapshots"]
            .as_array()
            .unwrap()
            .is_empty(),
        "it waited"
    );
    remove_lock(&env);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.json(&["snapshots"], 0)["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_dead_holders_lock_is_broken_and_said_so() {
    let env = tree_env(20);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    plant_lock(&env, pid, "2026-11-25T10:00:00Z");
    let (c, out, err) = env.run(&["backup"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        err.contains("removed the stale backup lock of host")
            && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    let locks = std::fs::read_dir(env.node_dir("a").join("locks"))
        .unwrap()
        .count();
    assert_eq!(locks, 0, "the backup removed its own lock too");
}

#[test]
fn forget_keeps_the_policy_and_prune_deletes_exactly_what_nothing_needs() {
    let env = tree_env(30);
    let mut ids = Vec::new();
    for round in 0..4 {
        change(&env, round, 30);
        ids.push(
            env.json(&["backup"], 0)["snapshot"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let before: Vec<_> = ["a", "b", "c"].iter().map(|n| env.data_files(n)).collect();
    let dry = env.json(&["forget", "--keep-last", "2", "--dry-run", "--prune"], 0);
    assert_eq!(dry["remove"].as_array().unwrap().len(), 2, "{dry}");
    assert!(dry["prune"]["unreferenced"].as_u64().unwrap() > 0, "{dry}");
    let after_dry: Vec<_> = ["a", "b", "c"].iter().map(|n| env.data_files(n)).collect();
    assert_eq!(before, after_dry, "--dry-run changes nothing");
    assert_eq!(
        env.json(&["snapshots"], 0)["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let r = env.json(&["forget", "--keep-last", "2", "--prune"], 0);
    let removed: Vec<&str> = r["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(removed, [&ids[0][..], &ids[1][..]], "{r}");
    let p = &r["prune"];
    assert_eq!(p["deleted"], p["unreferenced"], "{r}");
    assert!(p["deleted"].as_u64().unwrap() > 0 && p["bytes_freed"].as_u64().unwrap() > 0);
    let snaps = env.json(&["snapshots"], 0);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 2);
    for id in &ids[2..] {
        let v = env.json(&["verify", id, "--read-data"], 0);
        assert_eq!(v["ok"], true, "{v}");
    }
    // Every data file left is needed by a remaining snapshot.
    let again = env.json(&["forget", "--prune"], 0);
    assert_eq!(again["prune"]["unreferenced"], 0, "{again}");
    let to = env.path("r");
    env.json(&["restore", "latest", "--to", to.to_str().unwrap()], 0);
    assert_eq!(
        fixtures::listing(&env.path("src")),
        fixtures::listing(&env.path("r"))
    );
    let (c, _, err) = env.run(&["forget"]);
    assert_eq!(c, 2);
    assert!(err.contains("say what to keep"), "{err}");
}

#[test]
fn prune_running_with_backups_never_deletes_what_they_need() {
    let env = tree_env(200);
    env.json(&["backup"], 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (job, stop) = (env.job.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("coldvault"))
                    .args([
                        "forget".as_ref(),
                        job.as_os_str(),
                        "--keep-last".as_ref(),
                        "1".as_ref(),
                        "--prune".as_ref(),
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    for round in 1..6 {
        change(&env, round, 200);
        env.json(&["backup"], 0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = pruner.join().unwrap();
    assert!(runs >= 2, "prune ran {runs} times during the backups");
    env.json(&["forget", "--keep-last", "1", "--prune"], 0);
    env.assert_latest_restores_exactly();
}

#[test]
fn two_real_backups_at_once_one_refuses_naming_the_other() {
    let env = tree_env(1500);
    let first = env
        .spawnable(&["backup", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    // Wait until the first holds its lock.
    let locks = env.node_dir("a").join("locks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&locks).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first backup took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (c, _, err) = env.run(&["backup"]);
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c, 2, "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert_eq!(
        env.json(&["snapshots"], 0)["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Two first backups (no `init`) started together, twenty times: every node ends with the same
/// repository id, and both snapshots restore exactly.
#[test]
fn two_first_backups_at_once_end_with_one_repository_twenty_times() {
    for round in 0..20 {
        let env = tree_env(40);
        let spawn = || {
            env.spawnable(&["backup", "--wait", "60s", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (spawn(), spawn());
        for out in [first.wait_with_output(), second.wait_with_output()] {
            let out = out.unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ids: std::collections::BTreeSet<String> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let m = common::read_doc(&env.node_dir(n).join("config.json"));
                m["repository_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        let snaps = env.json(&["snapshots"], 0);
        let snaps = snaps["snapshots"].as_array().unwrap();
        assert_eq!(snaps.len(), 2, "round {round}");
        for (i, s) in snaps.iter().enumerate() {
            let to = env.path(&format!("r{i}"));
            let id = s["id"].as_str().unwrap();
            let (code, _, err) = env.run(&["restore", id, "--to", to.to_str().unwrap()]);
            assert_eq!(code, 0, "round {round}: {err}");
            assert_eq!(
                fixtures::listing(&env.path("src")),
                fixtures::listing(&to),
                "round {round}"
            );
        }
    }
}
