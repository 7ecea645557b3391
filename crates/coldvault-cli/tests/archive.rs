//! A node in an archive storage class, on the S3 server with archive semantics that
//! `scripts/test` starts (moto): data files there are archived, everything a backup, a listing
//! or a verify without `--read-data` reads is not, and a restore that has only the archive node
//! left requests the retrieval, waits for it and restores exactly.

mod common;

use coldvault::store::{ObjectKey, Readiness, Target, DATA_PREFIX};
use coldvault_testing::{fixtures, Moto};
use common::Env;

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos:x}", std::process::id())
}

/// Two local disks and an archive node `deep`; every data file on all three.
fn job(m: &Moto, prefix: &str) -> Env {
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"256KiB\"",
        3,
    );
    fixtures::odd_tree(&env.path("src"), 900_000);
    let text = std::fs::read_to_string(&env.job).unwrap().replace(
        "{ name = \"c\", url = \"file:nodes/c\" }",
        &format!(
            "{{ name = \"deep\", url = \"{}\", storage_class = \"DEEP_ARCHIVE\" }}",
            m.url(prefix)
        ),
    );
    std::fs::write(&env.job, text).unwrap();
    env
}

fn run(m: &Moto, env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd(args).envs(m.credentials()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `restore latest --to TO` with `extra` arguments.
fn restore(m: &Moto, env: &Env, to: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["restore", "latest", "--to", to.to_str().unwrap()];
    args.extend(extra);
    run(m, env, &args)
}

fn json(m: &Moto, env: &Env, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (c, out, err) = run(m, env, &a);
    assert_eq!(c, code, "{args:?}: exit {c}\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn an_archive_node_keeps_data_archived_and_a_restore_from_it_alone_retrieves_first() {
    let m = Moto::from_env();
    let prefix = unique("deep");
    let env = job(&m, &prefix);
    json(&m, &env, &["init"], 0);
    json(&m, &env, &["backup"], 0);
    let deep = m.target("deep", &format!("{prefix}/cold/e2e"), Some("DEEP_ARCHIVE"));

    // Data files are in the archive class and cannot be read; the rest is hot, and so are the
    // file-tree indexes, which the next backup reads.
    let data = deep.list(DATA_PREFIX).unwrap();
    assert!(data.len() > 3, "{data:?}");
    let (indexes, data): (Vec<_>, Vec<_>) = data
        .into_iter()
        .partition(|k| k.as_str().ends_with(".index.zst"));
    assert!(!indexes.is_empty() && data.len() > 3, "{data:?}");
    for key in &data {
        let c = deep.object_class(key).unwrap().unwrap();
        assert_eq!(c.class.as_deref(), Some("DEEP_ARCHIVE"), "{key}");
        assert_eq!(c.readiness, Readiness::Archived, "{key}");
    }
    let mut hot = deep.list("snapshots/").unwrap();
    hot.extend(indexes);
    hot.push(ObjectKey::new("config.json"));
    for key in &hot {
        let c = deep.object_class(key).unwrap().unwrap();
        assert_eq!(c.class.as_deref(), Some("STANDARD"), "{key}");
    }

    // Listing, verifying without reading and an incremental backup need no retrieval.
    std::fs::write(
        env.path("src/new.txt"),
        b"a file added for the second backup\n",
    )
    .unwrap();
    let b = json(&m, &env, &["backup"], 0);
    assert!(b["delta_tasks"].as_u64().unwrap() >= 1, "{b}");
    let snaps = json(&m, &env, &["snapshots"], 0);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 2, "{snaps}");
    let v = json(&m, &env, &["verify", "latest"], 0);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");

    // Three subset runs cover every readable replica (the disks'), each run adding to what the
    // records on the nodes say was read; the archive node's are listed as not read.
    let mut covered = 0;
    for n in 1..=3 {
        let v = json(
            &m,
            &env,
            &["verify", "latest", "--read-data-subset", &format!("{n}/3")],
            0,
        );
        let c = &v["coverage"];
        let now = c["read_30d_replicas"].as_u64().unwrap();
        assert!(now >= covered, "{v}");
        covered = now;
        if n == 3 {
            assert_eq!(c["never_read"], 0, "{v}");
            assert_eq!(c["read_30d_bytes"], c["bytes"], "{v}");
        }
    }

    // Reading data says which replicas it could not read, and why; the disks' are read.
    let v = json(&m, &env, &["verify", "latest", "--read-data"], 0);
    let unread = v["unread"].as_array().unwrap();
    assert!(!unread.is_empty(), "{v}");
    for u in unread {
        assert_eq!(u["node"], "deep", "{u}");
        assert!(
            u["reason"].as_str().unwrap().contains("DEEP_ARCHIVE"),
            "{u}"
        );
    }
    assert!(v["bytes_read"].as_u64().unwrap() > 0, "{v}");

    // The disks are gone: the archive node alone holds the data.
    std::fs::remove_dir_all(env.path("nodes/a")).unwrap();
    std::fs::remove_dir_all(env.path("nodes/b")).unwrap();
    let to = env.path("restored");
    let (c, out, err) = restore(&m, &env, &to, &["--retrieval-only"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        err.contains("data files only on archive nodes; 0 of them readable now"),
        "{err}"
    );
    let again: serde_json::Value = {
        let (c, out, err) = restore(&m, &env, &to, &["--retrieval-only", "--json"]);
        assert_eq!(c, 0, "{out}{err}");
        serde_json::from_str(&out).unwrap()
    };
    assert!(out.contains("retrievals requested now"), "{out}");
    assert!(!out.contains(" 0 retrievals requested now"), "{out}");
    assert!(!to.exists(), "--retrieval-only restored something");

    // The second run requested nothing again: moto completes a retrieval at once, so all were
    // ready (on AWS they would be under way, and counted as already requested).
    assert_eq!(again["requested"], 0, "{again}");
    assert_eq!(again["ready"], again["archived"], "{again}");
    assert!(again["archived"].as_u64().unwrap() > 3, "{again}");

    let (c, out, err) = restore(&m, &env, &to, &["--retrieval-poll", "1s"]);
    assert_eq!(c, 0, "{out}{err}");
    common::assert_same_lines(
        &fixtures::listing(&env.path("src")),
        &fixtures::listing(&to),
    );
}

#[test]
fn a_restore_requests_the_retrieval_waits_and_restores_in_one_run() {
    let m = Moto::from_env();
    let prefix = unique("deep1");
    let env = job(&m, &prefix);
    json(&m, &env, &["backup"], 0);
    std::fs::remove_dir_all(env.path("nodes/a")).unwrap();
    std::fs::remove_dir_all(env.path("nodes/b")).unwrap();
    let to = env.path("restored");

    // Without a retrieval the archive node's replicas cannot be read: the error says why.
    let deep = m.target("deep", &format!("{prefix}/cold/e2e"), Some("DEEP_ARCHIVE"));
    let key = deep.list(DATA_PREFIX).unwrap().remove(0);
    let err = deep
        .get(&key)
        .err()
        .expect("an archived object is readable");
    assert!(
        err.to_string().contains("archive class DEEP_ARCHIVE"),
        "{err}"
    );
    // The server itself refuses a plain read (what a node without storage_class meets after a
    // lifecycle rule), and the message says what to do.
    let plain = m.target("plain", &format!("{prefix}/cold/e2e"), None);
    let mut sink = Vec::new();
    let refused = plain
        .get(&key)
        .and_then(|mut r| {
            std::io::Read::read_to_end(&mut r, &mut sink)
                .map_err(|e| coldvault::Error::target(e.to_string()))
        })
        .expect_err("moto served an archived object");
    assert!(
        refused.to_string().contains("InvalidObjectState"),
        "{refused}"
    );

    let (c, out, err) = restore(&m, &env, &to, &["--retrieval-poll", "1s", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let retrieval = &r["retrieval"];
    assert!(retrieval["requested"].as_u64().unwrap() > 3, "{r}");
    assert_eq!(retrieval["requested"], retrieval["archived"], "{r}");
    common::assert_same_lines(
        &fixtures::listing(&env.path("src")),
        &fixtures::listing(&to),
    );
}

#[test]
fn storage_class_is_refused_on_a_local_node() {
    let env = Env::new("type = \"fs\"\npath = \"src\"", "", 1);
    std::fs::create_dir_all(env.path("src")).unwrap();
    let text = std::fs::read_to_string(&env.job).unwrap().replace(
        "url = \"file:nodes/a\" }",
        "url = \"file:nodes/a\", storage_class = \"DEEP_ARCHIVE\" }",
    );
    std::fs::write(&env.job, text).unwrap();
    let (c, _, err) = env.run(&["plan"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("storage_class is only for s3:// nodes"),
        "{err}"
    );
}
