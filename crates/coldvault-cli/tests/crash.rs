//! Crash safety: a backup killed at any step — by a failpoint between the pipeline's steps, or by
//! `kill -9` at random moments — is resumed by running the same command again: the tasks whose
//! receipts were written are reused (not read or stored again), temporary objects and spools of
//! the dead run are removed, and the final snapshot restores exactly. No half-written snapshot is
//! ever listed.

mod common;

use coldvault_testing::fixtures;
use common::{walk, Env};

fn env_with_tree(files: usize) -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"16KiB\"",
        2,
    );
    let src = env.path("src");
    for i in 0..files {
        let dir = src.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), fixtures::bytes(i as u64, 12_000)).unwrap();
    }
    env
}

fn snapshots(env: &Env) -> usize {
    env.json(&["snapshots"], 0)["snapshots"]
        .as_array()
        .unwrap()
        .len()
}

/// What a dead run may leave and a resumed run must have removed.
fn leftovers(env: &Env) -> Vec<String> {
    let mut files = Vec::new();
    walk(&env.path("nodes"), &mut files);
    let mut out: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .filter(|f| f.contains(".tmp.") || f.contains("/runs/") || f.contains("/locks/"))
        .collect();
    if let Ok(spools) = std::fs::read_dir(env.path("staging")) {
        out.extend(spools.map(|e| e.unwrap().path().to_string_lossy().into_owned()));
    }
    out
}

#[test]
fn a_backup_killed_at_each_step_resumes_to_an_exact_snapshot() {
    for point in [
        "read",
        "staged",
        "stored-some",
        "stored",
        "receipt",
        "manifest",
    ] {
        let env = env_with_tree(40);
        let out = env
            .cmd(&["backup"])
            .env(
                "COLDVAULT_FAILPOINT",
                // `stored-some` is hit per copy: 4 times per range (its data file and its
                // index, 2 copies each), so the 9th is in a task started after one finished.
                format!(
                    "{point}:{}",
                    match point {
                        "manifest" => 1,
                        "stored-some" => 9,
                        _ => 5,
                    }
                ),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "{point}: the process was aborted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("failpoint {point} hit")),
            "{stderr}"
        );
        let committed = snapshots(&env);
        assert_eq!(
            committed,
            usize::from(point == "manifest"),
            "{point}: only a whole manifest makes a snapshot"
        );
        let r = env.json(&["backup"], 0);
        let reused = r["reused_tasks"].as_u64().unwrap();
        match point {
            // Receipts were written for the tasks stored before the abort.
            "stored" | "receipt" => assert!(reused >= 3, "{point}: {r}"),
            "read" | "staged" | "stored-some" => assert!(reused >= 1, "{point}: {r}"),
            // The run was committed: its receipts are not reused by the next run.
            _ => assert_eq!(reused, 0, "{point}: {r}"),
        }
        if reused > 0 {
            assert!(r["resumed_run"].is_string(), "{r}");
        }
        assert_eq!(snapshots(&env), committed + 1);
        assert!(leftovers(&env).is_empty(), "{point}: {:?}", leftovers(&env));
        env.assert_latest_restores_exactly();
    }
}

#[test]
fn a_backup_killed_at_random_moments_converges() {
    let env = env_with_tree(1500);
    let mut seed = std::process::id() as u64;
    let mut reused_total = 0;
    for _ in 0..3 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 50 + (seed >> 33) % 600;
        let mut child = env
            .spawnable(&["backup"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            break; // it finished before the kill: nothing to resume
        }
        // A run killed after its manifest was written has a whole snapshot; never a partial one.
        let listed = env.json(&["snapshots"], 0);
        for snap in listed["snapshots"].as_array().unwrap() {
            let id = snap["id"].as_str().unwrap();
            let v = env.json(&["verify", id, "--read-data"], 0);
            assert_eq!(v["ok"], true, "{v}");
        }
    }
    let r = env.json(&["backup"], 0);
    reused_total += r["reused_tasks"].as_u64().unwrap();
    assert!(leftovers(&env).is_empty(), "{:?}", leftovers(&env));
    env.assert_latest_restores_exactly();
    eprintln!("reused {reused_total} tasks after the kills");
}

/// Staging on a full disk: a clear error naming the cause, no snapshot, staging left empty.
/// The small disk is a 256 KiB tmpfs mounted in a private mount namespace (`unshare -rm`, which
/// needs no privileges), so the test runs the same as root or not.
#[test]
fn a_full_staging_disk_is_a_clear_error_and_commits_nothing() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"1MiB\"",
        2,
    );
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        // Incompressible: the staged files are as large as the data.
        std::fs::write(src.join(format!("r{i}")), fixtures::bytes(i, 900_000)).unwrap();
    }
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let (rc, out) = env.backup_in_mount_namespace(
        &format!("mount -t tmpfs -o size=256k tmpfs '{}'", staging.display()),
        &format!(
            "ls -A '{}' > '{}'",
            staging.display(),
            env.path("left").display()
        ),
    );
    assert_eq!(rc.trim(), "1", "some tasks failed");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(out["snapshot"].is_null(), "{out}");
    let errors = out["failed_tasks"].to_string();
    assert!(errors.contains("No space left on device"), "{errors}");
    assert!(errors.contains("staged file"), "{errors}");
    assert_eq!(
        std::fs::read_to_string(env.path("left")).unwrap(),
        "",
        "staging is empty"
    );
    assert_eq!(snapshots(&env), 0);
}
