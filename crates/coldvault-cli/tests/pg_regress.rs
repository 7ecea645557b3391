//! PostgreSQL fidelity on data nobody here wrote (issue #13): PostgreSQL 15's regression database,
//! loaded the way `pg_regress` loads it (`scripts/pg-regress-load`, from the SQL cached in
//! `tests/fixtures/pg-regress`), backed up and restored with coldvault, and restored with
//! `pg_dump -Fd` + `pg_restore` as the reference. Both restores are compared with the source
//! (`coldvault_testing::pg_compare`: per table and matview its rows by column name, sequences,
//! large objects, the schema object by object); coldvault passes when it has no difference that
//! pg_restore does not also have. A check of the comparator itself makes sure it can fail.

mod common;

use std::path::Path;
use std::time::Instant;

use coldvault_testing::pg_compare::{compare, differences, Contents};
use coldvault_testing::Postgres;
use common::Env;

/// Loads the regression database into the new database `db`; returns the loader's summary line.
fn load_regression(pg: &Postgres, db: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-regress-load");
    let out = std::process::Command::new(&script)
        .arg(pg.url(db))
        .env("PGPASSWORD", pg.password())
        .env("PG_BIN", pg.bin("psql").parent().unwrap())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/pg-regress-load failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim().to_owned()
}

/// Runs the real binary on `env`'s job with the password in the environment.
fn coldvault(pg: &Postgres, env: &Env, args: &[&str]) -> (i32, String) {
    let out = env
        .cmd(args)
        .env("PGPASSWORD", pg.password())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Restores `source` with `pg_dump -Fd -j2` + `pg_restore -j2` into a new database.
fn pg_dump_restore(pg: &Postgres, source: &str, dir: &Path) -> String {
    let dump = pg
        .command("pg_dump")
        .args(["-Fd", "-j2", "-f"])
        .arg(dir)
        .args(["-d", &pg.url(source)])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "pg_dump -Fd failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let db = pg.create_db("regress_pg");
    let restore = pg
        .command("pg_restore")
        .args(["-j2", "-d", &pg.url(&db)])
        .arg(dir)
        .output()
        .unwrap();
    // The reference must be sound, or every difference of coldvault would pass as "pg_restore's
    // too".
    assert!(
        restore.status.success(),
        "pg_restore -j2 failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    db
}

/// Asserts that the load left a realistic database: thresholds from a run here (536 tables,
/// 413,851 rows, 8 matviews, 3 large objects, 45 sequences, 1,773 schema objects), less a margin,
/// so a loader that silently loads little fails.
fn assert_loaded(c: &Contents, summary: &str) {
    let got = format!(
        "{} tables, {} rows, {} matviews, {} large objects, {} sequences, {} schema objects",
        c.tables.len(),
        c.rows(),
        c.matviews.len(),
        c.large_objects.len(),
        c.sequences.len(),
        c.schema_objects()
    );
    assert!(
        c.tables.len() >= 480
            && c.rows() >= 380_000
            && c.matviews.len() >= 6
            && !c.large_objects.is_empty()
            && c.sequences.len() >= 35
            && c.schema_objects() >= 1_500,
        "the regression database is too small: {got}\n(loader: {summary})"
    );
    assert_eq!(
        c.unreadable(),
        Vec::<String>::new(),
        "the comparison reads every table"
    );
}

fn listed(lines: &[String]) -> String {
    if lines.is_empty() {
        return "  (none)\n".into();
    }
    lines.iter().map(|l| format!("  {l}\n")).collect()
}

#[test]
fn the_regression_database_restores_with_no_difference_pg_restore_does_not_have() {
    let pg = Postgres::from_env();
    let t0 = Instant::now();
    let source = pg.create_db("regress");
    let summary = load_regression(&pg, &source);
    let loaded = t0.elapsed();
    let src = Contents::read(&pg, &source);
    assert_loaded(&src, &summary);

    let env = Env::new(
        &format!("type = \"postgres\"\nurl = \"{}\"", pg.url(&source)),
        // About 50 of the tables have more than 5,000 rows: they are split.
        "max_rows = 5000",
        1,
    );
    let (code, out) = coldvault(&pg, &env, &["backup", "--json"]);
    assert!(
        code == 0 || code == 3,
        "coldvault backup: exit {code}\n{out}"
    );
    let ours = pg.create_db("regress_cv");
    let (code, out) = coldvault(&pg, &env, &["restore", "latest", "--to", &pg.url(&ours)]);
    let mut cv = differences(&src, &Contents::read(&pg, &ours));
    if code != 0 {
        let lines: Vec<&str> = out.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        cv.insert(0, format!("coldvault restore exited {code}: {tail}"));
    }

    let dump_dir = env.path("pg_dump");
    let reference = pg_dump_restore(&pg, &source, &dump_dir);
    let pgr = differences(&src, &Contents::read(&pg, &reference));

    let only_ours: Vec<String> = cv.iter().filter(|d| !pgr.contains(d)).cloned().collect();
    eprintln!(
        "{summary}\nload {:.0?}, all {:.0?}; coldvault: {} differences, pg_restore: {}",
        loaded,
        t0.elapsed(),
        cv.len(),
        pgr.len()
    );
    let pgr_marked: Vec<String> = pgr
        .iter()
        .map(|d| match cv.contains(d) {
            true => format!("{d}   [coldvault too]"),
            false => d.clone(),
        })
        .collect();
    assert!(
        only_ours.is_empty(),
        "coldvault's restore of the regression database differs from the source where \
         pg_restore's does not: {} of its {} differences ({}):\n{}\n\
         pg_restore's differences from the source ({}):\n{}\n\
         (the databases stay on the server: source {source}, coldvault {ours}, pg_restore {reference})",
        only_ours.len(),
        cv.len(),
        tally(&only_ours),
        listed(&only_ours),
        pgr.len(),
        listed(&pgr_marked)
    );
    // About 200 MB: dropped once they have nothing more to show.
    let mut c = pg.client("postgres");
    for db in [&source, &ours, &reference] {
        c.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .unwrap();
    }
}

/// `12 table, 3 sequence, …`: the differences counted by kind.
fn tally(lines: &[String]) -> String {
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for l in lines {
        let kind = match l.split_once(':') {
            Some((head, _)) if head.starts_with("schema object") => head,
            _ if l.starts_with("large object") => "large object",
            _ if l.starts_with("coldvault restore") => "failed restore",
            _ => l.split(' ').next().unwrap_or(""),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

/// Two small databases that differ by one value, one table's column order and one index; `odd`
/// holds a type that `to_jsonb` refuses (its cast to json raises).
const COMPARED: &str = "
    CREATE TABLE t (id int PRIMARY KEY, v text);
    INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');
    CREATE TABLE parent (id int, v text);
    CREATE TABLE child () INHERITS (parent);
    INSERT INTO parent VALUES (1, 'p');
    INSERT INTO child VALUES (2, 'c');
    CREATE SEQUENCE s;
    SELECT nextval('s');
    CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t;
    SELECT lo_from_bytea(4242, 'large');
    CREATE TYPE mood AS ENUM ('sad', 'ok');
    CREATE FUNCTION mood_json(mood) RETURNS json LANGUAGE plpgsql AS $$BEGIN RAISE 'no'; END$$;
    CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
    CREATE TABLE odd (k int, m mood);
    INSERT INTO odd VALUES (1, 'sad'), (2, 'ok');
";

#[test]
fn the_comparator_finds_a_changed_value_a_column_order_and_a_missing_index() {
    let pg = Postgres::from_env();
    let (a, b) = (pg.create_db("cmp_a"), pg.create_db("cmp_b"));
    pg.client(&a)
        .batch_execute(&format!(
            "{COMPARED}
             CREATE TABLE w (x int, y text); INSERT INTO w VALUES (1, 'one'), (2, 'two');
             CREATE INDEX t_v ON t (v);"
        ))
        .unwrap();
    pg.client(&b)
        .batch_execute(&format!(
            "{COMPARED}
             CREATE TABLE w (y text, x int); INSERT INTO w VALUES ('two', 2), ('one', 1);"
        ))
        .unwrap();
    assert_eq!(
        compare(&pg, &a, &a),
        Vec::<String>::new(),
        "a database is its own copy"
    );
    let odd = &Contents::read(&pg, &a).tables["public.odd"];
    assert!(
        odd.starts_with("2 rows, content ") && odd.ends_with(" (by column text)"),
        "a row to_jsonb refuses is read column by column: {odd}"
    );
    assert_eq!(
        compare(&pg, &a, &b),
        [
            "schema object missing: Name: t_v; Type: INDEX; Schema: public",
            "schema object different: Name: w; Type: TABLE; Schema: public: \
             restored has \"    y text,\", source has \"    x integer,\"",
        ],
        "the same rows in another column order are the same content"
    );

    let mut c = pg.client(&b);
    c.batch_execute(
        "UPDATE t SET v = 'B' WHERE id = 2;
         INSERT INTO child VALUES (3, 'c');
         UPDATE odd SET m = 'ok' WHERE k = 1;
         SELECT setval('s', 5);
         SELECT lo_put(4242, 0, 'L');
         REFRESH MATERIALIZED VIEW mv;",
    )
    .unwrap();
    let found = compare(&pg, &a, &b);
    let kinds: Vec<&str> = found.iter().map(|d| d.split(':').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "table public.child",
            "table public.odd",
            "table public.t",
            "sequence public.s",
            "large object 4242",
            "schema object missing",
            "schema object different"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].starts_with("table public.child: 2 rows, content "),
        "the parent is read with ONLY, its child on its own: {found:#?}"
    );
    assert!(
        found[2].starts_with("table public.t: 3 rows, content "),
        "{found:#?}"
    );
    assert_eq!(
        found[3],
        "sequence public.s: last_value 5, is_called true (source: last_value 1, is_called true)"
    );
    assert_eq!(
        found[4],
        "large object 4242: size 5, md5 3a69b34ce86dacb205936a8094f6c743 \
         (source: size 5, md5 afacdb0a401ccdf6b48551bbc00e8a74)"
    );

    c.batch_execute("INSERT INTO t VALUES (4, 'd'); REFRESH MATERIALIZED VIEW mv;")
        .unwrap();
    assert!(
        compare(&pg, &a, &b)
            .iter()
            .any(|d| d.starts_with("matview public.mv: 1 rows, content ")),
        "a matview's contents are compared"
    );
}
