//! Fixture builders: a file tree with every kind of entry that trips backup tools up, a SQLite
//! database with every storage class, and listings that compare what a user would compare.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rusqlite::Connection;

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// Builds, under `root`, a tree with: plain, empty and executable files; empty and nested
/// directories; a file of `big` bytes (to be split in parts); names that are not UTF-8, that hold
/// a newline, that are longer than 100 bytes, that are not ASCII; symlinks to a file, to a
/// directory, and dangling; odd permission bits; modification times with nanoseconds.
pub fn odd_tree(root: &Path, big: usize) {
    fs::create_dir_all(root).unwrap();
    let w = |rel: &[u8], data: &[u8]| {
        let p = root.join(OsStr::from_bytes(rel));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    };
    w(b"plain.txt", b"hello, cold world\n");
    w(b"empty", b"");
    let exec = w(b"bin/run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&exec, fs::Permissions::from_mode(0o755)).unwrap();
    let private = w(b"private.key", b"secret-ish");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    w(b"dir/nested/deep.bin", &bytes(1, 100_000));
    w(b"dir/a.txt", b"a");
    w(b"big.bin", &bytes(2, big));
    w(b"caf\xe9-latin1.txt", b"not utf-8 name");
    w(b"line\nbreak.txt", b"newline in name");
    w("日本語のファイル.txt".as_bytes(), "unicode".as_bytes());
    let long = format!("long/{}/{}", "d".repeat(120), "f".repeat(130));
    w(long.as_bytes(), b"long path");
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::create_dir_all(root.join("locked")).unwrap();
    w(b"locked/inside", b"in a 0700 dir");
    std::os::unix::fs::symlink("plain.txt", root.join("link-to-plain")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("dir", root.join("link-to-dir")).unwrap();
    let long_target = "t".repeat(150);
    std::os::unix::fs::symlink(&long_target, root.join("long-link")).unwrap();
    // Times last, deepest first, so creating entries does not move a directory's time again.
    let mut all = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(
            p,
            1_600_000_000 + i as i64 * 3600,
            (i as u32 * 7919) % 1_000_000_000,
        );
    }
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(root, 1_500_000_000, 42);
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

/// One line per entry under `root` (and `root` itself): path, type, permission bits,
/// modification time to the nanosecond, size, BLAKE3 of the contents, link target.
pub fn listing(root: &Path) -> Vec<String> {
    let mut paths = vec![root.to_path_buf()];
    collect(root, &mut paths);
    let mut lines: Vec<String> = paths
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            let rel = p.strip_prefix(root).unwrap();
            let name = format!("{:?}", rel.as_os_str());
            let ft = m.file_type();
            let (kind, extra) = if ft.is_symlink() {
                ("link", format!("{:?}", fs::read_link(p).unwrap()))
            } else if ft.is_dir() {
                ("dir", String::new())
            } else {
                (
                    "file",
                    blake3::hash(&fs::read(p).unwrap()).to_hex().to_string(),
                )
            };
            let size = if ft.is_dir() { 0 } else { m.len() };
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            format!(
                "{name} {kind} {mode:o} {}.{:09} {size} {extra}",
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .collect();
    lines.sort();
    lines
}

/// A SQLite database with every storage class in typed and untyped columns, a WITHOUT ROWID
/// table, an AUTOINCREMENT table, sparse rowids, an index, a view and a trigger; `rows` rows in the
/// main table.
pub fn sqlite_every_class(path: &Path, rows: i64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE mixed(id INTEGER PRIMARY KEY, anything, num NUMERIC, txt TEXT, r REAL, b BLOB);
         CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
         CREATE TABLE log(id INTEGER PRIMARY KEY AUTOINCREMENT, msg TEXT NOT NULL);
         CREATE TABLE plain(a, b);
         CREATE INDEX mixed_txt ON mixed(txt);
         CREATE VIEW big_ids AS SELECT id FROM mixed WHERE id > 100;
         CREATE TRIGGER log_mixed AFTER DELETE ON mixed BEGIN INSERT INTO log(msg) VALUES('deleted'); END;
         PRAGMA user_version = 7;",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO mixed VALUES(?1, ?2, ?3, ?4, ?5, ?6)")
            .unwrap();
        for i in 0..rows {
            let id = i * i * 3 - 50; // sparse, negative, skewed rowids
            let anything: rusqlite::types::Value = match i % 6 {
                0 => rusqlite::types::Value::Null,
                1 => rusqlite::types::Value::Integer(i64::MAX - i),
                2 => rusqlite::types::Value::Real(1.0 / (i as f64 + 0.3)),
                3 => rusqlite::types::Value::Text(format!("t'x\"{i}\n\ttab\\N")),
                4 => rusqlite::types::Value::Blob(bytes(i as u64, (i % 40) as usize)),
                _ => rusqlite::types::Value::Text(String::new()),
            };
            let real = if i % 10 == 0 {
                f64::INFINITY
            } else {
                (i as f64) * 1e-7 + 0.1
            };
            ins.execute(rusqlite::params![
                id,
                anything,
                if i % 2 == 0 { "12.50" } else { "abc" },
                format!("row {i} — ünïcødé"),
                real,
                bytes(i as u64 + 99, 17)
            ])
            .unwrap();
        }
        for i in 0..50 {
            tx.execute(
                "INSERT INTO kv VALUES(?1, ?2)",
                rusqlite::params![format!("key{i:03}"), i * 2],
            )
            .unwrap();
            tx.execute("INSERT INTO log(msg) VALUES(?1)", [format!("m{i}")])
                .unwrap();
        }
        tx.execute("INSERT INTO plain VALUES(NULL, X'00FF00')", [])
            .unwrap();
        tx.execute(
            "INSERT INTO plain VALUES(CAST(X'610062' AS TEXT), -0.0)",
            [],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn.execute("DELETE FROM log WHERE id > 45", []).unwrap();
}

/// Every row of every table with each value's storage class, and the schema: what must be equal
/// after a restore.
pub fn sqlite_dump(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let schema: Vec<(String, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for (kind, name, sql) in &schema {
        out.push(format!("schema {kind} {name} {sql:?}"));
        if kind != "table" {
            continue;
        }
        let mut q = conn
            .prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))
            .unwrap();
        let n = q.column_count();
        let rows = q
            .query_map([], |r| {
                let vals: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                Ok(vals.join("|"))
            })
            .unwrap();
        let mut rows: Vec<String> = rows.map(|r| format!("row {name} {}", r.unwrap())).collect();
        rows.sort();
        out.extend(rows);
    }
    let uv: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    out.push(format!("user_version {uv}"));
    out
}

/// A name no other test or test run uses: `name-PID-NANOS` (a prefix in a shared bucket).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos:x}", std::process::id())
}
