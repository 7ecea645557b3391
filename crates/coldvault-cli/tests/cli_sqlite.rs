//! End to end through the real binary on a SQLite database with every storage class: the restored
//! database has the same schema and the same rows, each value with its storage class.

mod common;

use std::io::Write;
use std::process::{Command as Proc, Stdio};

use coldvault_testing::fixtures;
use common::Env;

fn sqlite_env() -> Env {
    let env = Env::new("type = \"sqlite\"\npath = \"src.db\"", "max_rows = 300", 2);
    fixtures::sqlite_every_class(&env.path("src.db"), 2000);
    env
}

#[test]
fn tables_split_by_rowid_and_restore_exactly() {
    let env = sqlite_env();
    let plan = env.json(&["plan"], 0);
    let mixed: Vec<_> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table"] == "mixed")
        .collect();
    assert_eq!(mixed.len(), 7, "2000 rows in ranges of 300");
    let r = env.json(&["backup"], 0);
    assert_eq!(r["rows"], 2000 + 50 + 45 + 2, "{r}");
    let restored = env.path("restored.db");
    let (code, out, err) = env.run(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    common::assert_same_lines(
        &fixtures::sqlite_dump(&env.path("src.db")),
        &fixtures::sqlite_dump(&restored),
    );
    // The AUTOINCREMENT counter survives: the next id continues after the old maximum.
    let conn = rusqlite::Connection::open(&restored).unwrap();
    conn.execute("INSERT INTO log(msg) VALUES('next')", [])
        .unwrap();
    let id: i64 = conn
        .query_row("SELECT max(id) FROM log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, 51);
    // Restoring over an existing file needs --force.
    let (code, _, err) = env.run(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn table_data_files_load_by_hand_with_zstdcat_and_sqlite3() {
    let env = sqlite_env();
    env.json(&["backup"], 0);
    let m = env.manifest("a");
    let db = env.path("byhand.db");
    let mut script = String::new();
    for o in m["sqlite"]["objects"].as_array().unwrap() {
        if o["type"] == "table" {
            script.push_str(o["sql"].as_str().unwrap());
            script.push_str(";\n");
        }
    }
    for t in m["tasks"].as_array().unwrap() {
        let node = t["data"]["nodes"][0].as_str().unwrap();
        let file = env.node_dir(node).join(t["data"]["key"].as_str().unwrap());
        let out = Proc::new("zstdcat").arg(&file).output().unwrap();
        assert!(out.status.success());
        script.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let mut child = Proc::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let rows = |p: &std::path::Path| {
        fixtures::sqlite_dump(p)
            .into_iter()
            .filter(|l| l.starts_with("row ") && !l.starts_with("row sqlite_sequence"))
            .collect::<Vec<_>>()
    };
    common::assert_same_lines(&rows(&env.path("src.db")), &rows(&db));
}

#[test]
fn a_missing_table_pattern_is_a_clear_error() {
    let env = sqlite_env();
    let text = std::fs::read_to_string(&env.job).unwrap().replace(
        "path = \"src.db\"",
        "path = \"src.db\"\ntables = [\"orders\"]",
    );
    std::fs::write(&env.job, text).unwrap();
    let (code, _, err) = env.run(&["backup"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"orders\" matches no table"), "{err}");
}
