//! PostgreSQL restores that give back what pg_dump would, on the real server `scripts/test`
//! starts: inheritance, dropped and generated columns, identity values, materialized views,
//! large objects and every kind of post-data object come back; a restore of some tables touches
//! nothing else in the target; a restore that fails says what it left, on stdout too with
//! `--json`, and `--force` replaces it.

mod common;

use coldvault_testing::Postgres;
use common::Env;

fn pg_env(pg: &Postgres, db: &str, extra: &str) -> Env {
    Env::new(
        &format!("type = \"postgres\"\nurl = \"{}\"{extra}", pg.url(db)),
        "max_rows = 40",
        2,
    )
}

fn run(pg: &Postgres, env: &Env, args: &[&str]) -> (i32, String, String) {
    env.run_with(args, "PGPASSWORD", &pg.password())
}

fn ok(pg: &Postgres, env: &Env, args: &[&str]) {
    let (c, out, err) = run(pg, env, args);
    assert_eq!(c, 0, "{args:?}: {out}{err}");
}

/// One value of a query.
fn one<T: for<'a> postgres::types::FromSql<'a>>(pg: &Postgres, db: &str, sql: &str) -> T {
    pg.client(db).query_one(sql, &[]).unwrap().get(0)
}

/// Row count and an order-independent hash of the rows by column name (`ONLY` the table).
fn content(pg: &Postgres, db: &str, table: &str) -> (i64, i64) {
    let row = pg
        .client(db)
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(hashtext(to_jsonb(t)::text)::int8), 0)::int8 \
                 FROM ONLY {table} t"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// `pg_dump --schema-only` without its header (the per-run `\restrict` key, versions).
fn schema_dump(pg: &Postgres, db: &str) -> String {
    pg.schema_dump(db)
        .lines()
        .filter(|l| !l.starts_with('\\') && !l.starts_with("-- Dumped "))
        .collect::<Vec<_>>()
        .join("\n")
}

const WILD: &str = "
CREATE TABLE parent (id int, name text);
CREATE TABLE child (extra point) INHERITS (parent);
INSERT INTO parent VALUES (1, 'only the parent');
INSERT INTO child VALUES (2, 'a child', '(1,2)'), (3, 'another', '(3,4)');
-- added after the child: last in the source's child, before `extra` in pg_dump's
ALTER TABLE parent ADD COLUMN late smallint DEFAULT 7;
UPDATE child SET late = 9 WHERE id = 3;
CREATE TABLE d (a int, b text, c int, e text);
ALTER TABLE d DROP COLUMN b;
INSERT INTO d SELECT i, i % 5 + 1, 'row ' || i FROM generate_series(1, 100) i;
CREATE TABLE g (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x int,
                y int GENERATED ALWAYS AS (x * 2) STORED);
INSERT INTO g (x) SELECT generate_series(1, 150);
DELETE FROM g WHERE id < 50;
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n, sum(y) AS s FROM g;
CREATE MATERIALIZED VIEW mv2 AS SELECT n * 2 AS n2 FROM mv;
CREATE MATERIALIZED VIEW never AS SELECT 1 AS one WITH NO DATA;
SELECT lo_from_bytea(424242, 'a large object, byte for byte');
COMMENT ON LARGE OBJECT 424242 IS 'with its comment';
CREATE INDEX g_x ON g (x);
ALTER TABLE d ADD CONSTRAINT d_c_small CHECK (c < 3) NOT VALID;
CREATE RULE d_no_negative AS ON INSERT TO d WHERE NEW.a < 0 DO INSTEAD NOTHING;
ALTER TABLE g ENABLE ROW LEVEL SECURITY;
CREATE POLICY g_positive ON g USING (x > 0);
CREATE PUBLICATION g_pub FOR TABLE g;
CREATE STATISTICS g_xy (dependencies) ON x, y FROM g;
CREATE FUNCTION d_default() RETURNS trigger LANGUAGE plpgsql
  AS $$BEGIN NEW.c := coalesce(NEW.c, 1); RETURN NEW; END$$;
CREATE TRIGGER d_default BEFORE INSERT ON d FOR EACH ROW EXECUTE FUNCTION d_default();
COMMENT ON TABLE d IS 'a table with a dropped column';
";

#[test]
fn inheritance_generated_columns_matviews_large_objects_and_post_data_round_trip() {
    let pg = Postgres::from_env();
    let db = pg.create_db("wild");
    pg.client(&db).batch_execute(WILD).unwrap();
    let env = pg_env(&pg, &db, "");
    ok(&pg, &env, &["backup"]);
    let to = pg.create_db("wild_back");
    ok(&pg, &env, &["restore", "latest", "--to", &pg.url(&to)]);

    for table in ["parent", "child", "d", "g", "mv", "mv2"] {
        assert_eq!(
            content(&pg, &to, table),
            content(&pg, &db, table),
            "{table}: rows by column name"
        );
    }
    assert_eq!(
        content(&pg, &to, "parent").0,
        1,
        "the parent's own row, once"
    );
    let never = "SELECT relispopulated FROM pg_class WHERE relname = 'never'";
    assert!(
        !one::<bool>(&pg, &to, never),
        "an unpopulated view stays so"
    );
    let lo = "SELECT encode(lo_get(424242), 'escape') || ' / ' \
              || obj_description(424242, 'pg_largeobject')";
    assert_eq!(one::<String>(&pg, &to, lo), one::<String>(&pg, &db, lo));
    assert_eq!(
        schema_dump(&pg, &to),
        schema_dump(&pg, &db),
        "every object, post-data included"
    );
    // --force replaces every object of the snapshot, large objects included, in place.
    ok(
        &pg,
        &env,
        &["restore", "latest", "--to", &pg.url(&to), "--force"],
    );
    assert_eq!(one::<String>(&pg, &to, lo), one::<String>(&pg, &db, lo));
    assert_eq!(content(&pg, &to, "child"), content(&pg, &db, "child"));
    assert_eq!(schema_dump(&pg, &to), schema_dump(&pg, &db));
    let next = "INSERT INTO g (x) VALUES (1) RETURNING id";
    assert_eq!(one::<i32>(&pg, &to, next), one::<i32>(&pg, &db, next));
    pg.client(&to)
        .batch_execute("INSERT INTO d (a) VALUES (-1), (1000)")
        .unwrap();
    assert_eq!(
        one::<i64>(&pg, &to, "SELECT count(*) FROM d WHERE a < 0"),
        0,
        "the rule holds on the restored table"
    );
    assert_eq!(
        one::<i32>(&pg, &to, "SELECT c FROM d WHERE a = 1000"),
        1,
        "the trigger fires on the restored table"
    );
}

#[test]
fn a_restore_of_some_tables_leaves_the_other_tables_of_the_target_alone() {
    let pg = Postgres::from_env();
    let db = pg.create_db("part");
    let both = "CREATE TABLE a (id serial PRIMARY KEY, v text);
                CREATE TABLE b (id int PRIMARY KEY, v text);";
    pg.client(&db)
        .batch_execute(&format!(
            "{both} INSERT INTO a (v) SELECT 'a' || i FROM generate_series(1, 90) i;
             INSERT INTO b SELECT i, 'source' FROM generate_series(1, 3) i;
             CREATE TABLE m (k int, v text) PARTITION BY RANGE (k);
             CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
             CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (100) TO (200);
             INSERT INTO m SELECT i, 'm' || i FROM generate_series(0, 199) i;"
        ))
        .unwrap();
    // A partition brings the partitioned table it belongs to, and nothing else.
    let env = pg_env(&pg, &db, "\ntables = [\"public.a\", \"public.m1\"]");
    ok(&pg, &env, &["backup"]);
    let to = pg.create_db("part_back");
    pg.client(&to)
        .batch_execute(&format!(
            "{both} DROP TABLE a; INSERT INTO b SELECT i, 'theirs' FROM generate_series(1, 7) i;"
        ))
        .unwrap();
    let theirs = "SELECT count(*) FROM b WHERE v = 'theirs'";

    ok(&pg, &env, &["restore", "latest", "--to", &pg.url(&to)]);
    assert_eq!(content(&pg, &to, "a"), content(&pg, &db, "a"));
    assert_eq!(content(&pg, &to, "m1"), content(&pg, &db, "m1"));
    assert_eq!(one::<i64>(&pg, &to, "SELECT count(*) FROM m"), 100);
    let m2 = "SELECT to_regclass('m2') IS NULL";
    assert!(one::<bool>(&pg, &to, m2), "m2 was not selected");
    assert_eq!(one::<i64>(&pg, &to, theirs), 7, "b is not the snapshot's");
    let next = "SELECT nextval('a_id_seq')";
    assert_eq!(one::<i64>(&pg, &to, next), one::<i64>(&pg, &db, next));

    let (c, _, err) = run(&pg, &env, &["restore", "latest", "--to", &pg.url(&to)]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("already has table public.a"), "{err}");
    ok(
        &pg,
        &env,
        &["restore", "latest", "--to", &pg.url(&to), "--force"],
    );
    assert_eq!(content(&pg, &to, "a"), content(&pg, &db, "a"));
    assert_eq!(one::<i64>(&pg, &to, theirs), 7, "not even with --force");
}

#[test]
fn a_target_holding_one_of_the_snapshots_objects_is_refused_having_changed_nothing() {
    let pg = Postgres::from_env();
    let db = pg.create_db("clash");
    let f = "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';";
    pg.client(&db)
        .batch_execute(&format!(
            "{f} CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);"
        ))
        .unwrap();
    let env = pg_env(&pg, &db, "");
    ok(&pg, &env, &["backup"]);
    let to = pg.create_db("clash_back");
    pg.client(&to).batch_execute(f).unwrap();
    let (c, out, err) = run(
        &pg,
        &env,
        &["restore", "latest", "--to", &pg.url(&to), "--json"],
    );
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("already has objects of the snapshot")
            && err.contains("function \"answer\" already exists")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("answer"), "{doc}");
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(one::<i64>(&pg, &to, tables), 0, "no table was created");
}

#[test]
fn a_restore_that_fails_part_way_says_what_it_left_and_force_replaces_it() {
    let pg = Postgres::from_env();
    let db = pg.create_db("halt");
    pg.client(&db)
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             CREATE INDEX t_v ON t (v);
             INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;",
        )
        .unwrap();
    let env = pg_env(&pg, &db, "");
    ok(&pg, &env, &["backup"]);
    let to = pg.create_db("halt_back");
    let paused = env.paused_at(
        &["restore", "latest", "--to", &pg.url(&to), "--json"],
        "pg-rows-loaded",
        "PGPASSWORD",
        &pg.password(),
    );
    // Someone else takes the index's name while the rows load: post-data cannot build it.
    pg.client(&to)
        .batch_execute("CREATE INDEX t_v ON t (id)")
        .unwrap();
    let (code, stdout, stderr) = paused.resume();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("now holds the schema of snapshot") && stderr.contains("--force"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["exit_code"], 1);
    let pk = "SELECT count(*) FROM pg_constraint WHERE conname = 't_pkey'";
    assert_eq!(one::<i64>(&pg, &to, pk), 0, "post-data is all or nothing");

    ok(
        &pg,
        &env,
        &["restore", "latest", "--to", &pg.url(&to), "--force"],
    );
    assert_eq!(content(&pg, &to, "t"), content(&pg, &db, "t"));
    assert_eq!(schema_dump(&pg, &to), schema_dump(&pg, &db));
}

#[test]
fn rows_a_security_policy_would_hide_from_the_backup_role_fail_the_backup() {
    let pg = Postgres::from_env();
    let db = pg.create_db("rls");
    let role = format!("reader_{}", std::process::id());
    pg.client(&db)
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw';
             CREATE TABLE secret (id int PRIMARY KEY, owner text);
             INSERT INTO secret VALUES (1, 'them'), (2, '{role}');
             ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
             CREATE POLICY mine ON secret USING (owner = current_user);
             GRANT SELECT ON secret TO {role};"
        ))
        .unwrap();
    let url = pg.url(&db).replace("postgres@", &format!("{role}@"));
    let env = Env::new(
        &format!("type = \"postgres\"\nurl = \"{url}\""),
        "max_rows = 40",
        2,
    );
    let (c, out, err) = env.run_with(&["backup"], "PGPASSWORD", "pw");
    assert_eq!(c, 1, "{out}{err}");
    assert!(err.contains("row-level security"), "{err}");
    assert!(
        env.run(&["snapshots", "--json"]).1.contains("[]"),
        "no snapshot"
    );
}
