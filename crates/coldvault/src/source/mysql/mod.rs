//! MySQL / MariaDB source: tables split into key ranges of an integer primary key (or a
//! `split_by` column), each range streamed into the text format `LOAD DATA` reads back, all
//! tasks under one consistent snapshot (see [`snapshot`]).
//!
//! Splitting never scans a table: min/max of the key are index lookups, and ranges are bisected
//! with the optimizer's row estimates (`EXPLAIN`, which dives into the index) until each holds
//! about `max_rows` rows, then neighbours are merged. Sparse and skewed keys therefore get
//! ranges of similar row counts. First and last ranges are unbounded, so keys outside the
//! statistics are still read exactly once.
//!
//! The data format is `LOAD DATA`'s default: fields separated by a tab, rows ended by a newline,
//! `\N` for NULL, and backslash escapes for backslash, tab, newline and NUL. Values travel as the
//! server's own text (`SET NAMES binary`: no character-set conversion; `time_zone = '+00:00'`),
//! BIT columns as integers.
//!
//! Besides the rows, a snapshot keeps the tables' definitions and the database's other objects
//! (views, routines, triggers, events, sequences: [`objects`]), which a restore creates again in
//! dependency order ([`restore`], [`recreate`]).

use std::io::Write;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Value};

mod definer;
mod objects;
mod plan;
mod recreate;
mod restore;
mod snapshot;

use super::{
    database, RestoreRun, Restored, RunRecord, RunSource, SourceKind, SourcePlan, TaskRead,
};
use crate::catalog::{ColumnKind, MyColumn, MySplit, ReadStats, Schema, TaskKind};
use crate::error::{Error, Result};
use crate::job::{Database, Job, PasswordSource};
use plan::plan;
use snapshot::SnapshotSet;

pub use super::where_of;

/// A MySQL / MariaDB database.
pub(crate) struct MysqlSource;

impl SourceKind for MysqlSource {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn plan(&self, job: &Job, _parent: Option<&crate::catalog::Manifest>) -> Result<SourcePlan> {
        Ok(super::planned(plan(database(job)?, job.split.max_rows)?))
    }

    fn local_only(&self) -> Option<&'static str> {
        Some(
            "a MySQL / MariaDB backup runs on the local engine: MySQL cannot hand a snapshot from \
             one connection to another, so every task reads on a connection this process opened \
             under one brief lock, which Spark executors cannot share",
        )
    }

    fn open_run<'a>(
        &self,
        job: &'a Job,
        kinds: &[&TaskKind],
        parallel: usize,
    ) -> Result<Box<dyn RunSource + 'a>> {
        let db = database(job)?;
        let mut set = SnapshotSet::open(&MyServer::of(db), parallel)?;
        let mut tables: Vec<String> = Vec::new();
        for k in kinds {
            if let TaskKind::MyRange(r) = k {
                if tables.last() != Some(&r.table) {
                    tables.push(r.table.clone());
                }
            }
        }
        let patterns = (!db.tables.is_empty()).then_some(&db.tables[..]);
        let schema = set.schema(&tables, patterns)?;
        Ok(Box::new(Held {
            set: Some(set),
            schema,
        }))
    }

    fn open_worker<'a>(&self, _job: &'a Job) -> Result<Box<dyn RunSource + 'a>> {
        Err(Error::config(self.local_only().unwrap_or_default()))
    }

    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored> {
        restore::restore(r)
    }
}

/// The database held for a run: connections in one consistent snapshot, and the schema read in it.
struct Held {
    set: Option<SnapshotSet>,
    schema: crate::catalog::MysqlSchema,
}

impl RunSource for Held {
    fn read(
        &self,
        kind: &TaskKind,
        _attempt: u32,
        _snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead> {
        let (TaskKind::MyRange(t), Some(set)) = (kind, &self.set) else {
            return Err(Error::internal(format!(
                "a {} task for a MySQL source without its snapshot",
                kind.name()
            )));
        };
        let query = range_query(
            &t.table,
            &t.split,
            t.start,
            t.end,
            t.filter.as_deref(),
            &t.columns,
        );
        Ok(set.read_range(&query, out)?.into())
    }

    fn consistency(&self) -> Option<String> {
        Some(format!(
            "every task read one consistent snapshot; the global read lock was held {} ms",
            self.schema.lock_ms
        ))
    }

    fn finish(self: Box<Self>) -> Result<RunRecord> {
        drop(self.set);
        Ok(RunRecord {
            schema: Some(Schema::Mysql(self.schema)),
        })
    }
}

/// A MySQL server and database to connect to (no secret inside).
#[derive(Debug, Clone)]
pub(crate) struct MyServer<'a> {
    /// `mysql://user@host:port/db`.
    pub url: &'a str,
    /// Where the password comes from.
    pub password: &'a PasswordSource,
}

impl<'a> MyServer<'a> {
    /// The server of a `mysql` source.
    pub fn of(db: &'a Database) -> MyServer<'a> {
        MyServer {
            url: &db.url,
            password: &db.password,
        }
    }
}

/// Connection options from the URL and the password, with our session settings.
pub(crate) fn options(t: &MyServer<'_>) -> Result<OptsBuilder> {
    let url = t
        .url
        .strip_prefix("mariadb://")
        .map(|rest| format!("mysql://{rest}"))
        .unwrap_or_else(|| t.url.to_owned());
    let opts = Opts::from_url(&url)
        .map_err(|e| Error::config(format!("mysql URL {:?} is malformed: {e}", t.url)))?;
    let pass = crate::secrets::db_password(t.password, "MYSQL_PWD")?;
    Ok(OptsBuilder::from_opts(opts)
        .pass(pass)
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(10)))
        .init(vec![
            "SET NAMES binary",
            "SET time_zone = '+00:00'",
            "SET SESSION net_write_timeout = 3600, net_read_timeout = 3600",
        ]))
}

/// Connects, with an error that names the server and the cause (never the password).
pub(crate) fn connect(t: &MyServer<'_>) -> Result<Conn> {
    Conn::new(options(t)?).map_err(sql_err(format!("cannot connect to {}", where_of(t.url))))
}

/// An error of the server or the driver as one line: `what: ERROR 1045 (28000): Access denied…`.
pub(crate) fn sql_err(what: String) -> impl FnOnce(mysql::Error) -> Error {
    move |e| {
        let cause = match &e {
            mysql::Error::MySqlError(m) => m.to_string(),
            mysql::Error::IoError(io) => io.to_string(),
            mysql::Error::DriverError(d) => d.to_string(),
            other => other.to_string(),
        };
        // A deadlock (1213) or a lock wait timeout (1205) rolled the statement back: sending it
        // again may succeed.
        let temporary =
            matches!(&e, mysql::Error::MySqlError(m) if m.code == 1213 || m.code == 1205);
        let err = Error::source_err(format!("{what}: {cause}"));
        if temporary {
            err.temporary()
        } else {
            err
        }
    }
}

/// Quotes an identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The `SELECT` of one range.
pub(crate) fn range_query(
    table: &str,
    split: &MySplit,
    start: Option<i64>,
    end: Option<i64>,
    filter: Option<&str>,
    columns: &[MyColumn],
) -> String {
    let cond = match split {
        // A key range bounded at neither end still leaves out the NULL keys: with `split_by`,
        // they are a range of their own.
        MySplit::Key(k) if start.is_none() && end.is_none() => {
            vec![format!("{} IS NOT NULL", ident(k))]
        }
        MySplit::Key(k) => super::range::bounds(&ident(k), start, end),
        MySplit::Null(k) => vec![format!("{} IS NULL", ident(k))],
        MySplit::Whole => Vec::new(),
    };
    let cols: Vec<String> = columns
        .iter()
        .map(|c| match c.kind {
            ColumnKind::Bit => format!("{} + 0", ident(&c.name)),
            ColumnKind::Plain | ColumnKind::Text => ident(&c.name),
        })
        .collect();
    super::range::select(&cols.join(", "), &ident(table), cond, filter)
}

/// Streams the rows of `query` on `conn` into `out` in `LOAD DATA`'s text format.
pub(crate) fn stream_rows(conn: &mut Conn, query: &str, out: &mut dyn Write) -> Result<ReadStats> {
    const FLUSH_AT: usize = 240 << 10;
    let mut result = conn
        .query_iter(query)
        .map_err(sql_err(format!("cannot read {query}")))?;
    let mut buf = Vec::with_capacity(FLUSH_AT + (16 << 10));
    let mut stats = ReadStats::default();
    let mut flush = |buf: &mut Vec<u8>, stats: &mut ReadStats| -> Result<()> {
        out.write_all(buf)
            .map_err(|e| Error::io("cannot write staged data", e))?;
        stats.bytes_read += buf.len() as u64;
        buf.clear();
        Ok(())
    };
    for row in result.by_ref() {
        let row = row.map_err(|e| sql_err(format!("cannot read {query}"))(e))?;
        for i in 0..row.len() {
            if i > 0 {
                buf.push(b'\t');
            }
            match row.as_ref(i) {
                None | Some(Value::NULL) => buf.extend_from_slice(b"\\N"),
                Some(Value::Bytes(b)) => escape_into(&mut buf, b),
                Some(other) => escape_into(&mut buf, other.as_sql(true).as_bytes()),
            }
        }
        buf.push(b'\n');
        stats.rows += 1;
        if buf.len() >= FLUSH_AT {
            flush(&mut buf, &mut stats)?;
        }
    }
    flush(&mut buf, &mut stats)?;
    Ok(stats)
}

/// Appends `value` with `LOAD DATA`'s escapes (backslash, tab, newline, NUL).
pub(crate) fn escape_into(buf: &mut Vec<u8>, value: &[u8]) {
    let mut rest = value;
    while let Some(i) = rest
        .iter()
        .position(|&b| matches!(b, b'\\' | b'\t' | b'\n' | 0))
    {
        buf.extend_from_slice(&rest[..i]);
        buf.extend_from_slice(match rest[i] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            _ => b"\\0",
        });
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::plan::bisect_bounds;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_load_data_reads_back() {
        let mut b = Vec::new();
        escape_into(&mut b, b"a\tb\nc\\d\0e\\N");
        assert_eq!(b, b"a\\tb\\nc\\\\d\\0e\\\\N");
    }

    fn exact(keys: &[i64]) -> impl FnMut(i64, i128) -> Result<u64> + '_ {
        |a, b| Ok(keys.iter().filter(|&&k| k >= a && (k as i128) < b).count() as u64)
    }

    proptest! {
        /// Ranges hold at most `max_rows` keys each and are few, whatever the key distribution.
        #[test]
        fn bisected_ranges_are_bounded_and_few(
            mut keys in prop::collection::btree_set(
                prop_oneof![-1_000i64..1_000, any::<i64>(), (0i64..50).prop_map(|k| k * 1_000_000_007)],
                1..400,
            ).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
            max_rows in 1u64..60,
        ) {
            keys.sort();
            let (lo, hi) = (keys[0], keys[keys.len() - 1]);
            let bounds = bisect_bounds(lo, hi, max_rows, &mut exact(&keys)).unwrap();
            prop_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
            let mut edges: Vec<Option<i64>> = vec![None];
            edges.extend(bounds.iter().map(|&b| Some(b)));
            edges.push(None);
            let mut seen = 0;
            for w in edges.windows(2) {
                let n = keys
                    .iter()
                    .filter(|&&k| w[0].is_none_or(|s| k >= s) && w[1].is_none_or(|e| k < e))
                    .count();
                prop_assert!(n as u64 <= max_rows, "a range holds {n} > {max_rows}");
                seen += n;
            }
            prop_assert_eq!(seen, keys.len());
            let optimal = (keys.len() as u64).div_ceil(max_rows);
            let ranges = bounds.len() as u64 + 1;
            prop_assert!(ranges <= 2 * optimal + 1, "{ranges} ranges for {optimal}");
        }
    }

    #[test]
    fn range_query_reads_bits_as_integers_and_bounds_half_open() {
        let cols = vec![
            MyColumn {
                name: "id".into(),
                kind: ColumnKind::Plain,
            },
            MyColumn {
                name: "f`lag".into(),
                kind: ColumnKind::Bit,
            },
        ];
        let q = range_query(
            "t",
            &MySplit::Key("id".into()),
            Some(-5),
            Some(10),
            Some("x > 1"),
            &cols,
        );
        assert_eq!(
            q,
            "SELECT `id`, `f``lag` + 0 FROM `t` WHERE `id` >= -5 AND `id` < 10 AND (x > 1)"
        );
    }
}
