//! End to end through the real binary on a SQLite database with every storage class: the restored
//! database has the same schema and the same rows, each value with its storage class. And on a
//! bank database that a writer keeps moving money in while it is backed up, in WAL and in
//! rollback-journal mode: the restored balances add up to the constant total (every task read one
//! committed state), and the backup says how that consistency was obtained.

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

/// Accounts in the bank database, and what each holds at the start.
const ACCOUNTS: i64 = 6000;
const OPENING_BALANCE: i64 = 1000;

/// A database at `path` in journal mode `mode` whose `accounts` balances add up to
/// `ACCOUNTS * OPENING_BALANCE`.
fn bank(path: &std::path::Path, mode: &str) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got, mode);
    conn.execute_batch("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        .unwrap();
    let tx = conn.transaction().unwrap();
    for id in 1..=ACCOUNTS {
        tx.execute("INSERT INTO accounts VALUES(?1, ?2)", [id, OPENING_BALANCE])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// (total balance, accounts) of a bank database.
fn ledger(path: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT sum(balance), count(*) FROM accounts", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

/// A writer that keeps moving money between two random accounts, one transaction per transfer
/// (the total never changes), until dropped; a transfer that finds the database busy is rolled
/// back and tried again, as an application would.
struct Transfers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Transfers {
    fn start(path: &std::path::Path) -> Transfers {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, c, path) = (stop.clone(), commits.clone(), path.to_owned());
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_millis(50))
                .unwrap();
            conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = move |n: i64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as i64
            };
            while !s.load(Ordering::Relaxed) {
                let (from, to, amount) = (next(ACCOUNTS) + 1, next(ACCOUNTS) + 1, next(100) + 1);
                let moved = conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     UPDATE accounts SET balance = balance - {amount} WHERE id = {from};
                     UPDATE accounts SET balance = balance + {amount} WHERE id = {to};
                     COMMIT;"
                ));
                match moved {
                    Ok(()) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        let _ = conn.execute_batch("ROLLBACK");
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        });
        Transfers {
            stop,
            commits,
            thread: Some(thread),
        }
    }

    fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` transfers have committed.
    fn wait_for(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.commits() < n {
            assert!(std::time::Instant::now() < deadline, "the writer is stuck");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Backs up the bank database while `Transfers` runs, restores it and checks the restored
/// ledger balances; returns the backup's JSON report and how many transfers committed while the
/// backup ran.
fn back_up_under_transfers(mode: &str) -> (Env, Transfers, serde_json::Value, u64) {
    let env = Env::new("type = \"sqlite\"\npath = \"bank.db\"", "max_rows = 400", 2);
    bank(&env.path("bank.db"), mode);
    let writer = Transfers::start(&env.path("bank.db"));
    writer.wait_for(200);
    let before = writer.commits();
    let r = env.json(&["backup", "--parallel", "2"], 0);
    let during = writer.commits() - before;
    assert!(r["tasks"].as_u64().unwrap() >= 10, "{r}");
    let restored = env.path("restored.db");
    let (code, out, err) = env.run(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ledger(&restored),
        (ACCOUNTS * OPENING_BALANCE, ACCOUNTS),
        "the restored ledger is not one that existed ({during} transfers committed during the \
         backup; {r})"
    );
    (env, writer, r, during)
}

#[test]
fn a_wal_database_written_during_the_backup_restores_to_one_committed_state() {
    let (env, writer, r, during) = back_up_under_transfers("wal");
    assert!(
        during > 0,
        "no transfer committed during the backup: the test proves nothing"
    );
    let c = r["consistency"].as_str().unwrap_or_default();
    assert!(c.contains("WAL") && c.contains("copy"), "{r}");
    // The human output says it too.
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("consistency: ") && l.contains("WAL")),
        "{out}"
    );
    // The copy the tasks read is gone with the run.
    assert_eq!(std::fs::read_dir(env.path("staging")).unwrap().count(), 0);
    drop(writer);
}

#[test]
fn a_rollback_journal_database_written_during_the_backup_restores_to_one_committed_state() {
    let (env, writer, r, _) = back_up_under_transfers("delete");
    let c = r["consistency"].as_str().unwrap_or_default();
    assert!(c.contains("rollback journal"), "{r}");
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("consistency: ") && l.contains("rollback journal")),
        "{out}"
    );
    drop(writer);
}
