//! MySQL / MariaDB end to end on the real MariaDB server that `scripts/test` starts: every
//! common type round-trips exactly, a concurrent write workload keeps its invariant in the
//! restored data (one consistent snapshot for every task), skewed and sparse keys, NULL split
//! keys and key-less tables are covered once, and bad input is a clear error that commits nothing.
//! The schema's other objects are in [`objects`].

mod common;
#[path = "mariadb/objects.rs"]
mod objects;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use coldvault_testing::Mariadb;
use common::Env;
use mysql::prelude::Queryable;

fn my_env(my: &Mariadb, db: &str, extra: &str, max_rows: u64) -> Env {
    Env::new(
        &format!("type = \"mysql\"\nurl = \"{}\"{extra}", my.url(db)),
        &format!("max_rows = {max_rows}"),
        2,
    )
}

fn run(my: &Mariadb, env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .cmd(args)
        .env("MYSQL_PWD", my.password())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn backup(my: &Mariadb, env: &Env) -> serde_json::Value {
    let (c, out, err) = run(my, env, &["backup", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// Restores the latest snapshot into a database that does not exist yet (restore creates it).
fn restore_into_new_db(my: &Mariadb, env: &Env, prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let db = format!("{prefix}_{}_{nanos:x}", std::process::id());
    let (c, out, err) = run(my, env, &["restore", "latest", "--to", &my.url(&db)]);
    assert_eq!(c, 0, "{out}{err}");
    db
}

fn exec(my: &Mariadb, db: &str, sql: &str) {
    let mut c = my.conn(db);
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        c.query_drop(stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

#[test]
fn every_common_type_round_trips_exactly() {
    let my = Mariadb::from_env();
    let db = my.create_db("types");
    exec(
        &my,
        &db,
        r#"
CREATE TABLE parent (id INT PRIMARY KEY);
INSERT INTO parent VALUES (1), (2);
CREATE TABLE t (
  id BIGINT PRIMARY KEY, ti TINYINT, su SMALLINT UNSIGNED, mi MEDIUMINT, i INT,
  bu BIGINT UNSIGNED, d DECIMAL(38,10), f FLOAT, db DOUBLE, s VARCHAR(100), tx TEXT, b BLOB,
  vb VARBINARY(50), l1 VARCHAR(20) CHARACTER SET latin1, dt DATE, tm TIME(6), ts DATETIME(6),
  tz TIMESTAMP(3) NULL, j JSON, e ENUM('a','b c'), st SET('x','y'), bt BIT(10), yr YEAR,
  u UUID, ip INET6, p INT, KEY kp (p), UNIQUE KEY us (s),
  CONSTRAINT fk FOREIGN KEY (p) REFERENCES parent (id));
INSERT INTO t VALUES
 (1, -128, 65535, -8388608, -2147483648, 18446744073709551615, 1234567890123456789012345678.0123456789,
  1.5, 1.7976931348623157e308, 'tab\there', 'line\nnew\\slash \\N end\r', X'00FF0A090D5C5C4E', X'',
  'café', '1000-01-01', '-838:59:59.000000', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999',
  '{"a": [1, 2.50, {"b": null}]}', 'b c', 'x,y', b'1010101010', 2155,
  '123e4567-e89b-12d3-a456-426614174000', '2001:db8::1', 1);
INSERT INTO t VALUES
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', '', '', NULL, '', NULL, NULL, NULL, NULL,
  NULL, NULL, '', NULL, NULL, NULL, NULL, NULL);
INSERT INTO t VALUES
 (3, 0, 0, 0, 0, 0, -0.0000000001, -3.4e38, 2.2250738585072014e-308, '\\N', 'ünïcødé ✓ 日本 🙂',
  X'5C4E', X'00', NULL, '2024-02-29', '00:00:00', '1970-01-01 00:00:01', '1970-01-01 00:00:01',
  '"str"', 'a', '', b'0', 1901, '00000000-0000-0000-0000-000000000000', '::', 2);
INSERT INTO t VALUES
 (-9223372036854775808, 1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 'x', 'y', X'', X'', 'z', NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO t (id, s, tx, b, db) SELECT seq, CONCAT('s', seq), REPEAT(CHAR(65 + seq % 26), seq % 50),
  UNHEX(MD5(seq)), seq / 7 FROM seq_4_to_3000;
CREATE TABLE counter (id INT AUTO_INCREMENT PRIMARY KEY, x VARCHAR(3), g INT AS (id * 2) VIRTUAL);
INSERT INTO counter (x) SELECT 'c' FROM seq_1_to_42;
CREATE VIEW v AS SELECT id, s FROM t WHERE id BETWEEN 1 AND 9;
CREATE VIEW vv AS SELECT COUNT(*) AS n FROM v;
ANALYZE TABLE t, counter;
"#,
    );
    let every_byte: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    exec(
        &my,
        &db,
        &format!(
            "UPDATE t SET b = UNHEX('{every_byte}'), vb = UNHEX('{}') WHERE id = 4",
            &every_byte[..100]
        ),
    );
    let env = my_env(&my, &db, "", 500);
    let r = backup(&my, &env);
    assert_eq!(r["rows"], 2 + 3001 + 42, "{r}");
    assert!(r["tasks"].as_u64().unwrap() >= 6, "{r}");
    assert!(
        r["consistency"]
            .as_str()
            .unwrap()
            .contains("global read lock"),
        "{r}"
    );
    let restored = restore_into_new_db(&my, &env, "types_r");
    let tables = ["parent", "t", "counter"];
    assert_eq!(
        my.fingerprint(&db, &tables),
        my.fingerprint(&restored, &tables)
    );
    assert_eq!(my.rows(&db, "t", "id"), my.rows(&restored, "t", "id"));
    assert_eq!(
        my.rows(&db, "counter", "id"),
        my.rows(&restored, "counter", "id")
    );
    let mut c = my.conn(&restored);
    let n: u64 = c.query_first("SELECT n FROM vv").unwrap().unwrap();
    assert_eq!(n, 9, "views are created, in dependency order");
    let mut indexes: Vec<String> = c
        .query("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' ORDER BY 1")
        .unwrap();
    indexes.sort();
    assert_eq!(indexes, ["PRIMARY", "kp", "us"]);
    let fks: u64 = c
        .query_first("SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()")
        .unwrap()
        .unwrap();
    assert_eq!(fks, 1, "foreign keys are created after the load");
    let next = |db: &str| -> u64 {
        let mut c = my.conn(db);
        c.query_drop("INSERT INTO counter (x) VALUES ('n')")
            .unwrap();
        c.query_first("SELECT LAST_INSERT_ID()").unwrap().unwrap()
    };
    let want = next(&db);
    assert!(want > 42);
    assert_eq!(
        next(&restored),
        want,
        "AUTO_INCREMENT continues where it was"
    );
}

#[test]
fn a_concurrent_transfer_workload_keeps_its_invariant() {
    let my = Mariadb::from_env();
    let db = my.create_db("bank");
    exec(
        &my,
        &db,
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
INSERT INTO accounts SELECT seq, 100 FROM seq_1_to_20000;
ANALYZE TABLE accounts",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let transfers = {
        let (my, db, stop) = (my.clone(), db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = my.conn(&db);
            let (mut n, mut x) = (0u64, 12345u64);
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let (a, b, amount) = ((x >> 33) % 20000 + 1, (x >> 13) % 20000 + 1, x % 50);
                c.query_drop("START TRANSACTION").unwrap();
                c.query_drop(format!(
                    "UPDATE accounts SET balance = balance - {amount} WHERE id = {a}"
                ))
                .unwrap();
                c.query_drop(format!(
                    "UPDATE accounts SET balance = balance + {amount} WHERE id = {b}"
                ))
                .unwrap();
                c.query_drop("COMMIT").unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let env = my_env(&my, &db, "", 400);
    let r = backup(&my, &env);
    stop.store(true, Ordering::Relaxed);
    let n = transfers.join().unwrap();
    assert!(n > 10, "the workload ran during the backup ({n} transfers)");
    assert!(r["tasks"].as_u64().unwrap() >= 20, "{r}");
    let restored = restore_into_new_db(&my, &env, "bank_r");
    let sum: i64 = my
        .conn(&restored)
        .query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM accounts")
        .unwrap()
        .unwrap();
    assert_eq!(sum, 2_000_000, "every task read the same snapshot");
}

#[test]
fn skewed_sparse_negative_keys_null_split_keys_and_keyless_tables_are_covered_once() {
    let my = Mariadb::from_env();
    let db = my.create_db("skew");
    exec(
        &my,
        &db,
        "CREATE TABLE skewed (id BIGINT PRIMARY KEY, v INT);
INSERT INTO skewed SELECT seq, seq FROM seq_1_to_3000;
INSERT INTO skewed VALUES (-9223372036854775808, 0), (-5, 0), (1000000000000, 0), (9223372036854775807, 0);
INSERT INTO skewed SELECT 5000000000 + seq * 1000003, seq FROM seq_1_to_500;
CREATE TABLE keyless (a INT, b TEXT);
INSERT INTO keyless SELECT seq % 7, REPEAT('k', seq % 13) FROM seq_1_to_1500;
INSERT INTO keyless VALUES (NULL, NULL), (NULL, ''), (1, NULL);
CREATE TABLE nullable (id INT PRIMARY KEY, grp INT NULL, x VARCHAR(10));
INSERT INTO nullable SELECT seq, IF(seq % 5 = 0, NULL, seq % 400), 'n' FROM seq_1_to_2000;
CREATE TABLE few_nullable (id INT PRIMARY KEY, grp INT NULL);
INSERT INTO few_nullable SELECT seq, IF(seq % 5 = 0, NULL, seq) FROM seq_1_to_100;
CREATE TABLE ubig (id BIGINT UNSIGNED PRIMARY KEY);
INSERT INTO ubig VALUES (0), (1), (9223372036854775807), (9223372036854775808), (18446744073709551615);
INSERT INTO ubig SELECT seq * 3 FROM seq_1_to_900;
ANALYZE TABLE skewed, keyless, nullable, few_nullable, ubig",
    );
    let env = my_env(
        &my,
        &db,
        "\n[source.table.nullable]\nsplit_by = \"grp\"\n[source.table.few_nullable]\nsplit_by = \"grp\"",
        300,
    );
    let (c, plan, err) = run(&my, &env, &["plan"]);
    assert_eq!(c, 0, "{err}");
    assert!(plan.contains("grp IS NULL"), "{plan}");
    assert!(plan.matches("table skewed").count() >= 8, "{plan}");
    let r = backup(&my, &env);
    // few_nullable is one key range beside its NULL keys: each row is read once.
    assert_eq!(r["rows"], 3504 + 1503 + 2000 + 100 + 905, "{r}");
    let restored = restore_into_new_db(&my, &env, "skew_r");
    let tables = ["skewed", "keyless", "nullable", "few_nullable", "ubig"];
    assert_eq!(
        my.fingerprint(&db, &tables),
        my.fingerprint(&restored, &tables)
    );
}

#[test]
fn per_table_where_and_columns_take_only_what_is_asked() {
    let my = Mariadb::from_env();
    let db = my.create_db("cold");
    exec(
        &my,
        &db,
        "CREATE TABLE orders (id INT PRIMARY KEY, created DATE NOT NULL, total INT, note VARCHAR(10) DEFAULT 'dflt');
INSERT INTO orders SELECT seq, DATE_SUB('2026-11-25', INTERVAL seq DAY), seq, 'x' FROM seq_1_to_1000;
CREATE TABLE logs (id INT PRIMARY KEY, msg TEXT);
INSERT INTO logs SELECT seq, 'm' FROM seq_1_to_100",
    );
    let env = my_env(
        &my,
        &db,
        "\nwhere = \"id > 90\"\n[source.table.orders]\nwhere = \"created < '2026-01-01'\"\ncolumns = [\"id\", \"created\", \"total\"]",
        100,
    );
    let r = backup(&my, &env);
    let cold: u64 = my
        .conn(&db)
        .query_first("SELECT COUNT(*) FROM orders WHERE created < '2026-01-01'")
        .unwrap()
        .unwrap();
    assert_eq!(r["rows"], cold + 10, "{r}");
    let restored = restore_into_new_db(&my, &env, "cold_r");
    let mut c = my.conn(&restored);
    let (n, notes): (u64, String) = c
        .query_first(
            "SELECT COUNT(*), GROUP_CONCAT(DISTINCT note) FROM orders WHERE created < '2026-01-01'",
        )
        .unwrap()
        .unwrap();
    assert_eq!(n, cold);
    assert_eq!(notes, "dflt", "columns left out take their defaults");
    let logs: u64 = c.query_first("SELECT COUNT(*) FROM logs").unwrap().unwrap();
    assert_eq!(
        logs, 10,
        "the source-level where applies to the other tables"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_commits_nothing() {
    let my = Mariadb::from_env();
    let db = my.create_db("bad");
    exec(
        &my,
        &db,
        &format!(
            "CREATE TABLE x (id INT PRIMARY KEY);
INSERT INTO x VALUES (1);
CREATE USER IF NOT EXISTS 'weak'@'127.0.0.1' IDENTIFIED BY 'weakpw';
GRANT SELECT ON {db}.* TO 'weak'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'noevent'@'127.0.0.1' IDENTIFIED BY 'weakpw';
GRANT SELECT ON {db}.* TO 'noevent'@'127.0.0.1';
GRANT RELOAD ON *.* TO 'noevent'@'127.0.0.1'"
        ),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = my.url(&db);
    let weak = url.replace("root@", "weak@");
    // (the source lines, extra arguments, what the error must say, variables to override)
    type Case<'a> = (String, Vec<&'a str>, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            format!("url = \"mysql://root@127.0.0.1:{port}/{db}\""),
            vec![],
            "127.0.0.1:",
            vec![],
        ),
        (
            format!("url = \"{url}\""),
            vec![],
            "Access denied",
            vec![("MYSQL_PWD", "wrong")],
        ),
        (
            format!("url = \"{}\"", my.url("no_such_db")),
            vec![],
            "no_such_db",
            vec![],
        ),
        (
            format!("url = \"{url}\"\ntables = [\"nope\"]"),
            vec![],
            "\"nope\" matches no table",
            vec![],
        ),
        (
            format!("url = \"{url}\"\nwhere = \"id <<>> 3\""),
            vec![],
            "where = \"id <<>> 3\"",
            vec![],
        ),
        (
            format!("url = \"{weak}\"\npassword_env = \"WEAK_PW\""),
            vec![],
            "RELOAD privilege",
            vec![("WEAK_PW", "weakpw")],
        ),
        (
            format!(
                "url = \"{}\"\npassword_env = \"WEAK_PW\"",
                url.replace("root@", "noevent@")
            ),
            vec![],
            "grant the backup user EVENT",
            vec![("WEAK_PW", "weakpw")],
        ),
        (
            format!("url = \"{url}\""),
            vec!["--engine", "spark", "--spark-master", "spark://127.0.0.1:1"],
            "local engine",
            vec![],
        ),
        (
            format!("url = \"mysql://root:secret@127.0.0.1:{port}/{db}\""),
            vec![],
            "not in the URL",
            vec![],
        ),
    ];
    for (source, args, want, env_over) in cases {
        let env = Env::new(&format!("type = \"mysql\"\n{source}"), "max_rows = 10", 2);
        let mut all = vec!["backup"];
        all.extend(args);
        let mut cmd = env.cmd(&all);
        cmd.env("MYSQL_PWD", my.password());
        for (k, v) in env_over {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains(&my.password()), "the password was printed");
        assert!(!err.contains("weakpw"), "the password was printed");
        assert!(env.data_files("a").is_empty() && env.data_files("b").is_empty());
        let staging = env.path("staging");
        assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().count() == 0);
    }
}

#[test]
fn restore_refuses_existing_tables_unless_forced() {
    let my = Mariadb::from_env();
    let db = my.create_db("dup");
    exec(
        &my,
        &db,
        "CREATE TABLE x (id INT PRIMARY KEY, v TEXT);
INSERT INTO x VALUES (1, 'one'), (2, 'two')",
    );
    let env = my_env(&my, &db, "", 10);
    backup(&my, &env);
    exec(&my, &db, "UPDATE x SET v = 'changed'");
    let (c, _, err) = run(&my, &env, &["restore", "latest", "--to", &my.url(&db)]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("already has table `x`") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(my.rows(&db, "x", "id").len(), 2, "nothing was touched");
    let (c, out, err) = run(
        &my,
        &env,
        &["restore", "latest", "--to", &my.url(&db), "--force"],
    );
    assert_eq!(c, 0, "{out}{err}");
    let v: Vec<String> = my.conn(&db).query("SELECT v FROM x ORDER BY id").unwrap();
    assert_eq!(
        v,
        ["one", "two"],
        "--force replaced the table with the snapshot's"
    );
}

#[test]
fn a_restore_that_fails_part_way_says_what_it_left_and_force_replaces_it() {
    let my = Mariadb::from_env();
    let db = my.create_db("halt");
    exec(
        &my,
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20), KEY t_v (v));
INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    );
    let env = my_env(&my, &db, "", 10);
    backup(&my, &env);
    let to = my.create_db("halt_back");
    let paused = env.paused_at(
        &["restore", "latest", "--to", &my.url(&to), "--json"],
        "my-rows-loaded",
        "MYSQL_PWD",
        &my.password(),
    );
    // Someone else takes the index's name while the rows load: it cannot be built.
    exec(&my, &to, "CREATE INDEX t_v ON t (id)");
    let (code, stdout, stderr) = paused.resume();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("now holds part of snapshot") && stderr.contains("--force"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["exit_code"], 1);

    let (c, out, err) = run(
        &my,
        &env,
        &["restore", "latest", "--to", &my.url(&to), "--force"],
    );
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(my.rows(&to, "t", "id"), my.rows(&db, "t", "id"));
}
