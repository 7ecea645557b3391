//! PostgreSQL end to end on the real server that `scripts/test` starts: every common type
//! round-trips exactly, a concurrent write workload keeps its invariant in the restored data
//! (one snapshot for every task), skewed and sparse keys and key-less tables are covered once,
//! and bad input is a clear error that commits nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use coldvault_testing::Postgres;
use common::Env;

/// Table `r`: 5000 rows of an integer key and a text, analysed.
const TABLE_R: &str = "CREATE TABLE r (id int PRIMARY KEY, v text);
     INSERT INTO r SELECT i, md5(i::text) FROM generate_series(1, 5000) i;
     ANALYZE r;";

fn pg_env(pg: &Postgres, db: &str, extra: &str, max_rows: u64) -> Env {
    Env::new(
        &format!("type = \"postgres\"\nurl = \"{}\"{extra}", pg.url(db)),
        &format!("max_rows = {max_rows}"),
        2,
    )
}

fn run(pg: &Postgres, env: &Env, args: &[&str]) -> (i32, String, String) {
    env.run_with(args, "PGPASSWORD", &pg.password())
}

fn backup(pg: &Postgres, env: &Env) -> serde_json::Value {
    let (c, out, err) = run(pg, env, &["backup", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn restore_into_new_db(pg: &Postgres, env: &Env, prefix: &str) -> String {
    let db = pg.create_db(prefix);
    let (c, out, err) = run(pg, env, &["restore", "latest", "--to", &pg.url(&db)]);
    assert_eq!(c, 0, "{out}{err}");
    db
}

#[test]
fn every_common_type_round_trips_exactly() {
    let pg = Postgres::from_env();
    let db = pg.create_db("types");
    pg.client(&db)
        .batch_execute(
            r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE TABLE t (
  id bigint PRIMARY KEY, i2 smallint, i4 int, i8 bigint, n numeric, n2 numeric(30,10),
  r4 real, r8 double precision, tx text, vc varchar(20), bt bytea, js json, jb jsonb,
  d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid, arr int[], tarr text[],
  m mood, p pair, b bit(8), vb varbit, bo boolean);
INSERT INTO t VALUES
 (1, 32767, -2147483648, 9223372036854775807, 123456789012345678901234567890.123456789,
  -0.0000000001, 3.4e38, 'NaN', E'tab\there\nnewline\\backslash', '', '\x00ff10'::bytea,
  '{"a": [1, 2.50, null]}', '{"b": {"c": "d"}}', '4713-01-01 BC', '24:00:00', 'infinity',
  '2026-11-25 20:35:00.123456+05:30', '1 year 2 mons -3 days 04:05:06.789', gen_random_uuid(),
  '{1,NULL,3}', '{"a b","\"q\"",NULL,"\\N"}', 'happy', ROW(1, 'x,y'), B'10100101', B'1', true),
 (2, NULL, NULL, NULL, 'NaN', NULL, '-Infinity', 'Infinity', '\N', NULL, NULL, NULL, NULL,
  NULL, NULL, '-infinity', NULL, NULL, NULL, '{}', NULL, NULL, NULL, NULL, NULL, false),
 (3, -1, 0, -9223372036854775808, 0, 1e-10, 1.17549435e-38, 2.2250738585072014e-308,
  'ünïcødé ✓ 日本 🙂', 'x', '\x'::bytea, 'null', '[]', '2000-02-29', '00:00:00', '1970-01-01',
  '1970-01-01 00:00:00+00', '0', '00000000-0000-0000-0000-000000000000', '{{1,2},{3,4}}',
  '{""}', 'sad', ROW(NULL, NULL), B'00000000', B'', NULL);
INSERT INTO t (id, tx, bt, r8) SELECT i, repeat(chr(65 + i % 26), i % 50), decode(md5(i::text), 'hex'), i / 7.0
  FROM generate_series(4, 3000) i;
CREATE INDEX t_ts ON t (ts);
CREATE VIEW v AS SELECT id, tx FROM t WHERE id < 10;
CREATE TABLE counter (id serial PRIMARY KEY, x text);
INSERT INTO counter (x) SELECT 'c' FROM generate_series(1, 42);
ANALYZE;
"#,
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 500);
    let r = backup(&pg, &env);
    assert_eq!(r["rows"], 3000 + 42, "{r}");
    assert!(r["tasks"].as_u64().unwrap() >= 6, "{r}");
    let restored = restore_into_new_db(&pg, &env, "types_r");
    let tables = [("t", "id"), ("counter", "id")];
    assert_eq!(
        pg.fingerprint(&db, &tables),
        pg.fingerprint(&restored, &tables)
    );
    let mut c = pg.client(&restored);
    let view: i64 = c.query_one("SELECT count(*) FROM v", &[]).unwrap().get(0);
    assert_eq!(view, 9);
    let idx: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 't_ts'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(idx, 1, "indexes are created after the load");
    let next: i32 = c
        .query_one("INSERT INTO counter (x) VALUES ('n') RETURNING id", &[])
        .unwrap()
        .get(0);
    assert_eq!(next, 43, "sequences continue where they were");
}

#[test]
fn a_concurrent_transfer_workload_keeps_its_invariant() {
    let pg = Postgres::from_env();
    let db = pg.create_db("bank");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 20000) i;
             ANALYZE accounts;",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let transfers = {
        let (pg, db, stop) = (pg.clone(), db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = pg.client(&db);
            let mut n = 0u64;
            let mut x: u64 = 12345;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let a = (x >> 33) % 20000 + 1;
                let b = (x >> 13) % 20000 + 1;
                let amount = (x % 50) as i64;
                let mut t = c.transaction().unwrap();
                t.execute(
                    "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                    &[&amount, &(a as i32)],
                )
                .unwrap();
                t.execute(
                    "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                    &[&amount, &(b as i32)],
                )
                .unwrap();
                t.commit().unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let env = pg_env(&pg, &db, "", 400);
    let r = backup(&pg, &env);
    stop.store(true, Ordering::Relaxed);
    let n = transfers.join().unwrap();
    assert!(n > 10, "the workload ran during the backup ({n} transfers)");
    assert!(r["tasks"].as_u64().unwrap() >= 20, "{r}");
    let restored = restore_into_new_db(&pg, &env, "bank_r");
    let sum: i64 = pg
        .client(&restored)
        .query_one("SELECT sum(balance)::int8 FROM accounts", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum, 2_000_000, "every task read the same snapshot");
}

#[test]
fn skewed_sparse_negative_keys_and_keyless_tables_are_covered_once() {
    let pg = Postgres::from_env();
    let db = pg.create_db("skew");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE s (k bigint PRIMARY KEY, v text);
             INSERT INTO s SELECT i * i * i - 1000000, 'v' || i FROM generate_series(-300, 300) i;
             INSERT INTO s VALUES (-9223372036854775808, 'min'), (9223372036854775807, 'max');
             INSERT INTO s SELECT 5000000 + i, 'dense' FROM generate_series(1, 3000) i;
             CREATE TABLE heap (a int, b text);
             INSERT INTO heap SELECT i % 17, repeat('z', i % 200) FROM generate_series(1, 20000) i;
             ANALYZE;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 100);
    let (c, out, err) = run(&pg, &env, &["plan", "--json"]);
    assert_eq!(c, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let heap_tasks = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table"] == "public.heap")
        .count();
    assert!(
        heap_tasks > 2,
        "a table without a key splits by blocks: {plan}"
    );
    backup(&pg, &env);
    let restored = restore_into_new_db(&pg, &env, "skew_r");
    let tables = [("s", "k"), ("heap", "a, b")];
    assert_eq!(
        pg.fingerprint(&db, &tables),
        pg.fingerprint(&restored, &tables)
    );
}

#[test]
fn a_where_filter_keeps_only_the_cold_rows() {
    let pg = Postgres::from_env();
    let db = pg.create_db("cold");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, created date);
             INSERT INTO orders SELECT i, date '2020-01-01' + i FROM generate_series(1, 2000) i;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "\nwhere = \"created < date '2022-01-01'\"", 300);
    let r = backup(&pg, &env);
    assert_eq!(r["rows"], 730, "{r}");
}

#[test]
fn bad_input_is_a_clear_error_and_commits_nothing() {
    let pg = Postgres::from_env();
    let db = pg.create_db("bad");
    pg.client(&db)
        .batch_execute("CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x VALUES (1);")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgres://postgres@127.0.0.1:{port}/{db}");
    // (the source lines, what the error must say, variables to override)
    type Case<'a> = (String, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (format!("url = \"{unreachable}\""), "127.0.0.1:", vec![]),
        (
            format!("url = \"{}\"", pg.url(&db)),
            "password authentication failed",
            vec![("PGPASSWORD", "wrong")],
        ),
        (
            format!("url = \"{}\"", pg.url("no_such_db")),
            "no_such_db",
            vec![],
        ),
        (
            format!("url = \"{}\"\ntables = [\"nope\"]", pg.url(&db)),
            "\"nope\" matches no table",
            vec![],
        ),
        (
            format!("url = \"{}\"\nwhere = \"id <<>> 3\"", pg.url(&db)),
            "where = \"id <<>> 3\"",
            vec![],
        ),
    ];
    for (source, want, env_over) in cases {
        let env = Env::new(
            &format!("type = \"postgres\"\n{source}"),
            "max_rows = 10",
            2,
        );
        let mut cmd = env.cmd(&["backup"]);
        cmd.env("PGPASSWORD", pg.password());
        for (k, v) in env_over {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!err.contains(&pg.password()), "the password was printed");
        assert!(env.data_files("a").is_empty() && env.data_files("b").is_empty());
        let staging = env.path("staging");
        assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().count() == 0);
    }
}

#[test]
fn restore_refuses_a_target_that_has_the_tables_unless_forced() {
    let pg = Postgres::from_env();
    let db = pg.create_db("dup");
    pg.client(&db)
        .batch_execute(
            "CREATE TYPE kind AS ENUM ('a', 'b');
             CREATE TABLE x (id int PRIMARY KEY, k kind, v text);
             INSERT INTO x VALUES (1, 'a', 'one'), (2, 'b', 'two');
             CREATE TABLE y (id int PRIMARY KEY, x int REFERENCES x);
             INSERT INTO y VALUES (10, 1);
             CREATE VIEW vx AS SELECT id, v FROM x;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 10);
    backup(&pg, &env);
    pg.client(&db)
        .batch_execute("UPDATE x SET v = 'changed'; DELETE FROM y;")
        .unwrap();
    let (c, _, err) = run(&pg, &env, &["restore", "latest", "--to", &pg.url(&db)]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("already has table public.x") && err.contains("--force"),
        "{err}"
    );
    let (c, out, err) = run(
        &pg,
        &env,
        &["restore", "latest", "--to", &pg.url(&db), "--force"],
    );
    assert_eq!(c, 0, "{out}{err}");
    let mut c = pg.client(&db);
    let v: Vec<String> = c
        .query("SELECT v FROM vx ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        v,
        ["one", "two"],
        "--force replaced the tables with the snapshot's"
    );
    let y: i64 = c.query_one("SELECT count(*) FROM y", &[]).unwrap().get(0);
    assert_eq!(y, 1, "and the rows the snapshot had");
}

#[test]
fn per_table_where_and_columns_take_only_what_is_asked() {
    let pg = Postgres::from_env();
    let db = pg.create_db("pertable");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, created date, secret text);
             INSERT INTO orders SELECT i, date '2020-01-01' + i, 'card ' || i FROM generate_series(1, 2000) i;
             CREATE TABLE users (id int PRIMARY KEY, name text);
             INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 10) i;",
        )
        .unwrap();
    let settings = "\n[source.table.orders]\nwhere = \"created < date '2022-01-01'\"\ncolumns = [\"id\", \"created\"]";
    let env = pg_env(&pg, &db, settings, 300);
    let r = backup(&pg, &env);
    assert_eq!(r["rows"], 730 + 10, "{r}");
    let restored = restore_into_new_db(&pg, &env, "pertable_r");
    let mut c = pg.client(&restored);
    let row = c
        .query_one(
            "SELECT count(*), count(secret), max(created)::text FROM orders",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 730);
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "the column left out is not restored"
    );
    assert_eq!(row.get::<_, String>(2), "2021-12-31");
    let users: i64 = c
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(users, 10, "the other table is whole");
    let bad = pg_env(&pg, &db, "\n[source.table.nope]\ncolumns = [\"id\"]", 300);
    let (code, _, err) = run(&pg, &bad, &["backup"]);
    assert_eq!(code, 2);
    assert!(err.contains("names no selected table"), "{err}");
}

#[test]
fn split_by_a_nullable_column_covers_null_keys_once() {
    let pg = Postgres::from_env();
    let db = pg.create_db("splitby");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE events (id int PRIMARY KEY, account int, body text);
             INSERT INTO events SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 7) * (i % 7) * 1000 - 3000 END,
               'e' || i FROM generate_series(1, 3000) i;
             ANALYZE events;",
        )
        .unwrap();
    let env = pg_env(
        &pg,
        &db,
        "\n[source.table.events]\nsplit_by = \"account\"",
        200,
    );
    let (c, out, err) = run(&pg, &env, &["plan", "--json"]);
    assert_eq!(c, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t["split"]["null"] == "account")
            .count(),
        1,
        "{plan}"
    );
    assert!(
        tasks
            .iter()
            .filter(|t| t["split"]["key"] == "account")
            .count()
            > 1,
        "{plan}"
    );
    let r = backup(&pg, &env);
    assert_eq!(r["rows"], 3000, "{r}");
    let restored = restore_into_new_db(&pg, &env, "splitby_r");
    let tables = [("events", "id")];
    assert_eq!(
        pg.fingerprint(&db, &tables),
        pg.fingerprint(&restored, &tables)
    );
    let bad = pg_env(
        &pg,
        &db,
        "\n[source.table.events]\nsplit_by = \"body\"",
        200,
    );
    let (code, _, err) = run(&pg, &bad, &["plan"]);
    assert_eq!(code, 2);
    assert!(err.contains("not an integer column"), "{err}");
}

#[test]
fn a_resumed_backup_says_what_its_consistency_is() {
    let pg = Postgres::from_env();
    let db = pg.create_db("resume");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE a1 (id int PRIMARY KEY); CREATE TABLE a2 (id int PRIMARY KEY);
             CREATE TABLE a3 (id int PRIMARY KEY); CREATE TABLE a4 (id int PRIMARY KEY);
             INSERT INTO a1 VALUES (1); INSERT INTO a2 VALUES (2);
             INSERT INTO a3 VALUES (3); INSERT INTO a4 VALUES (4);
             CREATE TABLE r (id int PRIMARY KEY, v text);
             INSERT INTO r SELECT i, md5(i::text) FROM generate_series(1, 5000) i;
             ANALYZE;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 250);
    let out = env
        .cmd(&["backup", "--parallel", "1"])
        .env("PGPASSWORD", pg.password())
        .env("COLDVAULT_FAILPOINT", "receipt:3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "the first run was aborted");
    let r = backup(&pg, &env);
    assert!(r["reused_tasks"].as_u64().unwrap() >= 3, "{r}");
    let c = r["consistency"].as_str().unwrap();
    assert!(
        c.contains("resumed") && c.contains("not across both"),
        "the output says a resumed run is not one point in time: {c}"
    );
    let restored = restore_into_new_db(&pg, &env, "resume_r");
    assert_eq!(
        pg.fingerprint(&db, &[("r", "id")]),
        pg.fingerprint(&restored, &[("r", "id")])
    );
}

#[test]
fn a_resumed_backup_reads_a_table_split_by_blocks_again_whole_when_rows_moved_between_runs() {
    let pg = Postgres::from_env();
    let db = pg.create_db("moved");
    let mut client = pg.client(&db);
    client.batch_execute(TABLE_R).unwrap();
    let env = pg_env(&pg, &db, "", 250);
    let out = env
        .cmd(&["backup", "--parallel", "1"])
        .env("PGPASSWORD", pg.password())
        .env("COLDVAULT_FAILPOINT", "receipt:6")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "the first run was aborted");
    // The first blocks' rows are gone and some of the last rows moved into their space; the
    // table keeps its size, so the second run plans the same block ranges.
    for step in [
        "DELETE FROM r WHERE id <= 1000",
        "VACUUM r",
        "UPDATE r SET v = 'moved ' || id WHERE id > 4000",
    ] {
        client.batch_execute(step).unwrap();
    }
    let r = backup(&pg, &env);
    let restored = restore_into_new_db(&pg, &env, "moved_r");
    assert_eq!(
        pg.fingerprint(&db, &[("r", "id, v")]),
        pg.fingerprint(&restored, &[("r", "id, v")]),
        "no row twice, none lost"
    );
    assert_eq!(r["reused_tasks"], 0, "{r}");
}

#[test]
fn a_table_split_by_blocks_cannot_be_rewritten_while_the_backup_reads_it() {
    let pg = Postgres::from_env();
    let db = pg.create_db("rewrite");
    let mut client = pg.client(&db);
    client
        .batch_execute(&format!("{TABLE_R} DELETE FROM r WHERE id % 3 = 0;"))
        .unwrap();
    let env = pg_env(&pg, &db, "", 250);
    let paused = env.paused_at(
        &["backup", "--json", "--parallel", "1"],
        "receipt:3",
        "PGPASSWORD",
        &pg.password(),
    );
    // VACUUM FULL would pack the rows into other blocks between two ranges' reads.
    client
        .batch_execute("SET statement_timeout = '1s'")
        .unwrap();
    let rewrite = client.batch_execute("VACUUM FULL r");
    let (c, out, err) = paused.resume();
    assert_eq!(c, 0, "{out}{err}");
    let e = rewrite.expect_err("the backup holds the table against rewrites");
    assert!(
        format!("{:?}", e.as_db_error()).contains("statement timeout"),
        "{e:?}"
    );
    let restored = restore_into_new_db(&pg, &env, "rewrite_r");
    assert_eq!(
        pg.fingerprint(&db, &[("r", "id, v")]),
        pg.fingerprint(&restored, &[("r", "id, v")])
    );
}

#[test]
fn a_table_restored_from_one_large_range_comes_back_frozen_and_a_split_by_tables_two_ranges_both_land(
) {
    let pg = Postgres::from_env();
    let db = pg.create_db("frozen");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE small (id int PRIMARY KEY, v text);
             INSERT INTO small SELECT i, md5(i::text) FROM generate_series(1, 60000) i;
             CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT i, 'b' FROM generate_series(1, 150000) i;
             CREATE TABLE parent (id int, v text);
             CREATE TABLE child (extra int) INHERITS (parent);
             INSERT INTO parent SELECT i, 'p' FROM generate_series(1, 100) i;
             INSERT INTO child SELECT i, 'c', i FROM generate_series(101, 150) i;
             CREATE TABLE events (id int PRIMARY KEY, account int);
             INSERT INTO events SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE i END
               FROM generate_series(1, 600) i;
             CREATE TABLE og (g int GENERATED ALWAYS AS (7) STORED);
             INSERT INTO og SELECT FROM generate_series(1, 30);
             CREATE TABLE og_split (g int GENERATED ALWAYS AS (7) STORED);
             INSERT INTO og_split SELECT FROM generate_series(1, 250000);
             ANALYZE;",
        )
        .unwrap();
    let env = pg_env(
        &pg,
        &db,
        "\n[source.table.events]\nsplit_by = \"account\"",
        100_000,
    );
    let (c, out, err) = run(&pg, &env, &["plan", "--json"]);
    assert_eq!(c, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let of = |table: &str| -> Vec<serde_json::Value> {
        let tasks = plan["tasks"].as_array().unwrap();
        let named = |t: &&serde_json::Value| t["table"] == format!("public.{table}");
        tasks.iter().filter(named).cloned().collect()
    };
    assert!(of("big").len() > 1, "{plan}");
    // Only generated columns, read in ranges: nothing to read but the rows themselves.
    assert!(of("og_split").len() > 1, "{plan}");
    assert_eq!(of("small").len(), 1, "{plan}");
    // The case a careless freeze would lose rows in: a whole key range beside the NULL keys.
    let events = of("events");
    assert_eq!(events.len(), 2, "{plan}");
    assert!(events
        .iter()
        .all(|t| t["start"].is_null() && t["end"].is_null()));
    let r = backup(&pg, &env);
    assert_eq!(r["rows"], 60000 + 150000 + 150 + 600 + 30 + 250000, "{r}");
    let restored = restore_into_new_db(&pg, &env, "frozen_r");
    let tables = [
        ("small", "id"),
        ("big", "id"),
        ("ONLY parent", "id"),
        ("child", "id"),
        ("events", "id"),
        ("og", "g"),
        ("og_split", "g"),
    ];
    assert_eq!(
        pg.fingerprint(&db, &tables),
        pg.fingerprint(&restored, &tables)
    );
    let mut c = pg.client(&restored);
    c.batch_execute("CREATE EXTENSION pg_visibility").unwrap();
    // small's one range is 2.3 MB of COPY text: frozen; parent's and child's are a few KB,
    // where a TRUNCATE costs the server more than freezing saves.
    for (table, frozen_pages) in [("small", true), ("parent", false), ("child", false)] {
        let (pages, frozen): (i64, i64) = c
            .query_one(
                "SELECT pg_relation_size($1::text::regclass) / 8192, all_frozen \
                 FROM pg_visibility_map_summary($1::text::regclass)",
                &[&table],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert!(pages > 0, "{table}");
        let want = if frozen_pages { pages } else { 0 };
        assert_eq!(frozen, want, "frozen pages of {table}");
    }
}

#[test]
fn a_role_that_may_not_truncate_still_restores_a_large_table_unfrozen() {
    let pg = Postgres::from_env();
    let db = pg.create_db("notrunc");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE big_plain (id int, v text);
             INSERT INTO big_plain SELECT i, md5(i::text) FROM generate_series(1, 70000) i;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 100_000);
    backup(&pg, &env);
    // A restoring role that owns the target database but has given up TRUNCATE on its tables.
    let role = format!("cv_no_truncate_{}", std::process::id());
    let to = pg.create_db("notrunc_r");
    pg.client(&to)
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}'; ALTER DATABASE {to} OWNER TO {role};",
            pg.password()
        ))
        .unwrap();
    let url = pg.url(&to).replace("postgres@", &format!("{role}@"));
    let mut as_role = postgres::Config::new();
    as_role
        .host("127.0.0.1")
        .port(pg.port().parse().unwrap())
        .user(&role)
        .password(pg.password())
        .dbname(&to);
    as_role
        .connect(postgres::NoTls)
        .unwrap()
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES REVOKE TRUNCATE ON TABLES FROM {role}"
        ))
        .unwrap();
    let (c, out, err) = run(&pg, &env, &["restore", "latest", "--to", &url]);
    assert_eq!(c, 0, "{out}{err}");
    let tables = [("big_plain", "id")];
    assert_eq!(pg.fingerprint(&db, &tables), pg.fingerprint(&to, &tables));
    let mut c = pg.client(&to);
    c.batch_execute("CREATE EXTENSION pg_visibility").unwrap();
    let frozen: i64 = c
        .query_one(
            "SELECT all_frozen FROM pg_visibility_map_summary('big_plain')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(frozen, 0, "loaded as before, not frozen");
}

#[test]
fn dates_and_intervals_come_back_the_same_whatever_the_source_servers_datestyle() {
    let pg = Postgres::from_env();
    let db = pg.create_db("styles");
    pg.client(&db)
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET datestyle = 'SQL, DMY';
             ALTER DATABASE {db} SET intervalstyle = 'sql_standard';
             ALTER DATABASE {db} SET extra_float_digits = 0;"
        ))
        .unwrap();
    // A new session, so the database's settings apply to what the backup reads.
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE d (id int PRIMARY KEY, day date, at timestamptz, span interval, f float8);
             INSERT INTO d SELECT i, date '2026-01-04' + i, timestamptz '2026-01-04 10:00+00' + i * interval '1 day',
               make_interval(months => i, days => -i, secs => i * 1.5), 1.0 / (i + 3)
               FROM generate_series(1, 40) i;
             CREATE TABLE big_d (id int PRIMARY KEY, day date);
             INSERT INTO big_d SELECT i, date '2000-01-01' + (i % 9000) FROM generate_series(1, 30000) i;
             ANALYZE;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "", 10_000);
    backup(&pg, &env);
    let restored = restore_into_new_db(&pg, &env, "styles_r");
    let check = |db: &str, q: &str| -> String {
        let mut c = pg.client(db);
        c.batch_execute(
            "SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3",
        )
        .unwrap();
        c.query_one(q, &[]).unwrap().get(0)
    };
    for q in [
        "SELECT md5(string_agg(d::text, '|' ORDER BY id)) FROM d",
        "SELECT md5(string_agg(big_d::text, '|' ORDER BY id)) FROM big_d",
    ] {
        assert_eq!(check(&db, q), check(&restored, q), "{q}");
    }
}
