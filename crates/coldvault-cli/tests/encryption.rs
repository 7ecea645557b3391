//! Encryption at rest with age: data files, manifests and receipts are age files that the `age`
//! CLI decrypts with the identity; no plaintext of the source (contents or names) reaches a node;
//! restore and verify work with the identity from a file or a variable; a wrong or missing key
//! is a clear error; the passphrase mode works the same.

mod common;

use std::process::Command;

use coldvault_testing::fixtures;
use common::{walk, Env};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";
const NAME: &str = "secret-name-of-a-file";

fn env_with(encryption: &str) -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    let text = std::fs::read_to_string(&env.job).unwrap();
    let text = text.replace(
        "\n[run]",
        &format!("\n[repository.encryption]\n{encryption}\n\n[run]"),
    );
    std::fs::write(&env.job, text).unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut body = Vec::new();
    for i in 0..200u64 {
        body.extend_from_slice(MARKER);
        body.extend_from_slice(&fixtures::bytes(i, 300));
    }
    std::fs::write(src.join("d").join(NAME), &body).unwrap();
    for i in 0..30 {
        std::fs::write(src.join(format!("f{i}")), fixtures::bytes(i, 5000)).unwrap();
    }
    env
}

/// Every byte on every node.
fn stored(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    walk(&env.path("nodes"), &mut files);
    files
        .into_iter()
        .filter(|f| f.is_file())
        .map(|f| (f.to_string_lossy().into_owned(), std::fs::read(&f).unwrap()))
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_reaches_a_node_and_the_age_cli_reads_everything() {
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = common::keygen(keys.path(), "key.txt");
    let env = env_with(&format!(
        "recipients = [\"{public}\"]\nidentity_file = \"{}\"",
        identity.display()
    ));
    env.json(&["backup"], 0);
    // A resumable receipt too: a run of a changed tree stopped after storing some tasks.
    for i in 0..30 {
        std::fs::write(
            env.path(&format!("src/f{i}")),
            fixtures::bytes(i + 100, 5000),
        )
        .unwrap();
    }
    let out = env
        .cmd(&["backup"])
        .env("COLDVAULT_FAILPOINT", "receipt:2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None);
    let files = stored(&env);
    assert!(
        files.iter().any(|(p, _)| p.contains("/runs/")),
        "receipts are there"
    );
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, MARKER),
            "{path} holds the source's contents"
        );
        assert!(
            !contains(bytes, NAME.as_bytes()),
            "{path} holds a source file name"
        );
    }
    // Data files and manifests are age files the age CLI decrypts with the identity.
    let mut data = env.data_files("a");
    data.extend(env.data_files("b"));
    data.extend(env.data_files("c"));
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for f in {}; do age -d -i {} \"$f\" | zstd -dc | tar -t 2>/dev/null; done",
            data.iter()
                .map(|p| format!("'{}'", p.display()))
                .collect::<Vec<_>>()
                .join(" "),
            identity.display()
        ))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&tar.stdout);
    assert!(listing.contains(NAME), "{listing}");
    let mut manifests = Vec::new();
    walk(&env.node_dir("a").join("snapshots"), &mut manifests);
    let m = Command::new("age")
        .args(["-d", "-i"])
        .arg(&identity)
        .arg(&manifests[0])
        .output()
        .unwrap();
    // A manifest is its checksum and its body: `age -d | jq .body` reads it by hand.
    let text = String::from_utf8(m.stdout).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["body"]["job"], "e2e");
    let body = &text[text.find("\"body\": ").unwrap() + 8..text.rfind('}').unwrap()];
    assert_eq!(
        m["blake3"],
        blake3::hash(body.as_bytes()).to_hex().as_str(),
        "{m}"
    );

    // The resumed run reads its encrypted receipts; restore and verify use the identity.
    let r = env.json(&["backup"], 0);
    assert!(r["reused_tasks"].as_u64().unwrap() >= 1, "{r}");
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert_eq!(v["ok"], true, "{v}");
    let to = env.path("r");
    env.json(&["restore", "latest", "--to", to.to_str().unwrap()], 0);
    assert_eq!(fixtures::listing(&env.path("src")), fixtures::listing(&to));
}

#[test]
fn a_wrong_or_missing_identity_is_a_clear_error() {
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = common::keygen(keys.path(), "key.txt");
    let (other, _) = common::keygen(keys.path(), "other.txt");
    let env = env_with(&format!(
        "recipients = [\"{public}\"]\nidentity_env = \"CV_IDENTITY\""
    ));
    env.json(&["backup"], 0);
    // Without the identity a second backup cannot read its parent: it says so, and why.
    let second = env.json(&["backup"], 0);
    let w = second["warnings"].to_string();
    assert!(
        w.contains("could not be read") && w.contains("read again") && w.contains("CV_IDENTITY"),
        "{second}"
    );
    let to = env.path("r");
    let restore = |identity: Option<String>| {
        let mut c = env.cmd(&["restore", "latest", "--to", to.to_str().unwrap()]);
        match identity {
            Some(i) => c.env("CV_IDENTITY", i),
            None => c.env_remove("CV_IDENTITY"),
        };
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = restore(Some(std::fs::read_to_string(&other).unwrap()));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not match"), "{err}");
    let (code, err) = restore(None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CV_IDENTITY is not set"), "{err}");
    assert!(!to.exists() || std::fs::read_dir(&to).unwrap().count() == 0);
}

#[test]
fn the_passphrase_mode_round_trips_and_refuses_a_wrong_passphrase() {
    let env = env_with("passphrase_env = \"CV_PASS\"");
    let run = |args: &[&str], pass: &str| {
        let out = env.cmd(args).env("CV_PASS", pass).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, out, err) = run(&["backup"], "correct horse");
    assert_eq!(c, Some(0), "{out}{err}");
    for (path, bytes) in stored(&env) {
        assert!(
            !contains(&bytes, MARKER),
            "{path} holds the source's contents"
        );
    }
    let to = env.path("r");
    let (c, _, err) = run(
        &["restore", "latest", "--to", to.to_str().unwrap()],
        "wrong",
    );
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    let (c, out, err) = run(
        &["restore", "latest", "--to", to.to_str().unwrap()],
        "correct horse",
    );
    assert_eq!(c, Some(0), "{out}{err}");
    assert_eq!(fixtures::listing(&env.path("src")), fixtures::listing(&to));
}

#[test]
fn a_damaged_key_copy_on_one_node_is_outvoted_and_no_key_anywhere_is_an_error_not_a_new_key() {
    let env = env_with("passphrase_env = \"CV_PASS\"");
    let run = |args: &[&str]| {
        let out = env
            .cmd(args)
            .env("CV_PASS", "correct horse")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, out, err) = run(&["backup"]);
    assert_eq!(c, Some(0), "{out}{err}");
    let key = |n: &str| env.node_dir(n).join("keys/repository.age");
    let copies: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| key(n).exists())
        .collect();
    assert!(copies.len() >= 2, "the key is on several nodes: {copies:?}");
    // One flipped byte in the first node's copy: the others' copies are used.
    let mut bytes = std::fs::read(key(copies[0])).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(key(copies[0]), &bytes).unwrap();
    let to = env.path("r");
    let (c, out, err) = run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(c, Some(0), "{out}{err}");
    assert_eq!(fixtures::listing(&env.path("src")), fixtures::listing(&to));
    let (c, out, err) = run(&["backup"]);
    assert_eq!(c, Some(0), "{out}{err}");
    // verify names the damaged copy by node; repair writes the good one back.
    let (c, out, _) = run(&["verify", "latest", "--json"]);
    assert_eq!(c, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node"] == copies[0]
                && p["file"] == "keys/repository.age"
                && p["problem"] == "damaged"),
        "{v}"
    );
    let (c, out, err) = run(&["repair", "latest"]);
    assert_eq!(c, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("wrote the repository key to node {}", copies[0])),
        "{out}"
    );
    let (c, out, _) = run(&["verify", "latest"]);
    assert_eq!(c, Some(0), "{out}");
    // The key gone from every node while snapshots exist: an error, never a new key.
    for n in ["a", "b", "c"] {
        let _ = std::fs::remove_file(key(n));
    }
    let (c, out, err) = run(&["backup"]);
    assert_eq!(c, Some(2), "{out}{err}");
    assert!(
        err.contains("repository key") && err.contains("on no node"),
        "{err}"
    );
    assert!(
        ["a", "b", "c"].iter().all(|n| !key(n).exists()),
        "no new key was written"
    );
}
