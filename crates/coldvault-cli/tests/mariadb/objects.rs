//! Everything a MySQL / MariaDB database holds besides its rows: a schema with triggers,
//! routines, events, a sequence, partitions, spatial and fulltext indexes and mixed character
//! sets comes back as `mysqldump --routines --triggers --events` gives it back; a definer the
//! target lacks is named, and `--skip-definer` restores without it; a backup of some tables keeps
//! what belongs to them.

use std::collections::{BTreeMap, BTreeSet};

use coldvault_testing::Mariadb;
use mysql::prelude::Queryable;

use super::{backup, exec, my_env, restore_into_new_db, run};

/// A database name not taken yet.
fn new_db_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}

/// The shop: tables with foreign keys, a sequence, triggers, a procedure, a function a view
/// uses, a view owned by another account, a view on a view, an event, a partitioned table,
/// spatial and fulltext indexes, latin1, utf8mb3, ascii and utf8mb4_bin columns.
const SHOP: &str = r#"
CREATE SEQUENCE order_refs START WITH 1000 INCREMENT BY 10 CACHE 5;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(50) CHARACTER SET latin1 COLLATE latin1_german1_ci NOT NULL DEFAULT 'Müller',
  email VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, note TEXT CHARACTER SET utf8mb3,
  code CHAR(3) CHARACTER SET ascii, UNIQUE KEY email (email)) COLLATE utf8mb4_unicode_ci;
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
  total DECIMAL(10,2) NOT NULL, status VARCHAR(10) NOT NULL DEFAULT 'new', ref BIGINT,
  KEY status (status), CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id));
CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, order_id INT, what VARCHAR(100));
CREATE TABLE measurements (id INT NOT NULL, taken DATE NOT NULL, value DOUBLE,
  PRIMARY KEY (id, taken)) PARTITION BY RANGE (YEAR(taken)) (PARTITION p2023 VALUES LESS THAN (2024),
  PARTITION p2024 VALUES LESS THAN (2025), PARTITION pmax VALUES LESS THAN MAXVALUE);
CREATE TABLE places (id INT PRIMARY KEY, name VARCHAR(50), pos POINT NOT NULL, SPATIAL KEY pos (pos));
CREATE TABLE docs (id INT PRIMARY KEY, title VARCHAR(100), body TEXT, FULLTEXT KEY words (title, body));
CREATE TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW
  SET NEW.status = UPPER(NEW.status), NEW.ref = NEXTVAL(order_refs);
CREATE TRIGGER orders_au AFTER UPDATE ON orders FOR EACH ROW
  INSERT INTO audit (order_id, what) VALUES (NEW.id, CONCAT(OLD.total, ' → ', NEW.total));
CREATE FUNCTION with_tax(amount DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC
  RETURN ROUND(amount * 1.2, 2);
CREATE PROCEDURE close_order(IN oid INT) MODIFIES SQL DATA
  BEGIN UPDATE orders SET status = 'CLOSED' WHERE id = oid; END;
CREATE DEFINER = 'cv_view_owner'@'%' SQL SECURITY DEFINER VIEW order_totals AS
  SELECT o.id, c.name, with_tax(o.total) AS gross FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE VIEW big_orders AS SELECT * FROM order_totals WHERE gross > 100;
CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
  DO DELETE FROM audit WHERE id < 0;
INSERT INTO customers (name, email, note, code) VALUES ('Jürgen Groß', 'j@example.com', '日本語', 'DE'),
  ('Zoë', 'zoë🙂@example.com', 'naïve', 'FR'), (DEFAULT, NULL, NULL, NULL);
INSERT INTO orders (customer_id, total, status) SELECT 1 + seq % 3, seq * 7.5, 'new' FROM seq_1_to_40;
UPDATE orders SET total = total + 1 WHERE id % 10 = 0;
INSERT INTO measurements SELECT seq, DATE_ADD('2023-06-01', INTERVAL seq DAY), seq / 3 FROM seq_1_to_700;
INSERT INTO places VALUES (1, 'Paris', ST_GeomFromText('POINT(2.35 48.85)')),
  (2, 'Zürich', ST_GeomFromText('POINT(8.54 47.37)'));
INSERT INTO docs VALUES (1, 'Cold storage', 'Backups kept on several nodes'),
  (2, 'Restore', 'A backup is only worth what its restore is worth');
DO NEXTVAL(order_refs), NEXTVAL(order_refs), NEXTVAL(order_refs)
"#;

/// Objects written in latin1 and under their own sql_mode, as an older client made them.
const LATIN1: &[u8] = b"SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES';
CREATE FUNCTION greeting() RETURNS VARCHAR(20) CHARSET utf8mb4 RETURN 'Gr\xfc\xdfe';
CREATE PROCEDURE \"count_orders\"(OUT n INT) SELECT COUNT(*) INTO n FROM \"orders\";
CREATE VIEW cafe AS SELECT 'caf\xe9' AS word;
";

#[test]
fn triggers_routines_events_sequences_and_views_come_back_as_mysqldump_gives_them_back() {
    let my = Mariadb::from_env();
    let db = my.create_db("shop");
    exec(
        &my,
        "mysql",
        "CREATE USER IF NOT EXISTS 'cv_view_owner'@'%'",
    );
    // The view runs as its definer wherever it is restored.
    exec(
        &my,
        "mysql",
        "GRANT SELECT, EXECUTE ON *.* TO 'cv_view_owner'@'%'",
    );
    exec(&my, &db, SHOP);
    my.client(&db, &["--default-character-set=latin1"], LATIN1);
    let env = my_env(&my, &db, "", 100);
    let r = backup(&my, &env);
    assert_eq!(
        r["rows"],
        3 + 40 + 4 + 700 + 2 + 2,
        "a sequence is no data table: {r}"
    );
    let restored = restore_into_new_db(&my, &env, "shop_r");
    let dumped = my.create_db("shop_dump");
    my.dump_and_reload(&db, &dumped);

    let (source, ours, theirs) = (
        my.definitions(&db),
        my.definitions(&restored),
        my.definitions(&dumped),
    );
    assert_eq!(source.len(), 18, "{source:#?}");
    let differs = |other: &BTreeMap<String, String>| -> Vec<String> {
        let keys: BTreeSet<&String> = source.keys().chain(other.keys()).collect();
        keys.into_iter()
            .filter(|k| other.get(*k) != source.get(*k))
            .cloned()
            .collect()
    };
    let (ours_differ, theirs_differ) = (differs(&ours), differs(&theirs));
    eprintln!("differ from the source: after coldvault {ours_differ:?}, after mysqldump {theirs_differ:?}");
    for key in &ours_differ {
        assert!(
            theirs_differ.contains(key),
            "{key} differs after coldvault's restore, not after mysqldump's:\nsource: {:?}\ncoldvault: {:?}",
            source.get(key),
            ours.get(key)
        );
    }
    let tables = [
        "customers",
        "orders",
        "audit",
        "measurements",
        "places",
        "docs",
        "order_refs",
    ];
    for other in [&restored, &dumped] {
        assert_eq!(my.fingerprint(&db, &tables), my.fingerprint(other, &tables));
        assert_eq!(
            my.rows(&db, "customers", "id"),
            my.rows(other, "customers", "id")
        );
    }

    let mut src = my.conn(&db);
    let mut dst = my.conn(&restored);
    let next: i64 = src
        .query_first("SELECT NEXTVAL(order_refs)")
        .unwrap()
        .unwrap();
    let again: i64 = dst
        .query_first("SELECT NEXTVAL(order_refs)")
        .unwrap()
        .unwrap();
    assert_eq!(
        again, next,
        "the sequence hands out what the source would have next"
    );
    for q in [
        "SELECT with_tax(99.99)",
        "SELECT greeting()",
        "SELECT word FROM cafe",
        "SELECT COUNT(*) FROM big_orders",
    ] {
        let (a, b): (Option<String>, Option<String>) =
            (src.query_first(q).unwrap(), dst.query_first(q).unwrap());
        assert_eq!(a, b, "{q}");
    }
    assert_eq!(
        dst.query_first::<String, _>("SELECT greeting()")
            .unwrap()
            .unwrap(),
        "Grüße"
    );
    dst.query_drop("INSERT INTO orders (customer_id, total, status) VALUES (2, 5, 'paid')")
        .unwrap();
    let (status, r): (String, i64) = dst
        .query_first("SELECT status, ref FROM orders WHERE id = LAST_INSERT_ID()")
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_str(), r),
        ("PAID", next + 10),
        "BEFORE INSERT fired"
    );
    dst.query_drop("CALL close_order(3)").unwrap();
    dst.query_drop("UPDATE orders SET total = 1000 WHERE id = 3")
        .unwrap();
    let what: String = dst
        .query_first("SELECT what FROM audit WHERE order_id = 3 ORDER BY id DESC LIMIT 1")
        .unwrap()
        .unwrap();
    assert_eq!(what, "22.50 → 1000.00", "AFTER UPDATE fired");
    let gross: String = dst
        .query_first("SELECT gross FROM order_totals WHERE id = 3")
        .unwrap()
        .unwrap();
    assert_eq!(
        gross, "1200.00",
        "the view runs as its definer, with the function"
    );
}

#[test]
fn a_definer_the_target_lacks_is_named_and_skip_definer_restores_without_it() {
    let my = Mariadb::from_env();
    let db = my.create_db("definer");
    exec(&my, "mysql", "CREATE USER IF NOT EXISTS 'cv_gone'@'%'");
    exec(
        &my,
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, n INT);
INSERT INTO t VALUES (1, 1);
CREATE DEFINER = 'cv_gone'@'%' PROCEDURE bump() UPDATE t SET n = n + 1;
CREATE DEFINER = 'cv_gone'@'%' TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.n = 7;
CREATE VIEW v AS SELECT id FROM t",
    );
    let env = my_env(&my, &db, "", 10);
    backup(&my, &env);
    exec(&my, "mysql", "DROP USER 'cv_gone'@'%'");
    let target = new_db_name("definer_r");
    let (c, out, err) = run(&my, &env, &["restore", "latest", "--to", &my.url(&target)]);
    assert_eq!(c, 1, "{out}{err}");
    for want in [
        "procedure `bump`",
        "trigger `t_bi`",
        "'cv_gone'@'%'",
        "--skip-definer",
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    assert!(!err.contains("view `v`"), "{err}");
    assert_eq!(
        my.rows(&target, "t", "id").len(),
        1,
        "the rows are restored all the same"
    );

    let target = new_db_name("definer_s");
    let (c, out, err) = run(
        &my,
        &env,
        &[
            "restore",
            "latest",
            "--to",
            &my.url(&target),
            "--skip-definer",
        ],
    );
    assert_eq!(c, 0, "{out}{err}");
    let defs = my.definitions(&target);
    for key in ["PROCEDURE bump", "TRIGGER t_bi", "VIEW v"] {
        assert!(
            defs[key].contains("DEFINER=`root`@`127.0.0.1`"),
            "{key}: {}",
            defs[key]
        );
    }
    let mut c = my.conn(&target);
    c.query_drop("CALL bump()").unwrap();
    c.query_drop("INSERT INTO t (id) VALUES (2)").unwrap();
    let n: Vec<i64> = c.query("SELECT n FROM t ORDER BY id").unwrap();
    assert_eq!(n, [2, 7]);
}

#[test]
fn a_backup_of_some_tables_keeps_their_triggers_views_and_sequences_only() {
    let my = Mariadb::from_env();
    let db = my.create_db("part");
    exec(
        &my,
        &db,
        "CREATE SEQUENCE a_seq START WITH 5;
CREATE TABLE a (id INT PRIMARY KEY, k BIGINT NOT NULL DEFAULT (NEXT VALUE FOR a_seq));
CREATE TABLE b (id INT PRIMARY KEY);
INSERT INTO a (id) VALUES (1), (2);
INSERT INTO b VALUES (1);
CREATE TRIGGER a_bi BEFORE INSERT ON a FOR EACH ROW SET NEW.id = NEW.id * 10;
CREATE TRIGGER b_bi BEFORE INSERT ON b FOR EACH ROW SET NEW.id = NEW.id * 10;
CREATE VIEW a_view AS SELECT id FROM a;
CREATE VIEW b_view AS SELECT id FROM b;
CREATE FUNCTION f() RETURNS INT RETURN 1;
CREATE EVENT e ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM b",
    );
    let env = my_env(&my, &db, "\ntables = [\"a*\"]", 10);
    backup(&my, &env);
    let restored = restore_into_new_db(&my, &env, "part_r");
    let defs = my.definitions(&restored);
    let kept: Vec<&str> = defs.keys().map(String::as_str).collect();
    assert_eq!(
        kept,
        [
            "SEQUENCE a_seq",
            "TABLE a",
            "TRIGGER a_bi",
            "VIEW a_view",
            "trigger order"
        ],
        "routines and events belong to the whole database"
    );
    let next: i64 = my
        .conn(&db)
        .query_first("SELECT NEXTVAL(a_seq)")
        .unwrap()
        .unwrap();
    let mut c = my.conn(&restored);
    let (_, create): (String, String) = c.query_first("SHOW CREATE TABLE a").unwrap().unwrap();
    assert!(
        create.contains(&format!("nextval(`{restored}`.`a_seq`)")),
        "the default draws from the restored sequence, not the source's: {create}"
    );
    c.query_drop("INSERT INTO a (id) VALUES (3)").unwrap();
    let row: Option<(i64, i64)> = c.query_first("SELECT id, k FROM a WHERE id = 30").unwrap();
    assert_eq!(
        row,
        Some((30, next)),
        "the trigger fires, the sequence goes on"
    );

    let to = my.url(&restored);
    let (c, _, err) = run(&my, &env, &["restore", "latest", "--to", &to]);
    assert_eq!(c, 2, "{err}");
    for want in [
        "sequence `a_seq`",
        "table `a`",
        "trigger `a_bi`",
        "view `a_view`",
        "--force",
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    let (c, out, err) = run(&my, &env, &["restore", "latest", "--to", &to, "--force"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(
        my.definitions(&restored),
        defs,
        "--force replaced every object"
    );
}
