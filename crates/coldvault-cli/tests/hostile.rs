//! Restore never writes outside its target, whatever a data file or manifest says: `..` entries, absolute
//! paths, and a symlink followed by a write through it are refused.

mod common;

use common::Env;

/// One raw tar entry: name, type, link target, contents.
type RawEntry<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>, &'a [u8]);

/// Builds a tar.zst data file from raw entries.
fn evil_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_ustar();
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                u.linkname[..l.len()].copy_from_slice(l);
            }
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
    zstd::encode_all(&raw[..], 3).unwrap()
}

/// Replaces the first task's data file with `bytes` in every copy of the manifest.
fn plant(env: &Env, bytes: &[u8]) {
    let sum = blake3::hash(bytes).to_hex().to_string();
    let key = format!("data/{}/{sum}.tar.zst", &sum[..2]);
    for n in ["a", "b", "c"] {
        let p = env.node_dir(n).join(&key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let mut files = Vec::new();
    for n in ["a", "b", "c"] {
        common::walk(&env.node_dir(n).join("snapshots"), &mut files);
    }
    for f in files {
        let mut m = common::read_doc(&f);
        let t = &mut m["tasks"][0];
        t["data"]["key"] = key.clone().into();
        t["data"]["size"] = (bytes.len() as u64).into();
        t["data"]["checksum"] = sum.clone().into();
        t["data"]["nodes"] = serde_json::json!(["a", "b", "c"]);
        common::write_doc(&f, &m);
    }
}

fn setup() -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"1MiB\"",
        2,
    );
    std::fs::create_dir_all(env.path("src")).unwrap();
    std::fs::write(env.path("src/f"), b"x").unwrap();
    env.json(&["backup"], 0);
    env
}

fn restore_refused(env: &Env, want: &str) {
    let to = env.path("target/inner");
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains(want), "want {want:?} in {err}");
}

#[test]
fn dot_dot_entries_are_refused() {
    let env = setup();
    plant(
        &env,
        &evil_tar(&[(b"../escaped", tar::EntryType::Regular, None, b"pwned")]),
    );
    restore_refused(&env, "refusing path");
    assert!(!env.path("target/escaped").exists());
}

#[test]
fn absolute_entries_are_refused() {
    let env = setup();
    let outside = env.path("abs-escape");
    let name = outside.to_str().unwrap().as_bytes().to_vec();
    plant(
        &env,
        &evil_tar(&[(&name, tar::EntryType::Regular, None, b"pwned")]),
    );
    restore_refused(&env, "refusing absolute path");
    assert!(!outside.exists());
}

#[test]
fn a_write_through_a_symlink_is_refused() {
    let env = setup();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link = outside.to_str().unwrap().as_bytes().to_vec();
    plant(
        &env,
        &evil_tar(&[
            (b"link", tar::EntryType::Symlink, Some(&link), b""),
            (b"link/planted", tar::EntryType::Regular, None, b"pwned"),
        ]),
    );
    restore_refused(&env, "is not a directory");
    assert!(!outside.join("planted").exists());
}

#[test]
fn a_tampered_manifest_path_is_refused_before_anything_is_written() {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"16KiB\"",
        2,
    );
    std::fs::create_dir_all(env.path("src")).unwrap();
    std::fs::write(env.path("src/big"), vec![7u8; 100_000]).unwrap();
    env.json(&["backup"], 0);
    let mut files = Vec::new();
    for n in ["a", "b", "c"] {
        common::walk(&env.node_dir(n).join("snapshots"), &mut files);
    }
    // Tampered with and sealed again, so its checksum checks out: the path itself is refused.
    for f in files {
        let mut m = common::read_doc(&f);
        let text = m.to_string();
        assert!(
            text.contains("\"path\":\"big\""),
            "a file part names its path"
        );
        m = serde_json::from_str(&text.replace("\"path\":\"big\"", "\"path\":\"../escaped\""))
            .unwrap();
        common::write_doc(&f, &m);
    }
    let to = env.path("target/inner");
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("malformed manifest") && err.contains(".."),
        "{err}"
    );
    assert!(!env.path("target/escaped").exists());
    assert!(!to.exists());
}

#[test]
fn a_resealed_manifest_with_a_checksum_that_is_a_path_is_refused_before_anything_is_written() {
    let env = setup();
    env.json(&["backup"], 0);
    let mut files = Vec::new();
    for n in ["a", "b", "c"] {
        common::walk(&env.node_dir(n).join("snapshots"), &mut files);
    }
    for f in files {
        let mut m = common::read_doc(&f);
        m["tasks"][0]["data"]["checksum"] = "../../../escaped".into();
        common::write_doc(&f, &m);
    }
    let to = env.path("target/inner");
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("not 64 hex digits"), "{err}");
    assert!(!to.exists());
    assert!(!env.path("escaped").exists());
}

#[test]
fn a_tampered_sqlite_data_file_cannot_run_anything_but_inserts() {
    let env = Env::new("type = \"sqlite\"\npath = \"src.db\"", "max_rows = 100", 2);
    let conn = rusqlite::Connection::open(env.path("src.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    env.json(&["backup"], 0);
    let evil = env.path("evil.db");
    let sql = format!(
        "INSERT INTO t VALUES (2);\nATTACH DATABASE '{}' AS e;\nCREATE TABLE e.pwned (x);\n",
        evil.display()
    );
    plant(&env, &zstd::encode_all(sql.as_bytes(), 3).unwrap());
    let to = env.path("restored.db");
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("refusing a statement that is not INSERT INTO"),
        "{err}"
    );
    assert!(!evil.exists(), "ATTACH wrote outside the target");
}
