use super::*;
use proptest::prelude::*;
use rusqlite::types::Value;
use std::path::PathBuf;

fn rows_of(conn: &Connection, table: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {} ORDER BY rowid", ident(table)))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits() || (*x == 0.0 && *y == 0.0),
        _ => a == b,
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("NaN is stored as NULL by SQLite", |f| !f.is_nan())
            .prop_map(Value::Real),
        ".*".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}

fn load(conn: &Connection, sql: &[u8]) {
    conn.execute_batch(std::str::from_utf8(sql).unwrap())
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_storage_class_round_trips(rows in proptest::collection::vec((value(), value()), 0..30)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src.db");
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch("CREATE TABLE t(a, b ANY, c TEXT)").unwrap();
        for (a, b) in &rows {
            conn.execute("INSERT INTO t VALUES(?1, ?2, 'x''y')", rusqlite::params![a, b]).unwrap();
        }
        let mut out = Vec::new();
        let stats = read_table(&src, "t", None, None, &mut out).unwrap();
        prop_assert_eq!(stats.rows, rows.len() as u64);
        let dst = Connection::open_in_memory().unwrap();
        dst.execute_batch("CREATE TABLE t(a, b ANY, c TEXT)").unwrap();
        load(&dst, &out);
        let (want, got) = (rows_of(&conn, "t"), rows_of(&dst, "t"));
        prop_assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            for (x, y) in w.iter().zip(g) {
                prop_assert!(same(x, y), "{:?} != {:?}", x, y);
            }
        }
    }

    #[test]
    fn ranges_cover_every_row_once(
        ids in proptest::collection::btree_set(prop_oneof![-1000i64..1000, any::<i64>()], 0..200),
        max_rows in 1u64..40,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src.db");
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v)").unwrap();
        for id in &ids {
            conn.execute("INSERT INTO t VALUES(?1, ?1)", [id]).unwrap();
        }
        let tasks = plan(&src, &[], max_rows).unwrap();
        let mut seen = Vec::new();
        for (kind, _, _) in &tasks {
            let TaskKind::Table(TableTask { table, start, end }) = kind else { panic!() };
            let mut out = Vec::new();
            let stats = read_table(&src, table, *start, *end, &mut out).unwrap();
            prop_assert!(stats.rows <= max_rows);
            let dst = Connection::open_in_memory().unwrap();
            dst.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v)").unwrap();
            load(&dst, &out);
            let mut stmt = dst.prepare("SELECT id FROM t").unwrap();
            let got: Vec<i64> = stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
            seen.extend(got);
        }
        seen.sort();
        let want: Vec<i64> = ids.into_iter().collect();
        prop_assert_eq!(seen, want);
    }
}

#[test]
fn without_rowid_tables_are_one_task() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        "CREATE TABLE k(a TEXT PRIMARY KEY, b) WITHOUT ROWID;
         INSERT INTO k VALUES('x', 1), ('y', 2), ('z', 3);",
    )
    .unwrap();
    let tasks = plan(&src, &[], 1).unwrap();
    assert_eq!(tasks.len(), 1);
    let mut out = Vec::new();
    let TaskKind::Table(TableTask { start, end, .. }) = &tasks[0].0 else {
        panic!()
    };
    assert_eq!(
        read_table(&src, "k", *start, *end, &mut out).unwrap().rows,
        3
    );
}

#[test]
fn table_patterns_select_and_unmatched_patterns_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.db");
    let conn = Connection::open(&src).unwrap();
    conn.execute_batch(
        "CREATE TABLE orders_2020(a); CREATE TABLE orders_2021(a); CREATE TABLE users(a);",
    )
    .unwrap();
    let tasks = plan(&src, &["orders_*".into()], 10).unwrap();
    assert_eq!(tasks.len(), 2);
    let e = plan(&src, &["nope".into()], 10).unwrap_err().to_string();
    assert!(e.contains("\"nope\" matches no table"), "{e}");
}

#[test]
fn reals_are_written_as_reals() {
    let mut s = String::new();
    for f in [1.0, 1e300, -0.5, 1e-7, 123456789012345680.0] {
        s.clear();
        push_real(&mut s, f);
        assert!(s.contains('.') || s.contains('e'), "{s}");
        assert_eq!(s.parse::<f64>().unwrap().to_bits(), f.to_bits(), "{s}");
    }
    s.clear();
    push_real(&mut s, f64::INFINITY);
    assert_eq!(s, "1e999");
}

/// A database at `dir/src.db` in journal mode `mode`, with a rowid table whose rowids have gaps
/// (which `VACUUM` would close).
fn held_fixture(dir: &Path, mode: &str) -> PathBuf {
    let src = dir.join("src.db");
    let conn = Connection::open(&src).unwrap();
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got, mode);
    conn.execute_batch(
        "CREATE TABLE t(v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t SELECT i FROM n;
         DELETE FROM t WHERE v % 3 = 0;",
    )
    .unwrap();
    src
}

fn rowids(path: &Path) -> Vec<(i64, i64)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT rowid, v FROM t ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_wal_database_is_read_from_a_copy_of_one_state_with_the_same_rowids() {
    let tmp = tempfile::tempdir().unwrap();
    let src = held_fixture(tmp.path(), "wal");
    let before = rowids(&src);
    let staging = tmp.path().join("staging");
    let (hold, schema) = Hold::open(&src, &staging, "job").unwrap();
    assert_eq!(schema.objects.len(), 1);
    // Writers commit while the run holds the database; the copy does not see them.
    let writer = Connection::open(&src).unwrap();
    writer
        .execute_batch("UPDATE t SET v = -v; INSERT INTO t(v) VALUES(1000);")
        .unwrap();
    let Hold::Copy(copy) = &hold else {
        panic!("a WAL database held by a transaction")
    };
    let file = copy.file();
    assert_eq!(rowids(&file), before);
    let mut out = Vec::new();
    let stats = read_table(&file, "t", None, None, &mut out).unwrap();
    assert_eq!(stats.rows, before.len() as u64);
    // The copy is a plain rollback-journal file, readable read-only without a -shm.
    let header = std::fs::read(&file).unwrap();
    assert_eq!((header[18], header[19]), (1, 1));
    let id = hold.snapshot().unwrap();
    assert_eq!(staging.join(id), file);
    assert_eq!(snapshot::copy_in(&staging, id, &src).unwrap(), file);
    assert!(
        hold.consistency().contains("WAL mode"),
        "{}",
        hold.consistency()
    );
    drop(hold);
    assert!(!file.exists(), "the copy outlives its run");
}

#[test]
fn a_rollback_journal_database_is_held_by_a_read_transaction_writers_wait_for() {
    let tmp = tempfile::tempdir().unwrap();
    let src = held_fixture(tmp.path(), "delete");
    let (hold, _) = Hold::open(&src, &tmp.path().join("staging"), "job").unwrap();
    assert!(matches!(hold, Hold::Transaction { .. }));
    assert_eq!(hold.snapshot(), None);
    assert!(hold.consistency().contains("rollback journal"));
    let writer = Connection::open(&src).unwrap();
    writer.busy_timeout(std::time::Duration::ZERO).unwrap();
    let e = writer.execute_batch("UPDATE t SET v = -v").unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy)
    );
    drop(hold);
    writer.execute_batch("UPDATE t SET v = -v").unwrap();
}

#[test]
fn a_worker_that_cannot_see_the_copy_names_the_staging_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("src.db");
    let e = snapshot::copy_in(tmp.path(), "job-1-2-3/consistent-copy.db", &db)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not on this machine") && e.contains("staging"),
        "{e}"
    );
    for bad in ["../x.db", "/etc/passwd", "a/../../x.db"] {
        let e = snapshot::copy_in(tmp.path(), bad, &db)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a path below the staging directory"), "{e}");
    }
}
