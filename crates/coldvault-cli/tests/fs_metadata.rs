//! File-tree metadata end to end, through the real binary: extended attributes (user, trusted,
//! security with a file capability), POSIX ACLs (a named user and group, a directory's default
//! ACL), a hard-link group, sparse files (one split in parts, one inside a range), a FIFO, device
//! nodes and a socket. Each tree is restored by coldvault and by hand with `zstdcat | tar --xattrs
//! --xattrs-include='*' --acls -x` (and `dd conv=sparse` for the parts of a split file), then
//! compared with `getfattr`, `getfacl`, link counts, `du`, file types and the bytes.
//!
//! These tests run as root (trusted.* and security.* attributes, mknod): as scripts/test runs
//! them. A restore without root's privileges is run as uid 0 with every capability dropped
//! (`setpriv`), which the kernel treats as an unprivileged owner for every check made here.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Env;

const MIB: u64 = 1 << 20;

/// Runs `cmd` in `dir`, asserts it succeeds, returns its stdout.
fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/install-test-deps installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_root() {
    let uid = run(Path::new("/"), "id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "these tests need root (trusted.* and security.* attributes, mknod): run them as \
         scripts/test does"
    );
}

/// A file of `len` bytes with holes everywhere but at `data` (offset, bytes).
fn sparse_file(path: &Path, len: u64, data: &[(u64, &[u8])]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (at, bytes) in data {
        f.write_all_at(bytes, *at).unwrap();
    }
}

/// Bytes the file takes on disk.
fn du(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks() * 512
}

fn pseudo_random(seed: u64, len: u64) -> Vec<u8> {
    coldvault_testing::fixtures::bytes(seed, len as usize)
}

/// Builds the tree: see the module docs. Returns the socket's listener (kept alive by the caller).
fn metadata_tree(src: &Path) -> std::os::unix::net::UnixListener {
    let d = |p: &str| {
        fs::create_dir_all(src.join(p)).unwrap();
        src.join(p)
    };
    let attrs = d("attrs");
    run(
        &attrs,
        "setfattr",
        &["-n", "user.dir", "-v", "on a directory", "."],
    );
    fs::write(attrs.join("file.txt"), b"a file with attributes\n").unwrap();
    for (name, value) in [
        ("user.comment", "hello"),
        ("user.bin", "0x00ff00"),
        ("trusted.note", "for root only"),
        // cap_net_bind_service, permitted and effective (VFS_CAP_REVISION_2).
        (
            "security.capability",
            "0x0100000201040000000000000000000000000000",
        ),
    ] {
        run(&attrs, "setfattr", &["-n", name, "-v", value, "file.txt"]);
    }
    fs::write(
        attrs.join("acl.txt"),
        b"an ACL with a named user and group\n",
    )
    .unwrap();
    run(
        &attrs,
        "setfacl",
        &["-m", "u:1001:rw-,g:2002:r--", "acl.txt"],
    );
    run(&attrs, "chown", &["1001:2002", "acl.txt"]);
    fs::create_dir(attrs.join("shared")).unwrap();
    run(&attrs, "setfacl", &["-m", "u:1001:rwx", "shared"]);
    run(
        &attrs,
        "setfacl",
        &["-d", "-m", "u:1001:r-x,g:2002:r-x", "shared"],
    );
    fs::write(
        attrs.join("shared/inside.txt"),
        b"inherits the default ACL\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("file.txt", attrs.join("link-to-file")).unwrap();
    run(
        &attrs,
        "setfattr",
        &[
            "-h",
            "-n",
            "trusted.sym",
            "-v",
            "on a symlink",
            "link-to-file",
        ],
    );

    let links = d("links");
    fs::write(links.join("one"), pseudo_random(1, 3000)).unwrap();
    fs::hard_link(links.join("one"), links.join("three")).unwrap();
    fs::hard_link(links.join("one"), links.join("two")).unwrap();
    run(
        &links,
        "setfattr",
        &["-n", "user.linked", "-v", "shared by three", "one"],
    );
    fs::write(links.join("single"), b"one link\n").unwrap();

    let sparse = d("sparse");
    sparse_file(
        &sparse.join("small.img"),
        64 * MIB,
        &[
            (0, &pseudo_random(2, 4096)),
            (10 * MIB, &pseudo_random(3, MIB)),
            (64 * MIB - 4096, &pseudo_random(4, 4096)),
        ],
    );
    sparse_file(
        &src.join("huge.img"),
        2048 * MIB,
        &[
            (MIB, &pseudo_random(5, MIB)),
            (700 * MIB + 123, &pseudo_random(6, 2 * MIB)),
            (1536 * MIB, &pseudo_random(7, MIB)),
        ],
    );
    run(
        src,
        "setfattr",
        &["-n", "user.big", "-v", "split in parts", "huge.img"],
    );

    let special = d("special");
    run(&special, "mknod", &["-m", "0640", "fifo", "p"]);
    run(&special, "mknod", &["-m", "0666", "null", "c", "1", "3"]);
    run(&special, "mknod", &["-m", "0660", "loop", "b", "7", "200"]);
    run(
        &special,
        "setfattr",
        &["-n", "trusted.dev", "-v", "on a device", "null"],
    );
    let sock = std::os::unix::net::UnixListener::bind(special.join("sock")).unwrap();
    set_times_deepest_first(src);
    sock
}

/// Gives every entry its own modification time, children before their directory.
fn set_times_deepest_first(root: &Path) {
    let mut all = Vec::new();
    entries(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let t = filetime::FileTime::from_unix_time(1_600_000_000 + i as i64 * 60, i as u32 * 7);
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }
}

fn entries(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            entries(&p, out);
        }
        out.push(p);
    }
}

/// How an entry is compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Everything.
    All,
    /// A restore by hand: no directory times (each tar run touches them), and a file stored in
    /// parts has only its bytes (its mode, times and attributes are in the manifest).
    ByHand,
}

const SPLIT_FILE: &str = "huge.img";

/// One line per entry: path, type, mode, owner, times, size, link count and link group, device
/// numbers, symlink target, BLAKE3 of the bytes. Sockets are left out (they are never stored).
fn facts(root: &Path, how: Compare) -> Vec<String> {
    let mut all = vec![root.to_path_buf()];
    entries(root, &mut all);
    let mut first_of_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut rels: Vec<(String, PathBuf)> = all
        .into_iter()
        .map(|p| (format!("{:?}", p.strip_prefix(root).unwrap()), p))
        .collect();
    rels.sort();
    let mut lines = Vec::new();
    for (rel, p) in rels {
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        if ft.is_socket() {
            continue;
        }
        let group = first_of_inode.entry(m.ino()).or_insert(rel.clone()).clone();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {:?}", fs::read_link(&p).unwrap())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else if ft.is_char_device() || ft.is_block_device() {
            let dev = m.rdev();
            let kind = if ft.is_char_device() { "char" } else { "block" };
            format!("{kind} {}:{}", dev >> 8 & 0xfff, dev & 0xff)
        } else {
            let hash = blake3::Hasher::new()
                .update_reader(File::open(&p).unwrap())
                .unwrap()
                .finalize();
            format!(
                "file {} bytes, {} links, group {group}, {hash}",
                m.len(),
                m.nlink()
            )
        };
        let split = how == Compare::ByHand && rel == format!("{SPLIT_FILE:?}");
        let mode = if ft.is_symlink() || split {
            0
        } else {
            m.mode() & 0o7777
        };
        let time = if (how == Compare::ByHand && ft.is_dir()) || split {
            String::new()
        } else {
            format!("{}.{:09}", m.mtime(), m.mtime_nsec())
        };
        lines.push(format!(
            "{rel} {what} mode {mode:o} owner {}:{} {time}",
            m.uid(),
            m.gid()
        ));
    }
    lines
}

/// `getfattr` or `getfacl` output over the tree, one block per path (sorted), without `skip`.
fn dump(root: &Path, cmd: &str, args: &[&str], skip: &[&str]) -> BTreeMap<String, String> {
    let text = run(root, cmd, args);
    let mut blocks = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (head, body) = block.split_once('\n').unwrap_or((block, ""));
        let path = head.trim_start_matches("# file: ").to_string();
        if skip.iter().any(|s| path == format!("./{s}")) {
            continue;
        }
        blocks.insert(path, body.to_string());
    }
    blocks
}

/// Every extended attribute (ACLs as `system.posix_acl_*` too), in hex.
fn xattrs(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    dump(
        root,
        "getfattr",
        &[
            "-R",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
            ".",
        ],
        skip,
    )
}

/// Every ACL, numeric, not following symlinks.
fn acls(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    dump(root, "getfacl", &["-R", "-P", "-n", "-p", "."], skip)
}

fn assert_same<T: PartialEq + std::fmt::Debug>(what: &str, want: &T, got: &T) {
    assert!(
        want == got,
        "{what} differ:\nsource:   {want:#?}\nrestored: {got:#?}"
    );
}

/// Disk usage of a restored sparse file stays close to the source's, far below its size.
fn assert_sparse(src: &Path, restored: &Path) {
    let (want, got) = (du(src), du(restored));
    assert!(
        got <= want + MIB,
        "{} takes {got} bytes on disk, the source {want}",
        restored.display()
    );
}

fn env_over_tree() -> (Env, std::os::unix::net::UnixListener) {
    assert_root();
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"256MiB\"",
        2,
    );
    let sock = metadata_tree(&env.path("src"));
    (env, sock)
}

/// Restores every data file of the latest snapshot by hand into `out`, as the README says.
fn restore_by_hand(env: &Env, out: &Path) {
    fs::create_dir_all(out).unwrap();
    let m = env.manifest("a");
    for t in m["tasks"].as_array().unwrap() {
        let node = t["data"]["nodes"][0].as_str().unwrap();
        let file = env.node_dir(node).join(t["data"]["key"].as_str().unwrap());
        let file = file.to_str().unwrap();
        let script = match t["kind"].as_str().unwrap() {
            "files" => format!(
                "zstdcat '{file}' | tar --xattrs --xattrs-include='*' --acls -x -C '{}'",
                out.display()
            ),
            "file_part" => format!(
                "zstdcat '{file}' | dd of='{}' bs=64K seek={} oflag=seek_bytes \
                 conv=sparse,notrunc status=none && truncate -s '>{}' '{0}'",
                out.join(t["path"].as_str().unwrap()).display(),
                t["offset"],
                t["file"]["size"],
            ),
            k => panic!("{k}"),
        };
        run(out, "sh", &["-ec", &script]);
    }
}

#[test]
fn xattrs_acls_hard_links_holes_fifos_and_devices_come_back_from_coldvault_and_from_tar() {
    let (env, _sock) = env_over_tree();
    let src = env.path("src");
    let b = env.json(&["backup"], 0);
    let warnings = b["warnings"].to_string();
    assert!(
        warnings.contains("special/sock") && warnings.contains("socket"),
        "the socket is left out with a warning naming it: {b}"
    );
    let parts = env.manifest("a")["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "file_part")
        .count();
    assert_eq!(parts, 8, "2 GiB in 256 MiB parts");

    let restored = env.path("restored");
    let r = env.json(
        &["restore", "latest", "--to", restored.to_str().unwrap()],
        0,
    );
    assert_eq!(
        r["warnings"],
        serde_json::json!([]),
        "as root, nothing is lost: {r}"
    );
    let skip = ["special/sock"];
    assert_same(
        "entries",
        &facts(&src, Compare::All),
        &facts(&restored, Compare::All),
    );
    assert_same("xattrs", &xattrs(&src, &skip), &xattrs(&restored, &skip));
    assert_same("ACLs", &acls(&src, &skip), &acls(&restored, &skip));
    for f in ["huge.img", "sparse/small.img"] {
        assert_sparse(&src.join(f), &restored.join(f));
    }
    assert_eq!(fs::metadata(restored.join("links/two")).unwrap().nlink(), 3);

    let by_hand = env.path("byhand");
    restore_by_hand(&env, &by_hand);
    let skip_split = ["special/sock", SPLIT_FILE];
    assert_same(
        "entries",
        &facts(&src, Compare::ByHand),
        &facts(&by_hand, Compare::ByHand),
    );
    assert_same(
        "xattrs",
        &xattrs(&src, &skip_split),
        &xattrs(&by_hand, &skip_split),
    );
    assert_same(
        "ACLs",
        &acls(&src, &skip_split),
        &acls(&by_hand, &skip_split),
    );
    for f in ["huge.img", "sparse/small.img"] {
        assert_sparse(&src.join(f), &by_hand.join(f));
    }
}

#[test]
fn a_restore_without_root_privileges_keeps_what_it_can_and_warns_about_the_rest() {
    let (env, _sock) = env_over_tree();
    env.json(&["backup"], 0);
    let to = env.path("unprivileged");
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(assert_cmd::cargo::cargo_bin("coldvault"))
        .arg("restore")
        .arg(&env.job)
        .args(["latest", "--to", to.to_str().unwrap(), "--json"])
        .args([
            "--include",
            "attrs",
            "--include",
            "special",
            "--include",
            "links",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let warnings = r["warnings"].to_string();
    for (path, what) in [
        ("attrs/file.txt", "trusted.note"),
        ("attrs/file.txt", "security.capability"),
        ("special/null", "device"),
        ("special/loop", "device"),
    ] {
        assert!(
            r["warnings"].as_array().unwrap().iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains(path) && w.contains(what))),
            "a warning names {path} ({what}): {warnings}"
        );
    }
    let user_only = |p: &str| run(&to, "getfattr", &["-h", "-d", "-m", "-", "-e", "text", p]);
    let file = user_only("attrs/file.txt");
    assert!(
        file.contains("user.comment=\"hello\"") && !file.contains("trusted."),
        "{file}"
    );
    let acl = run(&to, "getfacl", &["-n", "attrs/shared"]);
    assert!(
        acl.contains("default:user:1001:r-x"),
        "the owner may set ACLs: {acl}"
    );
    let fifo = fs::symlink_metadata(to.join("special/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "anyone may make a FIFO");
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
    assert!(!to.join("special/null").exists());
    assert_eq!(fs::metadata(to.join("links/one")).unwrap().nlink(), 3);
}

#[test]
fn a_hard_link_group_split_between_two_tasks_comes_back_as_one_linked_set_per_task() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    let src = env.path("src");
    for dir in ["a", "b", "c"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    fs::write(src.join("a/first"), b"linked three times\n").unwrap();
    for (i, f) in ["b/f1", "b/f2", "b/f3"].iter().enumerate() {
        fs::write(src.join(f), pseudo_random(i as u64, 40_000)).unwrap();
    }
    fs::hard_link(src.join("a/first"), src.join("c/second")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("c/third")).unwrap();
    let plan = env.json(&["plan"], 0);
    let range_of = |path: &str| {
        plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| {
                t["kind"] == "files"
                    && t["start"].as_str().is_none_or(|s| s <= path)
                    && t["end"].as_str().is_none_or(|e| path < e)
            })
            .unwrap()
    };
    assert_ne!(range_of("a/first"), range_of("c/second"), "{plan}");
    assert_eq!(range_of("c/second"), range_of("c/third"), "{plan}");
    env.json(&["backup"], 0);
    let nlinks = |root: &Path| {
        ["a/first", "c/second", "c/third"].map(|p| fs::metadata(root.join(p)).unwrap().nlink())
    };
    let restored = env.path("restored");
    env.json(
        &["restore", "latest", "--to", restored.to_str().unwrap()],
        0,
    );
    assert_eq!(nlinks(&restored), [1, 2, 2]);
    let by_hand = env.path("byhand");
    restore_by_hand(&env, &by_hand);
    assert_eq!(nlinks(&by_hand), [1, 2, 2]);
    for root in [&restored, &by_hand] {
        for p in ["a/first", "c/second", "c/third"] {
            assert_eq!(fs::read(root.join(p)).unwrap(), b"linked three times\n");
        }
    }
}
