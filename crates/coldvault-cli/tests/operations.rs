//! Running backups unattended: the metrics file (read back by a Prometheus text-format parser)
//! after a run that saved a snapshot and after one that could not run, and the `before`,
//! `after` and `on_failure` hooks with the outcome in their environment and no secret.

mod common;

use std::collections::HashMap;

use common::Env;

/// Appends `lines` to the job's `[run]` section (the last one of the file).
fn with_run(env: &Env, lines: &str) {
    let mut text = std::fs::read_to_string(&env.job).unwrap();
    text.push_str(lines);
    std::fs::write(&env.job, text).unwrap();
}

/// The samples of a metrics file, by name and labels (`name{k="v",…}` with labels sorted).
fn scrape(path: &std::path::Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = HashMap::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{}: not a gauge: {other:?}", s.metric),
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    // Every family has its HELP and TYPE lines, as the textfile collector wants.
    for name in out.keys().map(|k| k.split('{').next().unwrap()) {
        assert!(
            text.contains(&format!("# TYPE {name} gauge")),
            "{name}\n{text}"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{name}\n{text}");
    }
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_metrics_file_tells_a_saved_run_from_one_that_could_not_run() {
    let env = Env::odd_tree(2);
    let path = env.path("metrics/coldvault.prom");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    with_run(
        &env,
        &format!("metrics_file = {:?}\n", path.to_str().unwrap()),
    );
    let report = env.json(&["backup"], 0);
    let m = scrape(&path);
    let job = "coldvault_job=\"e2e\"";
    assert_eq!(m[&format!("coldvault_last_run_success{{{job}}}")], 1.0);
    assert_eq!(m[&format!("coldvault_last_run_exit_code{{{job}}}")], 0.0);
    assert_eq!(
        m[&format!("coldvault_last_run_bytes_read{{{job}}}")],
        report["bytes_read"].as_f64().unwrap()
    );
    let newest = m[&format!("coldvault_newest_snapshot_timestamp_seconds{{{job}}}")];
    assert!((now() - newest).abs() < 120.0, "{newest}");
    let tasks = report["tasks"].as_f64().unwrap();
    assert_eq!(
        m[&format!("coldvault_last_run_tasks{{{job},state=\"done\"}}")],
        tasks
    );
    let written: f64 = ["a", "b", "c"]
        .iter()
        .map(|n| m[&format!("coldvault_last_run_node_bytes_written{{{job},node=\"{n}\"}}")])
        .sum();
    assert_eq!(written, 2.0 * report["bytes_stored"].as_f64().unwrap());
    assert!(m.contains_key(&format!(
        "coldvault_last_run_node_retries{{{job},node=\"a\"}}"
    )));

    // Node c is gone (a file where its root was) and three copies are wanted: the run cannot
    // start. The file says so, and still gives the newest snapshot's time.
    let text = std::fs::read_to_string(&env.job)
        .unwrap()
        .replace("replicas = 2", "replicas = 3");
    std::fs::write(&env.job, text).unwrap();
    std::fs::remove_dir_all(env.path("nodes/c")).unwrap();
    std::fs::write(env.path("nodes/c"), b"not a directory").unwrap();
    let (c, _, err) = env.run(&["backup", "--metrics-file", path.to_str().unwrap()]);
    assert_eq!(c, 2, "{err}");
    let m = scrape(&path);
    assert_eq!(m[&format!("coldvault_last_run_success{{{job}}}")], 0.0);
    assert_eq!(m[&format!("coldvault_last_run_exit_code{{{job}}}")], 2.0);
    assert_eq!(
        m[&format!("coldvault_newest_snapshot_timestamp_seconds{{{job}}}")],
        newest
    );
    assert!(!m.contains_key(&format!("coldvault_last_run_bytes_read{{{job}}}")));
    // No node answers at all: the newest snapshot's time is carried forward from the last file,
    // so an alert on its age keeps firing.
    for n in ["a", "b"] {
        std::fs::rename(
            env.path(&format!("nodes/{n}")),
            env.path(&format!("away-{n}")),
        )
        .unwrap();
    }
    let (c, _, err) = env.run(&["backup", "--metrics-file", path.to_str().unwrap()]);
    assert_eq!(c, 2, "{err}");
    let m = scrape(&path);
    assert_eq!(m[&format!("coldvault_last_run_success{{{job}}}")], 0.0);
    assert_eq!(
        m[&format!("coldvault_newest_snapshot_timestamp_seconds{{{job}}}")],
        newest
    );
    // Written whole under a temporary name, then renamed: nothing else is left beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn hooks_get_the_outcome_and_no_secret() {
    let env = Env::odd_tree(2);
    let log = env.path("hooks.log");
    let record = |name: &str| {
        format!(
            "{{ echo '== {name}'; env | grep -E '^(COLDVAULT_|AWS_|PATH=)' | sort; }} >> '{}'",
            log.display()
        )
    };
    with_run(
        &env,
        &format!(
            "before = {:?}\nafter = {:?}\non_failure = {:?}\n",
            record("before"),
            record("after"),
            record("on_failure")
        ),
    );
    let (c, out, err) = env.run_with(&["backup", "--json"], "AWS_SECRET_ACCESS_KEY", "hush-hush");
    assert_eq!(c, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let text = std::fs::read_to_string(&log).unwrap();
    let (before, after) = text.split_once("== after").unwrap();
    assert!(before.contains("COLDVAULT_JOB=e2e"), "{text}");
    assert!(!before.contains("COLDVAULT_EXIT_CODE"), "{text}");
    let snapshot = report["snapshot"].as_str().unwrap();
    assert!(
        after.contains(&format!("COLDVAULT_SNAPSHOT={snapshot}")),
        "{text}"
    );
    assert!(after.contains("COLDVAULT_EXIT_CODE=0"), "{text}");
    assert!(
        after.contains(&format!("COLDVAULT_BYTES_READ={}", report["bytes_read"])),
        "{text}"
    );
    assert!(
        !text.contains("hush-hush") && !text.contains("AWS_"),
        "{text}"
    );
    assert!(!text.contains("== on_failure"), "{text}");

    // A failing `before` stops the run: exit 2, no snapshot, and `on_failure` hears of it.
    std::fs::remove_file(&log).unwrap();
    let text = std::fs::read_to_string(&env.job).unwrap().replacen(
        "before = \"",
        "before = \"exit 9; ",
        1,
    );
    std::fs::write(&env.job, text).unwrap();
    let (c, _, err) = env.run(&["backup"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("the before hook failed (exit code 9)") && err.contains("did not run"),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("== on_failure"), "{text}");
    assert!(text.contains("COLDVAULT_EXIT_CODE=2"), "{text}");
    assert!(
        text.contains("COLDVAULT_ERROR=the before hook failed"),
        "{text}"
    );
    let snaps = env.json(&["snapshots"], 0);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 1, "{snaps}");
}

#[test]
fn json_log_lines_follow_a_backup_while_it_runs() {
    use std::io::BufRead;
    let env = Env::odd_tree(2);
    env.json(&["init"], 0);
    // Node c is unmounted: the run goes on with a and b, and says so.
    std::fs::remove_dir_all(env.path("nodes/c")).unwrap();
    let plan = env.json(&["plan"], 0);
    let tasks = plan["tasks"].as_array().unwrap().len();
    let flag = env.path("paused");
    let mut child = env
        .spawnable(&["backup", "--log-format", "json"])
        .env("COLDVAULT_PAUSE", "manifest")
        .env("COLDVAULT_PAUSE_FILE", &flag)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            assert!(
                event["time"].is_string() && event["event"].is_string(),
                "{line}"
            );
            tx.send(event).unwrap();
        }
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !flag.exists() {
        assert!(std::time::Instant::now() < until, "never paused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Paused before the manifest: every task's events are already out, line by line.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before: Vec<serde_json::Value> = rx.try_iter().collect();
    let named = |events: &[serde_json::Value], name: &str| {
        events.iter().filter(|e| e["event"] == name).count()
    };
    assert_eq!(named(&before, "task_started"), tasks, "{before:?}");
    assert_eq!(named(&before, "task_finished"), tasks, "{before:?}");
    assert!(before
        .iter()
        .filter(|e| e["event"] == "task_finished")
        .all(|e| e["ok"] == true && e["bytes_stored"].as_u64().is_some()));
    let left_out: Vec<_> = before
        .iter()
        .filter(|e| e["event"] == "node_left_out")
        .collect();
    assert_eq!(left_out.len(), 1, "{before:?}");
    assert_eq!(left_out[0]["node"], "c");
    assert_eq!(named(&before, "run_finished"), 0);
    std::fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let after: Vec<serde_json::Value> = rx.try_iter().collect();
    let finished: Vec<_> = after
        .iter()
        .filter(|e| e["event"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{after:?}");
    assert_eq!(finished[0]["exit_code"], 0);
    // The human summary still goes to standard output.
    assert!(String::from_utf8_lossy(&out.stdout).contains("saved"));
}
