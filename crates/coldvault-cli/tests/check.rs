//! `coldvault check`: a good job passes every check (exit 0); each broken part — a node that
//! refuses connections, a read-only staging directory, a missing `psql`, a wrong password, a
//! table the role may not read — is one failing line naming it, and exit 2. The PostgreSQL
//! cases use the server `scripts/test` starts.

mod common;

use coldvault_testing::Postgres;
use common::Env;
use serde_json::Value;

/// The failing checks of a `check --json` that must exit 2, as (check, detail).
fn failures(out: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], false, "{v}");
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_good_job_passes_every_check_before_and_after_init() {
    let env = Env::odd_tree(2);
    // Before the first backup the nodes' roots do not exist: the first backup makes them.
    let v = env.json(&["check"], 0);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["source", "node a", "node b", "node c", "staging"],
        "{v}"
    );
    assert!(v["checks"][1]["detail"]
        .as_str()
        .unwrap()
        .contains("the first backup (or init) creates it"));
    env.json(&["init"], 0);
    let (c, out, _) = env.run(&["check"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok  ")).count(),
        5,
        "{out}"
    );
    assert_eq!(out.matches("repository marker present").count(), 3, "{out}");
    // The probes were deleted.
    for n in ["a", "b", "c"] {
        let mut files = Vec::new();
        common::walk(&env.node_dir(n), &mut files);
        assert!(
            files.iter().all(|f| !f.to_string_lossy().contains("probe")),
            "{files:?}"
        );
    }
}

#[test]
fn a_node_that_refuses_connections_is_named_with_its_host() {
    let env = Env::odd_tree(2);
    let port = free_port();
    let text = std::fs::read_to_string(&env.job).unwrap().replace(
        "url = \"file:nodes/c\"",
        &format!("url = \"s3://b/p?endpoint=http://127.0.0.1:{port}&region=garage\""),
    );
    std::fs::write(&env.job, text).unwrap();
    let out = env
        .cmd(&["check", "--json"])
        .env("AWS_ACCESS_KEY_ID", "id")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let f = failures(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "node c");
    assert!(f[0].1.contains(&format!("127.0.0.1:{port}")), "{f:?}");
}

#[test]
fn a_read_only_staging_directory_fails_its_check() {
    let env = Env::odd_tree(2);
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    // A read-only file system over staging, in a private mount namespace (root cannot be kept
    // out of a directory by its mode).
    let script = format!(
        "mount -t tmpfs -o ro tmpfs '{staging}' || exit 90; '{bin}' check '{job}' --json",
        staging = staging.display(),
        bin = assert_cmd::cargo::cargo_bin("coldvault").display(),
        job = env.job.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let f = failures(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "staging");
    assert!(
        f[0].1.contains("not writable") && f[0].1.contains("Read-only file system"),
        "{f:?}"
    );
}

fn pg_env(pg: &Postgres, db: &str) -> Env {
    Env::new(
        &format!("type = \"postgres\"\nurl = \"{}\"", pg.url(db)),
        "max_rows = 1000",
        2,
    )
}

#[test]
fn postgres_checks_name_a_missing_psql_a_wrong_password_and_an_unreadable_table() {
    let pg = Postgres::from_env();
    let db = pg.create_db("check");
    let mut c = pg.client(&db);
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'x' FROM generate_series(1, 3000) i; ANALYZE t;
         CREATE TABLE secret (id int PRIMARY KEY); INSERT INTO secret VALUES (1);",
    )
    .unwrap();
    let env = pg_env(&pg, &db);
    let (code, out, err) = env.run_with(&["check", "--json"], "PGPASSWORD", &pg.password());
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(
        names.starts_with(&["program psql", "program pg_dump", "privileges", "source"]),
        "{v}"
    );

    // No psql on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = env
        .cmd(&["check", "--json"])
        .env("PGPASSWORD", pg.password())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let f = failures(&String::from_utf8_lossy(&out.stdout));
    assert!(
        f.iter()
            .any(|(c, d)| c == "program psql" && d.contains("cannot run psql")),
        "{f:?}"
    );

    // A wrong password: the source fails, in the server's words; the password is not shown.
    let (code, out, _) = env.run_with(&["check", "--json"], "PGPASSWORD", "not-the-password");
    assert_eq!(code, 2);
    let f = failures(&out);
    assert!(
        f.iter()
            .any(|(c, d)| c == "source" && d.contains("password authentication failed")),
        "{f:?}"
    );
    assert!(!out.contains("not-the-password"), "{out}");

    // A role that may not read one of the tables.
    let role = format!("reader_{db}");
    c.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT SELECT ON t TO {role};"
    ))
    .unwrap();
    let url = pg.url(&db).replacen("postgres@", &format!("{role}@"), 1);
    let env = Env::new(
        &format!("type = \"postgres\"\nurl = \"{url}\""),
        "max_rows = 1000",
        2,
    );
    let (code, out, _) = env.run_with(&["check", "--json"], "PGPASSWORD", "pw");
    assert_eq!(code, 2, "{out}");
    let f = failures(&out);
    assert!(
        f.iter().any(|(c, d)| c == "privileges"
            && d.contains("public.secret")
            && !d.contains("public.t,")),
        "{f:?}"
    );
}

#[test]
fn a_spark_master_that_does_not_answer_is_named() {
    let env = Env::odd_tree(2);
    let port = free_port();
    let mut text = std::fs::read_to_string(&env.job).unwrap();
    text.push_str(&format!(
        "\n[run.spark]\nmaster = \"spark://127.0.0.1:{port}\"\nsubmit = \"/bin/true\"\n"
    ));
    std::fs::write(&env.job, text).unwrap();
    let (c, out, _) = env.run(&["check", "--json"]);
    assert_eq!(c, 2, "{out}");
    let f = failures(&out);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "spark");
    assert!(
        f[0].1
            .contains(&format!("spark://127.0.0.1:{port} does not answer")),
        "{f:?}"
    );
}
