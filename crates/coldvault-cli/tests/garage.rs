//! Remote nodes on the real three-node Garage cluster that `scripts/test` starts: every verb with
//! S3 and mixed nodes, node and cluster failures during a backup, bad credentials, a missing
//! bucket, a refused endpoint, a deleted object, and secrets that never leak.
//!
//! Tests that stop Garage nodes hold the write side of `CLUSTER`; the others hold the read side.

mod common;

use std::sync::RwLock;
use std::time::Duration;

use coldvault_testing::fixtures::unique;
use coldvault_testing::Garage;
use common::Env;

static CLUSTER: RwLock<()> = RwLock::new(());

/// A job over an odd tree (plus `tree_bytes` of bulk files) with the given (name, url) nodes.
fn job(nodes: &[(&str, String)], replicas: usize, tree_bytes: usize) -> Env {
    let entries: Vec<String> = nodes
        .iter()
        .map(|(n, url)| format!("name = \"{n}\", url = \"{url}\""))
        .collect();
    Env::with_nodes(&entries, replicas, tree_bytes)
}

/// Runs the binary with the cluster's credentials in the standard variables.
fn run(g: &Garage, env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .cmd(args)
        .env("AWS_ACCESS_KEY_ID", g.var("GARAGE_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", g.var("GARAGE_SECRET_ACCESS_KEY"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(g: &Garage, env: &Env, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (c, out, err) = run(g, env, &a);
    assert_eq!(c, code, "{args:?}: exit {c}\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn restore_exact(g: &Garage, env: &Env, to: &str) {
    let vars = [
        ("AWS_ACCESS_KEY_ID", g.var("GARAGE_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", g.var("GARAGE_SECRET_ACCESS_KEY")),
    ];
    env.assert_restores_src_exactly(&vars, to);
}

#[test]
fn every_verb_works_with_an_s3_node_and_a_local_one() {
    let _shared = CLUSTER.read().unwrap();
    let g = Garage::from_env();
    let prefix = unique("mixed");
    let env = job(
        &[("disk", "file:nodes/a".into()), ("garage", g.url(&prefix))],
        2,
        0,
    );
    json(&g, &env, &["init"], 0);
    let plan = json(&g, &env, &["plan"], 0);
    assert!(plan["tasks"].as_array().unwrap().len() > 2);
    let r = json(&g, &env, &["backup"], 0);
    assert!(r["snapshot"].is_string(), "{r}");
    let s = json(&g, &env, &["snapshots"], 0);
    assert_eq!(
        s["snapshots"][0]["nodes"],
        serde_json::json!(["disk", "garage"])
    );
    json(&g, &env, &["verify", "latest"], 0);
    let v = json(&g, &env, &["verify", "latest", "--read-data"], 0);
    assert!(v["bytes_read"].as_u64().unwrap() > 0);
    // Restore from the bucket alone: take the local node's data away.
    std::fs::remove_dir_all(env.node_dir("a").join("data")).unwrap();
    restore_exact(&g, &env, "restored");
    json(&g, &env, &["repair", "latest"], 0);
    json(&g, &env, &["verify", "latest", "--read-data"], 0);
}

#[test]
fn an_object_deleted_from_the_bucket_is_found_and_put_back() {
    let _shared = CLUSTER.read().unwrap();
    let g = Garage::from_env();
    let prefix = unique("deleted");
    let env = job(
        &[("disk", "file:nodes/a".into()), ("garage", g.url(&prefix))],
        2,
        0,
    );
    json(&g, &env, &["backup"], 0);
    let t = g.target("g", &format!("{prefix}/cold/e2e"));
    use coldvault::store::Target;
    let keys = t.list("data/").unwrap();
    assert!(!keys.is_empty());
    t.delete(&keys[0]).unwrap();
    let v = json(&g, &env, &["verify", "latest"], 1);
    let p = &v["problems"][0];
    assert_eq!(p["node"], "garage");
    assert_eq!(p["problem"], "missing");
    assert_eq!(p["file"], keys[0].as_str());
    let r = json(&g, &env, &["repair", "latest"], 0);
    assert_eq!(r["copied"][0]["to"], "garage", "{r}");
    json(&g, &env, &["verify", "latest", "--read-data"], 0);
}

#[test]
fn wrong_credentials_are_a_clear_error_naming_the_node() {
    let _shared = CLUSTER.read().unwrap();
    let g = Garage::from_env();
    let env = job(&[("garage", g.url(&unique("creds")))], 1, 0);
    let out = env
        .cmd(&["backup"])
        .env("AWS_ACCESS_KEY_ID", g.var("GARAGE_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("node garage"), "{err}");
    assert!(
        err.contains("access denied") || err.contains("403") || err.contains("Forbidden"),
        "{err}"
    );
}

#[test]
fn missing_credentials_name_the_variable() {
    let g = Garage::from_env();
    let env = job(&[("garage", g.url(&unique("nocreds")))], 1, 0);
    let vars = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
    env.assert_fails_saying(
        &["backup"],
        &[],
        &vars,
        &["AWS_ACCESS_KEY_ID", "node garage"],
    );
}

#[test]
fn a_missing_bucket_is_a_clear_error_naming_the_node() {
    let _shared = CLUSTER.read().unwrap();
    let g = Garage::from_env();
    let url = format!(
        "s3://no-such-bucket/x?endpoint={}&region=garage",
        g.endpoint()
    );
    let env = job(&[("garage", url)], 1, 0);
    let (c, _, err) = run(&g, &env, &["backup"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("node garage") && err.contains("no-such-bucket"),
        "{err}"
    );
}

#[test]
fn an_endpoint_that_refuses_connections_is_a_clear_error() {
    let g = Garage::from_env();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("s3://coldvault/x?endpoint=http://127.0.0.1:{port}&region=garage");
    let env = job(&[("garage", url)], 1, 0);
    let (c, _, err) = run(&g, &env, &["backup"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("node garage") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// Starts a backup, stops the Garage `nodes` once it is under way, and returns its output.
fn backup_while_nodes_go_down(g: &Garage, env: &Env, nodes: &[u32]) -> std::process::Output {
    let child = env
        .spawnable(&["backup", "--json"])
        .env("AWS_ACCESS_KEY_ID", g.var("GARAGE_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", g.var("GARAGE_SECRET_ACCESS_KEY"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    for &i in nodes {
        g.stop_node(i);
    }
    child.wait_with_output().unwrap()
}

#[test]
fn one_garage_node_stopped_during_a_backup_does_not_stop_it() {
    let _exclusive = CLUSTER.write().unwrap();
    let g = Garage::from_env();
    let env = job(&[("garage", g.url(&unique("onedown")))], 1, 30_000_000);
    let out = backup_while_nodes_go_down(&g, &env, &[3]);
    g.start_node(3);
    g.wait_healthy();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    restore_exact(&g, &env, "restored");
}

fn cluster_back(g: &Garage) {
    for i in 1..=3 {
        g.start_node(i);
    }
    g.wait_healthy();
}

#[test]
fn the_whole_cluster_down_during_a_backup_fails_clearly_then_completes_when_back() {
    let _exclusive = CLUSTER.write().unwrap();
    let g = Garage::from_env();
    // A disk and the bucket with two copies: without the cluster no data file can be complete.
    let env = job(
        &[
            ("disk", "file:nodes/a".into()),
            ("garage", g.url(&unique("alldown"))),
        ],
        2,
        60_000_000,
    );
    let out = backup_while_nodes_go_down(&g, &env, &[1, 2, 3]);
    cluster_back(&g);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["snapshot"].is_null(), "{r}");
    let failed = r["failed_tasks"].as_array().unwrap();
    assert!(!failed.is_empty());
    assert!(
        failed
            .iter()
            .all(|f| f["error"].as_str().unwrap().contains("node garage")),
        "{r}"
    );
    assert_eq!(
        json(&g, &env, &["snapshots"], 0)["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The cluster is back: the same command completes.
    let r = json(&g, &env, &["backup"], 0);
    assert!(r["snapshot"].is_string());
    restore_exact(&g, &env, "restored");
}

#[test]
fn the_whole_cluster_down_during_a_backup_moves_copies_to_other_nodes() {
    let _exclusive = CLUSTER.write().unwrap();
    let g = Garage::from_env();
    let env = job(
        &[
            ("disk1", "file:nodes/a".into()),
            ("disk2", "file:nodes/b".into()),
            ("garage", g.url(&unique("alldown3"))),
        ],
        2,
        60_000_000,
    );
    let out = backup_while_nodes_go_down(&g, &env, &[1, 2, 3]);
    cluster_back(&g);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    restore_exact(&g, &env, "restored");
}

#[test]
fn secrets_never_appear_in_output_or_stored_files() {
    let _shared = CLUSTER.read().unwrap();
    let g = Garage::from_env();
    let env = job(
        &[
            ("disk", "file:nodes/a".into()),
            ("garage", g.url(&unique("secrets"))),
        ],
        2,
        0,
    );
    let secret = g.var("GARAGE_SECRET_ACCESS_KEY");
    let key_id = g.var("GARAGE_ACCESS_KEY_ID");
    let to = env.path("restored");
    let to = to.to_str().unwrap();
    let mut seen = String::new();
    for args in [
        vec!["init"],
        vec!["plan", "--json"],
        vec!["backup"],
        vec!["backup", "--json"],
        vec!["snapshots"],
        vec!["verify", "latest", "--read-data", "--json"],
        vec!["repair", "latest"],
        vec!["restore", "latest", "--to", to],
    ] {
        let (_, out, err) = run(&g, &env, &args);
        seen.push_str(&out);
        seen.push_str(&err);
    }
    // A failing run prints errors too: they must not carry the secret either.
    let out = env
        .cmd(&["backup"])
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", format!("{secret}x"))
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(!seen.contains(&secret), "the secret key was printed");
    let mut files = Vec::new();
    common::walk(env.dir.path(), &mut files);
    for f in files
        .iter()
        .filter(|f| !f.starts_with(env.path("src")) && !f.starts_with(env.path("restored")))
    {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&secret), "secret found in {}", f.display());
        assert!(
            !text.contains(&key_id),
            "access key id found in {}",
            f.display()
        );
    }
    // The bucket holds the same manifest and data files as the disk node checked above.
}
