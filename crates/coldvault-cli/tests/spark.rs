//! The Spark engine on the real standalone cluster that `scripts/test` starts (one master, two
//! workers): a file-tree job and a SQLite job through Spark, restored and compared exactly; a
//! worker killed during a job; a task that fails for good; a task run twice stores one data file.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::RwLock;
use std::time::Duration;

use coldvault_testing::{fixtures, Spark};
use common::Env;

static CLUSTER: RwLock<()> = RwLock::new(());

const SPARK_CONF: &str = "\n[run.spark]\nconf = { \"spark.driver.host\" = \"127.0.0.1\", \"spark.driver.bindAddress\" = \"127.0.0.1\" }\n";

fn spark_env(source: &str, split: &str) -> Env {
    let env = Env::new(source, split, 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.job)
        .unwrap();
    f.write_all(SPARK_CONF.as_bytes()).unwrap();
    env
}

fn run(s: &Spark, env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut a: Vec<&str> = args.to_vec();
    let master = s.var("SPARK_MASTER");
    if matches!(args[0], "backup" | "restore") {
        a.extend(["--engine", "spark", "--spark-master", &master]);
    }
    let mut cmd = env.spawnable(&a);
    cmd.envs(s.env());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `coldvault worker` with `input` on its stdin.
fn run_worker(input: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("coldvault"))
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_file_tree_job_runs_and_restores_on_spark_exactly() {
    let _shared = CLUSTER.read().unwrap();
    let s = Spark::from_env();
    let env = spark_env("type = \"fs\"\npath = \"src\"", "target_bytes = \"64KiB\"");
    fixtures::odd_tree(&env.path("src"), 300_000);
    let (c, out, err) = run(&s, &env, &["backup", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        r["snapshot"].is_string() && r["tasks"].as_u64().unwrap() > 4,
        "{r}"
    );
    // Restores the latest snapshot on Spark into `to` and compares it with the tree.
    let restores_exactly = |to: &str| {
        let to = env.path(to);
        let (c, out, err) = run(
            &s,
            &env,
            &["restore", "latest", "--to", to.to_str().unwrap()],
        );
        assert_eq!(c, 0, "{out}{err}");
        common::assert_same_lines(
            &fixtures::listing(&env.path("src")),
            &fixtures::listing(&to),
        );
    };
    restores_exactly("restored");
    assert_eq!(std::fs::read_dir(env.path("staging")).unwrap().count(), 0);

    // A change: executors fetch the parent's index and store only deltas; the restore of the
    // chain on executors gives the new tree.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(env.path("src/dir/a.txt"), b"changed on the way to spark").unwrap();
    std::fs::write(env.path("src/added"), b"new").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (c, out, err) = run(&s, &env, &["backup", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["delta_tasks"].as_u64().unwrap() >= 1, "{r}");
    restores_exactly("restored-2");
}

#[test]
fn a_sqlite_job_runs_on_spark_and_restores_exactly() {
    let _shared = CLUSTER.read().unwrap();
    let s = Spark::from_env();
    let env = spark_env("type = \"sqlite\"\npath = \"src.db\"", "max_rows = 300");
    fixtures::sqlite_every_class(&env.path("src.db"), 1500);
    let (c, out, err) = run(&s, &env, &["backup"]);
    assert_eq!(c, 0, "{out}{err}");
    let db = env.path("restored.db");
    let (c, out, err) = env.run(&["restore", "latest", "--to", db.to_str().unwrap()]);
    assert_eq!(c, 0, "{out}{err}");
    common::assert_same_lines(
        &fixtures::sqlite_dump(&env.path("src.db")),
        &fixtures::sqlite_dump(&db),
    );
}

#[test]
fn a_worker_killed_during_a_job_does_not_stop_it() {
    let _exclusive = CLUSTER.write().unwrap();
    let s = Spark::from_env();
    let env = spark_env("type = \"fs\"\npath = \"src\"", "target_bytes = \"1MiB\"");
    fixtures::odd_tree(&env.path("src"), 100_000);
    for i in 0..40 {
        std::fs::write(
            env.path(&format!("src/dir/bulk{i:03}")),
            fixtures::bytes(i, 1_000_000),
        )
        .unwrap();
    }
    let master = s.var("SPARK_MASTER");
    let mut cmd = env.spawnable(&["backup", "--engine", "spark", "--spark-master", &master]);
    cmd.envs(s.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until the application has executors working, then take a machine away.
    let mut killed = false;
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(250));
        let busy = std::fs::read_dir(s.dir.join("worker1/work"))
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if busy {
            std::thread::sleep(Duration::from_millis(1500));
            s.kill_worker(1);
            killed = true;
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    s.start_worker(1);
    assert!(killed, "worker 1 never got work");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let to = env.path("restored");
    let (c, o, e) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(c, 0, "{o}{e}");
    common::assert_same_lines(
        &fixtures::listing(&env.path("src")),
        &fixtures::listing(&to),
    );
    std::thread::sleep(Duration::from_secs(3)); // let worker 1 register again
}

#[test]
fn a_task_that_fails_for_good_fails_the_job_with_its_error() {
    let _shared = CLUSTER.read().unwrap();
    let s = Spark::from_env();
    let env = spark_env("type = \"fs\"\npath = \"src\"", "target_bytes = \"64KiB\"");
    fixtures::odd_tree(&env.path("src"), 100_000);
    let text = std::fs::read_to_string(&env.job)
        .unwrap()
        .replace("replicas = 2", "replicas = 1");
    let text = text.replace("  { name = \"b\", url = \"file:nodes/b\" },\n  { name = \"c\", url = \"file:nodes/c\" },\n", "");
    std::fs::write(&env.job, text).unwrap();
    // The node answers, but no data file can be written there: `data` is a file, not a directory.
    env.json(&["init"], 0);
    std::fs::write(env.node_dir("a").join("data"), b"in the way").unwrap();
    let (c, out, err) = run(&s, &env, &["backup", "--json"]);
    assert_eq!(c, 1, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["snapshot"].is_null());
    let failed = r["failed_tasks"].as_array().unwrap();
    assert_eq!(failed.len() as u64, r["tasks"].as_u64().unwrap());
    assert!(
        failed[0]["error"].as_str().unwrap().contains("node a"),
        "{r}"
    );
}

#[test]
fn a_task_run_twice_stores_one_data_file() {
    // What Spark does on a retry or a speculative copy: the same request, run again.
    let env = Env::new(
        "type = \"fs\"\npath = \"src\"",
        "target_bytes = \"64KiB\"",
        2,
    );
    fixtures::odd_tree(&env.path("src"), 100_000);
    env.json(&["init"], 0);
    let job = coldvault::Job::load(&env.job).unwrap();
    let plan = coldvault::Plan::new(&job).unwrap();
    let request = coldvault::worker::WorkRequest::Backup {
        job: std::borrow::Cow::Owned(job),
        task: plan.tasks[0].clone(),
    };
    let line = serde_json::to_string(&request).unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = run_worker(format!("{line}\n").as_bytes());
        assert!(out.status.success());
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        keys.push(
            reply["report"]["entry"]["data"]["key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(keys[0], keys[1]);
    for n in ["a", "b", "c"] {
        let files = env.data_files(n);
        assert!(files.len() <= 1, "node {n}: {files:?}");
    }
    let copies: usize = ["a", "b", "c"]
        .iter()
        .map(|n| env.data_files(n).len())
        .sum();
    assert_eq!(copies, 2, "one data file, two replicas");
}

#[test]
fn a_malformed_work_request_exits_2() {
    let out = run_worker(b"{\"op\": \"nonsense\"}\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed work request"));
}

#[test]
fn a_postgres_job_runs_and_restores_on_spark_under_one_snapshot() {
    let _shared = CLUSTER.read().unwrap();
    let s = Spark::from_env();
    let pg = coldvault_testing::Postgres::from_env();
    let db = pg.create_db("spark");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 5000) i;
             ANALYZE accounts;",
        )
        .unwrap();
    let env = spark_env(
        &format!("type = \"postgres\"\nurl = \"{}\"", pg.url(&db)),
        "max_rows = 1000",
    );
    let with_pw = |args: &[&str]| {
        let master = s.var("SPARK_MASTER");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--engine", "spark", "--spark-master", &master]);
        let out = env
            .spawnable(&a)
            .envs(s.env())
            .env("PGPASSWORD", pg.password())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, err) = with_pw(&["backup"]);
    assert_eq!(c, Some(0), "{err}");
    let restored = pg.create_db("spark_r");
    let url = pg.url(&restored);
    let (c, err) = with_pw(&["restore", "latest", "--to", &url]);
    assert_eq!(c, Some(0), "{err}");
    let tables = [("accounts", "id")];
    assert_eq!(
        pg.fingerprint(&db, &tables),
        pg.fingerprint(&restored, &tables)
    );
}
