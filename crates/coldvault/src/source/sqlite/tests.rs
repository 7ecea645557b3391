use super::*;
use proptest::prelude::*;
use rusqlite::types::Value;

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
