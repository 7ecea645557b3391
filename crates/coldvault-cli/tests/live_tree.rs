//! File trees as they really are, through the real binary: files rewritten while a backup reads
//! them, entries removed mid-run, entries the backup user cannot read, excludes, and coldvault's
//! own directories inside the tree. What must hold: a restored file is bytes it really held, and
//! whatever a backup did not store is named in its output and its snapshot.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

/// Regular files under `root`: relative path → bytes.
fn files_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = Vec::new();
    common::walk(root, &mut all);
    all.into_iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, fs::read(&p).unwrap())
        })
        .collect()
}

/// Version `k` of the live file `name`: its length changes with every version, and its bytes
/// name the file and the version, so a restored file tells which version it is.
fn version(name: &str, k: u64) -> Vec<u8> {
    let len = 70_000 + (k * 7_919 % 400_000) as usize;
    let unit = format!("{name}:{k};");
    unit.as_bytes().iter().copied().cycle().take(len).collect()
}

/// The version `bytes` are a prefix of (`Some(true)` when whole), `None` when they are no
/// version's prefix at all (padded with zeros, cut and joined with another version).
fn which_version(name: &str, bytes: &[u8]) -> Option<bool> {
    if bytes.is_empty() {
        return Some(false);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    let k: u64 = text.split(';').next()?.rsplit(':').next()?.parse().ok()?;
    let want = version(name, k);
    (want.starts_with(bytes)).then_some(want.len() == bytes.len())
}

fn warnings(v: &Value) -> Vec<(String, String)> {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().to_owned(),
                w["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn backup_json(env: &Env, extra: &[&str], env_vars: &[(&str, &str)]) -> (i32, Value, String) {
    let mut c = env.spawnable(&["backup", "--json"]);
    c.args(extra);
    for (k, v) in env_vars {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn restore_latest(env: &Env, to: &str) -> PathBuf {
    let to = env.path(to);
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    to
}

#[test]
fn files_rewritten_while_read_come_back_as_bytes_they_really_held() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"256KiB\"",
        2,
    );
    let live = env.path("src/live");
    fs::create_dir_all(&live).unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    for n in &names {
        fs::write(live.join(n), version(n, 0)).unwrap();
    }
    for i in 0..100 {
        fs::write(
            env.path(&format!("src/still-{i:03}")),
            format!("{i}").repeat(999),
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes, live, names) =
            (stop.clone(), writes.clone(), live.clone(), names.clone());
        std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let n = &names[(k % names.len() as u64) as usize];
                // Rewritten in place: truncated, then written, growing and shrinking.
                fs::write(live.join(n), version(n, k)).unwrap();
                k += 1;
                writes.store(k, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Backups until the writer has rewritten each file many times during them.
    let mut last = Value::Null;
    let mut runs = 0;
    while runs < 3 || (writes.load(Ordering::Relaxed) < 400 && runs < 40) {
        let (code, v, err) = backup_json(&env, &[], &[]);
        assert!(code == 0 || code == 3, "exit {code}: {err}");
        assert_eq!(code == 3, v["left_out"].as_u64().unwrap() > 0, "{v}");
        last = v;
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let writes = writes.load(Ordering::Relaxed);
    assert!(
        writes >= 400,
        "the writer ran only {writes} times in {runs} backups"
    );
    let named = warnings(&last);
    let to = restore_latest(&env, "restored");
    let got = files_of(&to);
    for n in &names {
        let rel = format!("live/{n}");
        let Some(bytes) = got.get(&rel) else {
            // Only a file the snapshot says it left out may be missing.
            assert!(
                named.iter().any(|(p, _)| p == &rel),
                "{rel} missing, unnamed: {last}"
            );
            continue;
        };
        match which_version(n, bytes) {
            None => {
                let m = env.manifest("a");
                let mine: Vec<&Value> = m["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["path"] == rel.as_str() || t["kind"] == "files")
                    .collect();
                panic!(
                    "{rel}: {} bytes that no version of it held; its tasks: {mine:?}",
                    bytes.len()
                )
            }
            Some(true) => {}
            // A read during a write: stored only when every read saw a change, and said so.
            Some(false) => assert!(
                named.contains(&(rel.clone(), "changed".to_owned())),
                "{rel}: a part of a version, unnamed: {last}"
            ),
        }
    }
    for i in 0..100 {
        let rel = format!("still-{i:03}");
        assert_eq!(got[&rel], format!("{i}").repeat(999).into_bytes(), "{rel}");
    }
}

/// Runs a backup that pauses at the `nth` hit of failpoint `at`, calls `meanwhile`, and lets it
/// finish; returns (exit code, JSON report, stderr).
fn backup_pausing_at(
    env: &Env,
    at: &str,
    extra: &[&str],
    meanwhile: impl FnOnce(),
) -> (i32, Value, String) {
    let flag = env.path("paused");
    let mut c = env.spawnable(&["backup", "--json"]);
    c.args(extra)
        .env("COLDVAULT_PAUSE", at)
        .env("COLDVAULT_PAUSE_FILE", &flag)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    while !flag.exists() {
        assert!(Instant::now() < until, "the backup never reached {at}");
        std::thread::sleep(Duration::from_millis(10));
    }
    meanwhile();
    fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), v, err)
}

#[test]
fn a_directory_and_a_split_file_removed_mid_run_are_warnings_and_the_backup_goes_on() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    // `a-big` comes first in the walk: its three parts are the first tasks.
    fs::create_dir_all(env.path("src/gone/deeper")).unwrap();
    fs::write(env.path("src/a-big"), vec![7u8; 150_000]).unwrap();
    for i in 0..20 {
        fs::write(env.path(&format!("src/gone/deeper/{i}")), vec![i; 3000]).unwrap();
        fs::write(env.path(&format!("src/kept-{i}")), vec![i; 3000]).unwrap();
    }
    let (code, v, err) = backup_pausing_at(&env, "stored:1", &["--parallel", "1"], || {
        fs::remove_file(env.path("src/a-big")).unwrap();
        fs::remove_dir_all(env.path("src/gone")).unwrap();
    });
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(v["snapshot"].is_string(), "{v}");
    let w = warnings(&v);
    // Named once, though each of its three parts found it gone. (A directory removed before the
    // read reached it is simply not there, as in a backup taken a moment later.)
    assert_eq!(w, [("a-big".to_owned(), "vanished".to_owned())], "{v}");
    let to = restore_latest(&env, "restored");
    assert_eq!(files_of(&to), files_of(&env.path("src")));
}

#[test]
fn a_resumed_run_never_joins_parts_read_before_and_after_a_rewrite() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/a-big"), vec![1u8; 150_000]).unwrap();
    fs::write(env.path("src/small"), b"small").unwrap();
    // The first run dies right after the receipt of the file's first part.
    let out = env
        .spawnable(&["backup", "--parallel", "1"])
        .env("COLDVAULT_FAILPOINT", "receipt:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The same size, other bytes: only the times and the change time tell.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(env.path("src/a-big"), vec![2u8; 150_000]).unwrap();
    let (code, v, err) = backup_json(&env, &[], &[]);
    assert_eq!(code, 0, "{v}\n{err}");
    let to = restore_latest(&env, "restored");
    assert_eq!(fs::read(to.join("a-big")).unwrap(), vec![2u8; 150_000]);
}

/// A copy of the binary anyone may run, for runs as another user.
fn public_binary(env: &Env) -> PathBuf {
    let bin = env.path("coldvault");
    fs::copy(assert_cmd::cargo::cargo_bin("coldvault"), &bin).unwrap();
    bin
}

/// Runs `coldvault ARGS` as the user `nobody`; returns (exit code, stdout, stderr).
fn as_nobody(env: &Env, bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin)
        .arg(args[0])
        .arg(&env.job)
        .args(&args[1..])
        .output()
        .expect("setpriv (util-linux) runs: scripts/install-test-deps installs it");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn open_to_all(dir: &Path) {
    let ok = std::process::Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn unreadable_entries_are_left_out_by_name_with_exit_3_and_on_unreadable_fail_exits_1() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test runs as root, to run the backup as another user"
    );
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    fs::create_dir_all(env.path("src/locked")).unwrap();
    fs::write(env.path("src/locked/inside"), b"x").unwrap();
    fs::write(env.path("src/secret"), b"top secret").unwrap();
    fs::write(env.path("src/open"), b"anyone").unwrap();
    open_to_all(env.dir.path());
    let bin = public_binary(&env);
    set_mode(&env.path("src/secret"), 0o000);
    set_mode(&env.path("src/locked"), 0o000);

    let (code, out, err) = as_nobody(&env, &bin, &["backup", "--json"]);
    assert_eq!(code, 3, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["left_out"], 2, "{v}");
    let w = warnings(&v);
    assert!(w.contains(&("secret".into(), "unreadable".into())), "{v}");
    assert!(w.contains(&("locked".into(), "unreadable".into())), "{v}");
    // The human output names them and says where the full list is.
    let (code, _, err) = as_nobody(&env, &bin, &["backup"]);
    assert_eq!(code, 3);
    assert!(err.contains("secret: unreadable"), "{err}");
    assert!(err.contains("incomplete"), "{err}");
    let (_, listing, _) = as_nobody(&env, &bin, &["snapshots", "--json"]);
    let listing: Value = serde_json::from_str(&listing).unwrap();
    for s in listing["snapshots"].as_array().unwrap() {
        assert_eq!(s["left_out"], 2, "{s}");
    }
    let (_, human, _) = as_nobody(&env, &bin, &["snapshots"]);
    assert!(human.contains("incomplete: 2 entries left out"), "{human}");
    let to = restore_latest(&env, "restored");
    assert_eq!(fs::read(to.join("open")).unwrap(), b"anyone");
    assert!(!to.join("secret").exists());

    // All or nothing, when the job says so.
    let text = fs::read_to_string(&env.job)
        .unwrap()
        .replace("path = \"src\"", "path = \"src\"\non_unreadable = \"fail\"");
    fs::write(&env.job, text).unwrap();
    let (code, out, err) = as_nobody(&env, &bin, &["backup", "--json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["snapshot"].is_null(), "{v}");
    assert!(v.to_string().contains("cannot list directory"), "{v}");
    assert!(v.to_string().contains("src/locked"), "{v}");
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn excluded_entries_are_in_no_data_file_and_the_plan_counts_them() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"\nexclude = [\"*.tmp\", \"/cache/\", \"**/node_modules/\"]\nexclude_if_present = [\".nobackup\"]",
        "target_bytes = \"64KiB\"",
        2,
    );
    let put = |rel: &str, text: &str| {
        let p = env.path(&format!("src/{rel}"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    for left in [
        "a.tmp",
        "deep/er/b.tmp",
        "cache/c",
        "node_modules/m.js",
        "app/node_modules/lib/n.js",
        "tagged/.nobackup",
        "tagged/t",
    ] {
        put(left, &format!("LEFT-OUT {left}"));
    }
    for kept in ["keep.txt", "deep/er/keep", "app/cache/kept", "app/main.js"] {
        put(kept, &format!("KEPT {kept}"));
    }
    let plan = env.json(&["plan"], 0);
    assert!(
        plan["notes"].to_string().contains("6 entries left out"),
        "{plan}"
    );
    env.json(&["backup"], 0);
    let to = restore_latest(&env, "restored");
    let got: Vec<String> = files_of(&to).into_keys().collect();
    assert_eq!(
        got,
        ["app/cache/kept", "app/main.js", "deep/er/keep", "keep.txt"]
    );
    for f in env.data_files("a") {
        let out = std::process::Command::new("zstdcat")
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("LEFT-OUT"),
            "{} holds an excluded file",
            f.display()
        );
    }
}

#[test]
fn nodes_and_staging_inside_the_tree_are_left_out_with_a_note() {
    let env = Env::new("type = \"fs\"\npath = \".\"", "target_bytes = \"64KiB\"", 2);
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/f"), b"data").unwrap();
    let plan = env.json(&["plan"], 0);
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("node a lies inside the tree: nodes/a"),
        "{plan}"
    );
    assert!(
        notes.contains("the staging directory lies inside the tree"),
        "{plan}"
    );
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("note: node b lies inside the tree"), "{out}");
    // A second backup does not store the first one's data files inside itself.
    env.json(&["backup"], 0);
    let to = restore_latest(&env, "restored");
    let got: Vec<String> = files_of(&to).into_keys().collect();
    assert_eq!(got, ["job.toml", "src/f"]);
}

/// The other file system is a tmpfs mounted in a private mount namespace (`unshare -rm`).
#[test]
fn one_file_system_stores_a_mount_point_but_nothing_below_it() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"\none_file_system = true",
        "target_bytes = \"64KiB\"",
        2,
    );
    fs::create_dir_all(env.path("src/mnt")).unwrap();
    fs::write(env.path("src/here"), b"ON THE ROOT'S FILE SYSTEM").unwrap();
    let mnt = env.path("src/mnt").display().to_string();
    let setup =
        format!("mount -t tmpfs tmpfs '{mnt}' && echo 'ON ANOTHER FILE SYSTEM' > '{mnt}/inside'");
    let (rc, out) = env.backup_in_mount_namespace(&setup, "");
    assert_eq!(rc.trim(), "0", "{out}");
    let to = restore_latest(&env, "restored");
    assert!(to.join("mnt").is_dir(), "the mount point is stored");
    assert_eq!(fs::read_dir(to.join("mnt")).unwrap().count(), 0);
    assert_eq!(
        fs::read(to.join("here")).unwrap(),
        b"ON THE ROOT'S FILE SYSTEM"
    );
    for f in env.data_files("a") {
        let out = std::process::Command::new("zstdcat")
            .arg(&f)
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains("ANOTHER FILE SYSTEM"));
    }
}
