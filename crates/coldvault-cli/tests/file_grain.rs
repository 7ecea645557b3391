//! Incremental backups at the grain of a file: a changed range stores only the entries added or
//! changed in it, the paths gone and the new metadata of files whose content is the same (a
//! delta), every snapshot restores exactly by itself — with coldvault, and by hand with `jq`,
//! `zstd`, `tar`, `xargs` and the shell — chains are rewritten whole past their bounds, and
//! `forget --prune` keeps every data file a remaining snapshot needs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use coldvault_testing::fixtures;
use common::Env;
use serde_json::Value;

/// A tree of 8 directories of 20 files of 3 kB (about 480 kB), in ranges of 64 KiB.
fn env(split_extra: &str) -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        &format!("target_bytes = \"64KiB\"\n{split_extra}"),
        2,
    );
    for d in 0..8 {
        let dir = env.path(&format!("src/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            fs::write(
                dir.join(format!("f{f:02}")),
                fixtures::bytes(d * 100 + f, 3000),
            )
            .unwrap();
        }
    }
    fs::hard_link(env.path("src/d1/f01"), env.path("src/d1/link")).unwrap();
    std::os::unix::fs::symlink("d2/f02", env.path("src/sym")).unwrap();
    // Old enough that their times prove them unchanged (a change in the last 250 ms does not).
    std::thread::sleep(std::time::Duration::from_millis(300));
    env
}

fn backup(env: &Env) -> Value {
    let b = env.json(&["backup"], 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    b
}

fn ids(env: &Env) -> Vec<String> {
    let s = env.json(&["snapshots"], 0);
    s["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn restore(env: &Env, id: &str, to: &str) -> Vec<String> {
    let to = env.path(to);
    let _ = fs::remove_dir_all(&to);
    env.json(&["restore", id, "--to", to.to_str().unwrap()], 0);
    fixtures::listing(&to)
}

/// The changes a test makes between backups, one set per round: edits, additions, deletions, a
/// directory removed, a file turned into a directory and a directory into a file, files touched
/// (`chmod`, new times) with their content the same, one touched twice, one touched then edited.
fn change(env: &Env, round: u64) {
    let p = |rel: &str| env.path(&format!("src/{rel}"));
    let set_mtime = |rel: &str, secs: i64| {
        let t = filetime::FileTime::from_unix_time(secs, 123_456_789);
        filetime::set_file_mtime(p(rel), t).unwrap();
    };
    match round {
        1 => {
            fs::write(p("d0/f03"), fixtures::bytes(9001, 3100)).unwrap();
            fs::write(p("d3/new"), b"added").unwrap();
            fs::remove_file(p("d5/f07")).unwrap();
            fs::set_permissions(p("d6/f00"), fs::Permissions::from_mode(0o600)).unwrap();
            set_mtime("d2/f05", 1_500_000_000);
        }
        2 => {
            fs::remove_dir_all(p("d4")).unwrap();
            fs::write(p("d4"), b"a file where a directory was").unwrap();
            fs::remove_file(p("d7/f19")).unwrap();
            fs::create_dir(p("d7/f19")).unwrap();
            fs::write(p("d7/f19/inside"), b"a directory where a file was").unwrap();
            fs::write(p("d1/f01"), fixtures::bytes(9002, 2000)).unwrap();
            set_mtime("d2/f05", 1_600_000_000);
            fs::set_permissions(p("d2/f05"), fs::Permissions::from_mode(0o751)).unwrap();
        }
        _ => {
            fs::remove_file(p("d4")).unwrap();
            fs::create_dir(p("d4")).unwrap();
            fs::write(p("d4/back"), b"and back").unwrap();
            fs::write(p("d3/new"), b"added, then changed").unwrap();
            fs::remove_file(p("sym")).unwrap();
            fs::write(p("d6/f00"), fixtures::bytes(9003, 3000)).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
}

#[test]
fn a_change_reads_and_stores_only_the_files_it_touched_and_every_snapshot_restores_exactly() {
    let env = env("");
    let first = backup(&env);
    let tree_bytes = first["bytes_read"].as_u64().unwrap();
    assert_eq!(first["delta_tasks"], 0, "{first}");
    let mut listings = vec![fixtures::listing(&env.path("src"))];
    for round in 1..=3 {
        change(&env, round);
        let b = backup(&env);
        assert!(b["delta_tasks"].as_u64().unwrap() >= 1, "{b}");
        let read = b["bytes_read"].as_u64().unwrap();
        // Round 3 also reads whole the range whose layers hold `d4`, removed in round 2: more
        // than `rewrite_percent` of it is files gone.
        let bound = if round == 3 { 30_000 } else { 12_000 };
        assert!(
            read <= bound,
            "round {round}: read {read} of {tree_bytes} bytes: {b}"
        );
        let added = b["bytes_added"].as_u64().unwrap();
        assert!(
            added * 10 < first["bytes_added"].as_u64().unwrap(),
            "round {round}: {b}"
        );
        listings.push(fixtures::listing(&env.path("src")));
    }
    // The newest manifest holds ranges with deltas, one with a deleted list.
    let m = env.manifest("a");
    let tasks = m["tasks"].as_array().unwrap();
    let deltas: Vec<&Value> = tasks
        .iter()
        .filter_map(|t| t["deltas"].as_array())
        .flatten()
        .collect();
    assert!(deltas.len() >= 3, "{m}");
    assert!(deltas.iter().any(|d| d["deleted"].is_object()), "{m}");
    let touched = deltas.iter().filter(|d| d["touched"].is_object()).count();
    assert!(touched >= 2, "rounds 1 and 2 touched files: {m}");
    assert!(tasks.iter().all(|t| t["index"].is_object()), "{m}");
    for (i, id) in ids(&env).iter().enumerate() {
        let got = restore(&env, id, &format!("restored{i}"));
        common::assert_same_lines(&listings[i], &got);
    }
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert_eq!(v["ok"], true, "{v}");
}

/// The restore by hand that the README gives for a file tree: per range, its data file, then
/// per delta the paths gone (`xargs -0 rm -rf`), the delta's entries, and the new metadata of
/// the files it touched. tar may only complain of entries under a path that a later range turned
/// into a file (they are gone in the snapshot).
const BY_HAND: &str = r#"
set -eu
M=$1; DIR=$2; TO=$3
mkdir -p "$TO"
jq -r '.body.tasks[] | select(.kind=="files")
       | .data.key, (.deltas[]? | "-\(.deleted.key // "")", .data.key, "+\(.touched.key // "")")' "$M" |
  while read -r k; do
    case "$k" in
      -|+) ;;
      -*) zstdcat "$DIR/${k#-}" | (cd "$TO" && xargs -0 -r rm -rf --) ;;
      +*) zstdcat "$DIR/${k#+}" | (cd "$TO" &&
            while IFS= read -r -d '' p && IFS=' ' read -r -d '' mode uid gid mtime; do
              chown -h "$uid:$gid" -- "$p" 2>/dev/null || true
              chmod "$mode" -- "$p"; touch -h -d "@$mtime" -- "$p"
            done) ;;
      *) zstdcat "$DIR/$k" | tar -x -C "$TO" -f - 2>>"$TO.tar-errors" || true ;;
    esac
  done
if grep -v -e 'Cannot open: Not a directory' -e 'Exiting with failure status' "$TO.tar-errors"; then
  exit 1
fi
"#;

/// The listing without directories' times, which a restore by hand does not keep (a later data
/// file that creates entries in a directory moves its time).
fn without_dir_times(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.rsplitn(4, ' ').collect();
            let head = parts[3];
            if head.rsplit(' ').nth(1) == Some("dir") {
                format!("{head} - {} {}", parts[1], parts[0])
            } else {
                l.clone()
            }
        })
        .collect()
}

#[test]
fn a_snapshot_of_deltas_restores_by_hand_with_jq_zstd_tar_and_xargs() {
    let env = env("");
    backup(&env);
    change(&env, 1);
    backup(&env);
    change(&env, 2);
    backup(&env);
    let want = fixtures::listing(&env.path("src"));
    change(&env, 3);
    backup(&env);
    let got = restore_by_hand(&env, &ids(&env)[2], "by-hand");
    common::assert_same_lines(&without_dir_times(&want), &without_dir_times(&got));
}

/// Restores the snapshot `id` into `to` with [`BY_HAND`]; returns the listing of what it wrote.
fn restore_by_hand(env: &Env, id: &str, to: &str) -> Vec<String> {
    // Each data file is on 2 of the 3 nodes: gather them in one directory first.
    let dir = env.path("gathered");
    for n in ["a", "b", "c"] {
        for f in env.data_files(n) {
            let to = dir.join(f.strip_prefix(env.node_dir(n)).unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&f, &to).unwrap();
        }
    }
    let manifest = env.node_dir("a").join(format!("snapshots/{id}.json"));
    let to = env.path(to);
    let out = std::process::Command::new("bash")
        .args(["-c", BY_HAND, "by-hand"])
        .arg(&manifest)
        .arg(&dir)
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fixtures::listing(&to)
}

#[test]
fn forget_and_prune_between_backups_keep_every_data_file_a_remaining_snapshot_needs() {
    let env = env("");
    backup(&env);
    let mut want = Vec::new();
    for round in 1..=3 {
        change(&env, round);
        backup(&env);
        want.push(fixtures::listing(&env.path("src")));
        // The oldest snapshot goes, though the newer ones are built on the data files it wrote.
        let f = env.json(&["forget", "--keep-last", "2", "--prune"], 0);
        let removed = f["remove"].as_array().map_or(0, Vec::len);
        assert_eq!(removed, usize::from(round >= 2), "{f}");
    }
    let ids = ids(&env);
    assert_eq!(ids.len(), 2);
    for (i, id) in ids.iter().enumerate() {
        let got = restore(&env, id, &format!("r{i}"));
        common::assert_same_lines(&want[i + 1], &got);
    }
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert_eq!(v["ok"], true, "{v}");
    // What prune left is exactly what the two snapshots name.
    let named: std::collections::BTreeSet<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| {
            let mut files = Vec::new();
            common::walk(&env.node_dir(n).join("snapshots"), &mut files);
            files
        })
        .flat_map(|f| {
            let m = common::read_doc(&f);
            let mut keys = Vec::new();
            for t in m["tasks"].as_array().unwrap() {
                keys.push(t["data"]["key"].as_str().unwrap().to_owned());
                keys.extend(t["index"]["key"].as_str().map(str::to_owned));
                for d in t["deltas"].as_array().into_iter().flatten() {
                    keys.push(d["data"]["key"].as_str().unwrap().to_owned());
                    keys.extend(d["deleted"]["key"].as_str().map(str::to_owned));
                    keys.extend(d["touched"]["key"].as_str().map(str::to_owned));
                    keys.extend(d["index"]["key"].as_str().map(str::to_owned));
                }
            }
            keys
        })
        .collect();
    let held: std::collections::BTreeSet<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| {
            let dir = env.node_dir(n);
            env.data_files(n)
                .into_iter()
                .map(move |p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        })
        .collect();
    assert_eq!(named, held);
}

fn chain_lengths(env: &Env) -> Vec<usize> {
    env.manifest("a")["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "files")
        .map(|t| t["deltas"].as_array().map_or(0, Vec::len))
        .collect()
}

#[test]
fn a_range_is_read_whole_again_after_max_deltas() {
    let env = env("max_deltas = 2");
    backup(&env);
    let f = env.path("src/d0/f00");
    for round in 1..=3u64 {
        fs::write(&f, fixtures::bytes(5000 + round, 3000)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = backup(&env);
        let longest = *chain_lengths(&env).iter().max().unwrap();
        if round < 3 {
            assert_eq!(b["delta_tasks"], 1, "{b}");
            assert_eq!(longest, round as usize);
        } else {
            assert_eq!(b["delta_tasks"], 0, "read whole: {b}");
            assert_eq!(longest, 0);
        }
    }
    env.assert_latest_restores_exactly();
}

#[test]
fn a_range_whose_deltas_pass_rewrite_percent_is_read_whole_again() {
    let env = env("rewrite_percent = 10");
    backup(&env);
    // Files added count for nothing: a restore needs them all. A third more files in a range
    // keep its chain growing.
    for round in 0..2 {
        for f in 0..4 {
            let name = format!("src/d0/added-{round}-{f}");
            fs::write(env.path(&name), fixtures::bytes(8000 + f, 3000)).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = backup(&env);
        assert!(b["delta_tasks"].as_u64().unwrap() >= 1, "{b}");
    }
    assert_eq!(*chain_lengths(&env).iter().max().unwrap(), 2);
    // Rewriting a third of a range's files leaves their old versions in its layers, more than
    // 10% of it: the next change reads it whole.
    for f in 0..7 {
        fs::write(
            env.path(&format!("src/d0/f{f:02}")),
            fixtures::bytes(7000 + f, 3000),
        )
        .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 1, "{b}");
    fs::write(env.path("src/d0/f10"), b"one more").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 0, "{b}");
    assert!(chain_lengths(&env).iter().all(|n| *n == 0));
    env.assert_latest_restores_exactly();
}

#[test]
fn a_damaged_index_makes_the_next_backup_read_its_range_whole() {
    let env = env("");
    backup(&env);
    let m = env.manifest("a");
    let index = m["tasks"][0]["index"]["key"].as_str().unwrap().to_owned();
    for n in ["a", "b", "c"] {
        let p = env.node_dir(n).join(&index);
        if p.exists() {
            let mut bytes = fs::read(&p).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            fs::write(&p, bytes).unwrap();
        }
    }
    let v = env.json(&["verify", "latest", "--read-data"], 1);
    assert!(
        v.to_string().contains(&index),
        "verify names the index: {v}"
    );
    fs::write(env.path("src/d0/extra"), b"x").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 0, "{b}");
    env.assert_latest_restores_exactly();
}

/// The files-task entry of the newest manifest with the longest chain of deltas.
fn longest_chain(env: &Env) -> Value {
    let m = env.manifest("a");
    let tasks = m["tasks"].as_array().unwrap();
    let len = |t: &Value| t["deltas"].as_array().map_or(0, Vec::len);
    tasks.iter().max_by_key(|t| len(t)).unwrap().clone()
}

#[test]
fn a_long_chain_keeps_its_index_as_patches_and_writes_it_whole_every_eight_deltas() {
    let env = env("rewrite_percent = 100");
    backup(&env);
    let mut listings = vec![fixtures::listing(&env.path("src"))];
    for round in 1..=10u64 {
        fs::write(env.path("src/d0/f00"), fixtures::bytes(6000 + round, 3000)).unwrap();
        fs::write(env.path(&format!("src/d0/added{round}")), b"new").unwrap();
        if round > 1 {
            fs::remove_file(env.path(&format!("src/d0/added{}", round - 1))).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = backup(&env);
        assert_eq!(b["delta_tasks"], 1, "round {round}: {b}");
        let read = b["bytes_read"].as_u64().unwrap();
        assert!(read <= 4_000, "round {round}: read {read} bytes: {b}");
        listings.push(fixtures::listing(&env.path("src")));
        let t = longest_chain(&env);
        let deltas = t["deltas"].as_array().unwrap();
        assert_eq!(deltas.len(), round as usize, "{t}");
        // Eight patches after the first backup's index; the ninth delta writes it whole; the
        // tenth patches that.
        let indexed = t["indexed_deltas"].as_u64().unwrap_or(round);
        assert_eq!(
            indexed,
            if round <= 8 { 0 } else { 9 },
            "round {round}: {t}"
        );
        for (i, d) in deltas.iter().enumerate() {
            let i = i as u64 + 1;
            assert_eq!(
                d["index"].is_object(),
                i != 9,
                "round {round}, delta {i}: {t}"
            );
            if let Some(patch) = d["index"]["size"].as_u64() {
                let full = t["index"]["size"].as_u64().unwrap();
                assert!(
                    patch * 3 < full,
                    "a patch of {patch} bytes, an index of {full}"
                );
            }
        }
    }
    for (i, id) in ids(&env).iter().enumerate() {
        let got = restore(&env, id, &format!("restored{i}"));
        common::assert_same_lines(&listings[i], &got);
    }
    // A patch that no node holds intact: the next backup reads the range whole.
    let t = longest_chain(&env);
    let patch = t["deltas"][9]["index"]["key"].as_str().unwrap().to_owned();
    for n in ["a", "b", "c"] {
        let p = env.node_dir(n).join(&patch);
        if p.exists() {
            fs::write(&p, b"damaged").unwrap();
        }
    }
    fs::write(env.path("src/d0/f01"), b"changed").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 0, "{b}");
    env.assert_latest_restores_exactly();
}

/// The inode of each path that shares it with another, grouped: which paths are one file.
fn link_groups(root: &std::path::Path, paths: &[&str]) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| fs::symlink_metadata(root.join(p)).unwrap().ino())
        .collect()
}

#[test]
fn hard_links_stay_linked_when_one_path_is_indexed_in_the_racy_window_and_the_other_not() {
    let env = env("");
    let log = env.path("src/d2/log");
    fs::write(&log, b"line 1\n").unwrap();
    fs::hard_link(&log, env.path("src/d2/log.hardlink")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    // Appended to just before a backup: the first path is indexed as unproven, its read waits
    // the racy window out, and the second path is indexed after it.
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"line 2\n").unwrap();
    drop(f);
    env.json(&["backup"], 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    fs::write(env.path("src/d2/f05"), b"another change in the range").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    let want = fixtures::listing(&env.path("src"));
    for (i, id) in ids(&env).iter().enumerate().skip(1) {
        let to = format!("r{i}");
        let got = restore(&env, id, &to);
        if i == 2 {
            common::assert_same_lines(&want, &got);
        }
        let inodes = link_groups(&env.path(&to), &["d2/log", "d2/log.hardlink"]);
        assert_eq!(inodes[0], inodes[1], "snapshot {i}: still one file");
    }
}

#[test]
fn a_touched_hard_link_group_across_ranges_is_read_once_by_the_run() {
    let env = env("");
    // One 40 kB file with a path in three directories, each in a range of its own.
    let first = env.path("src/d0/big");
    fs::write(&first, fixtures::bytes(78, 40_000)).unwrap();
    for d in ["d3", "d6"] {
        fs::hard_link(&first, env.path(&format!("src/{d}/big"))).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    let ranges = |env: &Env| {
        let m = env.manifest("a");
        let t = m["tasks"].as_array().unwrap();
        let holding = |p: &str| {
            t.iter().position(|t| {
                t["start"].as_str().is_none_or(|s| s <= p)
                    && t["end"].as_str().is_none_or(|e| p < e)
            })
        };
        [holding("d0/big"), holding("d3/big"), holding("d6/big")]
    };
    let r = ranges(&env);
    assert!(r[0] != r[1] && r[1] != r[2] && r[0] != r[2], "{r:?}");
    fs::set_permissions(&first, fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // One task at a time: the first range's read proves the content for the others.
    let b = env.json(&["backup", "--parallel", "1"], 0);
    assert_eq!(b["delta_tasks"], 3, "{b}");
    assert_eq!(
        b["bytes_read"], 40_000,
        "read once, not once per range: {b}"
    );
    assert!(b["bytes_added"].as_u64().unwrap() < 3000, "not stored: {b}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let want = fixtures::listing(&env.path("src"));
    let got = restore(&env, "latest", "r1");
    common::assert_same_lines(&want, &got);
    // Touched and then changed between two ranges' reads is what the version guards: here the
    // bytes change with the times, and every range stores them again.
    fs::write(&first, fixtures::bytes(79, 40_000)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = env.json(&["backup", "--parallel", "1"], 0);
    assert!(
        b["bytes_added"].as_u64().unwrap() > 3 * 30_000,
        "stored per range: {b}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let want = fixtures::listing(&env.path("src"));
    let got = restore(&env, "latest", "r2");
    common::assert_same_lines(&want, &got);
}

#[test]
fn a_touched_hard_link_group_stays_linked_and_a_new_link_to_it_reads_the_range_whole() {
    let env = env("");
    // Two paths of one file, side by side in one range.
    let log = env.path("src/d2/log");
    fs::write(&log, fixtures::bytes(77, 5000)).unwrap();
    fs::hard_link(&log, env.path("src/d2/log.hardlink")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    // New times for both, the same bytes.
    let t = filetime::FileTime::from_unix_time(1_400_000_000, 5);
    filetime::set_file_mtime(&log, t).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 1, "{b}");
    assert_eq!(b["bytes_read"], 5000, "read once: {b}");
    assert!(
        b["bytes_added"].as_u64().unwrap() < 2000,
        "not stored again: {b}"
    );
    let m = env.manifest("a");
    let delta = m["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t["deltas"].as_array().and_then(|d| d.last()))
        .unwrap()
        .clone();
    assert!(delta["touched"].is_object(), "{m}");
    let want = fixtures::listing(&env.path("src"));
    let got = restore(&env, "latest", "r1");
    common::assert_same_lines(&want, &got);
    let inodes = link_groups(&env.path("r1"), &["d2/log", "d2/log.hardlink"]);
    assert_eq!(inodes[0], inodes[1], "still one file");
    // A third path joins the group: its link entry cannot name `d2/log`, whose bytes are in an
    // older layer, so the range is read whole.
    fs::hard_link(&log, env.path("src/d2/log.z")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    let m = env.manifest("a");
    let holding_log = m["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            let after_start = t["start"].as_str().is_none_or(|s| s <= "d2/log");
            let before_end = t["end"].as_str().is_none_or(|e| "d2/log" < e);
            after_start && before_end
        })
        .unwrap();
    assert!(holding_log["deltas"].is_null(), "read whole: {holding_log}");
    let want = fixtures::listing(&env.path("src"));
    let got = restore(&env, "latest", "r2");
    common::assert_same_lines(&want, &got);
    let inodes = link_groups(&env.path("r2"), &["d2/log", "d2/log.hardlink", "d2/log.z"]);
    assert!(
        inodes.iter().all(|i| *i == inodes[0]),
        "one file: {inodes:?}"
    );
}

#[test]
fn a_hard_link_groups_first_path_gone_leaves_the_others_its_bytes_without_a_whole_read() {
    let env = env("");
    let p = |rel: &str| env.path(&format!("src/{rel}"));
    fs::write(p("d2/grp.a"), fixtures::bytes(71, 5000)).unwrap();
    for other in ["d2/grp.b", "d2/grp.c", "d2/grp.d"] {
        fs::hard_link(p("d2/grp.a"), p(other)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    let mut listings = vec![fixtures::listing(&env.path("src"))];
    // The group's first path goes; a new file takes its name; the next path goes too (two stay
    // linked: a path left alone is a plain file, stored again).
    for round in 0..3 {
        match round {
            0 => fs::remove_file(p("d2/grp.a")).unwrap(),
            1 => fs::write(p("d2/grp.a"), b"another file under the first path's name").unwrap(),
            _ => fs::remove_file(p("d2/grp.b")).unwrap(),
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = backup(&env);
        assert!(
            b["delta_tasks"].as_u64().unwrap() >= 1,
            "round {round}: {b}"
        );
        let added = b["bytes_added"].as_u64().unwrap();
        assert!(added < 2000, "round {round}: stored again: {b}");
        let m = env.manifest("a");
        let holding = m["tasks"].as_array().unwrap().iter().find(|t| {
            let after_start = t["start"].as_str().is_none_or(|s| s <= "d2/grp.c");
            after_start && t["end"].as_str().is_none_or(|e| "d2/grp.c" < e)
        });
        assert!(holding.unwrap()["deltas"].is_array(), "round {round}: {m}");
        listings.push(fixtures::listing(&env.path("src")));
    }
    for (i, id) in ids(&env).iter().enumerate() {
        let to = format!("r{i}");
        common::assert_same_lines(&listings[i], &restore(&env, id, &to));
        let linked: Vec<&str> = ["d2/grp.b", "d2/grp.c", "d2/grp.d"]
            .into_iter()
            .filter(|l| env.path(&format!("{to}/{l}")).exists())
            .collect();
        let inodes = link_groups(&env.path(&to), &linked);
        assert!(
            inodes.iter().all(|n| *n == inodes[0]),
            "snapshot {i}: {inodes:?}"
        );
    }
    let got = restore_by_hand(&env, &ids(&env)[3], "by-hand");
    common::assert_same_lines(&without_dir_times(&listings[3]), &without_dir_times(&got));
    // One later path of a group alone, from the snapshot whose one data file holds it as a link.
    let to = env.path("only-c");
    let first = &ids(&env)[0];
    let to_arg = to.to_str().unwrap();
    env.json(
        &["restore", first, "--to", to_arg, "--include", "d2/grp.c"],
        0,
    );
    assert_eq!(
        fs::read(to.join("d2/grp.c")).unwrap(),
        fixtures::bytes(71, 5000)
    );
    assert!(!to.join("d2/grp.a").exists());
}

#[test]
fn a_hard_link_whose_first_path_is_newly_excluded_is_kept() {
    let env = env("");
    fs::write(env.path("src/a"), b"linked bytes").unwrap();
    fs::hard_link(env.path("src/a"), env.path("src/b")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    let text = fs::read_to_string(&env.job)
        .unwrap()
        .replace("path = \"src\"", "path = \"src\"\nexclude = [\"/a\"]");
    fs::write(&env.job, text).unwrap();
    // A delta: `a` is gone, and restore gives `b`, a link to `a` in the older layer, its bytes.
    let b = backup(&env);
    assert_eq!(b["delta_tasks"], 1, "{b}");
    restore(&env, "latest", "restored");
    assert_eq!(fs::read(env.path("restored/b")).unwrap(), b"linked bytes");
    assert!(!env.path("restored/a").exists());
}

#[test]
fn a_range_that_keeps_a_socket_adds_no_delta_when_nothing_changed() {
    let env = env("");
    let _socket = std::os::unix::net::UnixListener::bind(env.path("src/d3/sock")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let first = env.json(&["backup"], 0);
    assert!(first["warnings"].to_string().contains("socket"), "{first}");
    for _ in 0..2 {
        let b = env.json(&["backup"], 0);
        assert_eq!(b["delta_tasks"], 0, "{b}");
        assert_eq!(b["bytes_added"], 0, "{b}");
    }
    assert!(chain_lengths(&env).iter().all(|n| *n == 0));
}

#[test]
fn a_hard_link_group_split_in_two_of_the_same_bytes_restores_as_two_groups() {
    let env = env("");
    let p = |rel: &str| env.path(&format!("src/{rel}"));
    let paths = ["d4/g.a", "d4/g.b", "d4/g.c", "d4/g.d", "d4/g.e"];
    fs::write(p(paths[0]), fixtures::bytes(72, 5000)).unwrap();
    for other in &paths[1..] {
        fs::hard_link(p(paths[0]), p(other)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    backup(&env);
    // Round 0: the first path goes, d and e become a group of their own with the same bytes.
    // Round 1: no path goes; b leaves c's group for a new group with a.
    for round in 0..2 {
        if round == 0 {
            fs::remove_file(p("d4/g.a")).unwrap();
            fs::copy(p("d4/g.b"), p("d4/t1")).unwrap();
            fs::hard_link(p("d4/t1"), p("d4/t2")).unwrap();
            fs::rename(p("d4/t1"), p("d4/g.d")).unwrap();
            fs::rename(p("d4/t2"), p("d4/g.e")).unwrap();
        } else {
            fs::copy(p("d4/g.b"), p("d4/t1")).unwrap();
            fs::hard_link(p("d4/t1"), p("d4/g.a")).unwrap();
            fs::rename(p("d4/t1"), p("d4/g.b")).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        backup(&env);
    }
    let want = |to: &std::path::Path, groups: &[&[&str]]| {
        for g in groups {
            let inodes = link_groups(to, g);
            assert!(inodes.iter().all(|n| *n == inodes[0]), "{g:?}: {inodes:?}");
        }
        let firsts: Vec<&str> = groups.iter().map(|g| g[0]).collect();
        let mut inodes = link_groups(to, &firsts);
        inodes.dedup();
        assert_eq!(inodes.len(), groups.len(), "{firsts:?} are separate files");
        for path in groups.concat() {
            assert_eq!(fs::read(to.join(path)).unwrap(), fixtures::bytes(72, 5000));
        }
    };
    want(
        &env.path("src"),
        &[&["d4/g.a", "d4/g.b"], &["d4/g.c"], &["d4/g.d", "d4/g.e"]],
    );
    let ids = ids(&env);
    restore(&env, &ids[1], "r1");
    want(
        &env.path("r1"),
        &[&["d4/g.b", "d4/g.c"], &["d4/g.d", "d4/g.e"]],
    );
    restore(&env, &ids[2], "r2");
    want(
        &env.path("r2"),
        &[&["d4/g.a", "d4/g.b"], &["d4/g.c"], &["d4/g.d", "d4/g.e"]],
    );
}
