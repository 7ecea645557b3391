//! One point in time for every task of a MySQL / MariaDB backup, as mydumper takes it.
//!
//! MySQL cannot hand a snapshot from one connection to another, so the coordinator opens every
//! connection the tasks will use up front: it takes a brief global read lock (`FLUSH TABLES WITH
//! READ LOCK`), starts `START TRANSACTION WITH CONSISTENT SNAPSHOT` on each connection, and
//! unlocks. While the lock is held no transaction can commit, so all those transactions see the
//! same committed state. The connections wait in a [`SnapshotSet`]; a task borrows one, reads its
//! range inside that transaction and gives it back. The schema (`SHOW CREATE TABLE` and the
//! objects of [`objects`](super::objects)) is read on a connection of the same set, right after
//! the lock: the server's data dictionary is not versioned, so, as with `mysqldump
//! --single-transaction`, no DDL should run while the backup starts.
//!
//! What the lock costs the server: taking it waits for running statements to finish and blocks
//! every write (and the start of new statements on tables being flushed) until it is released;
//! coldvault holds it only while it starts the transactions, typically a few milliseconds, and
//! reports the time. The open transactions then keep old row versions alive (undo) until the
//! backup ends. Needs the RELOAD privilege.
//!
//! Because the connections live in this process, MySQL jobs run on the local engine. The set is a
//! value the backup run owns; tasks reach it through the run's reader, never through a global.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use mysql::prelude::Queryable;
use mysql::Conn;

use super::{connect, sql_err, where_of, MyServer};
use crate::catalog::{MyObject, MysqlSchema, ReadStats};
use crate::error::{Error, Result};

#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    alive: usize,
}

/// The connections of one backup, each inside a transaction of the same consistent snapshot.
pub(crate) struct SnapshotSet {
    pool: Mutex<Pool>,
    ready: Condvar,
    schema: Conn,
    lock_ms: u64,
}

impl SnapshotSet {
    /// Opens `workers` task connections and one for the schema, all in one snapshot.
    pub(crate) fn open(t: &MyServer<'_>, workers: usize) -> Result<SnapshotSet> {
        let mut conns = (0..workers.max(1) + 1)
            .map(|_| connect(t))
            .collect::<Result<Vec<_>>>()?;
        for c in &mut conns {
            c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .map_err(sql_err("cannot set the isolation level".into()))?;
        }
        let mut lock = connect(t)?;
        let started = Instant::now();
        lock.query_drop("FLUSH TABLES WITH READ LOCK")
            .map_err(sql_err(format!(
                "cannot take the global read lock on {} (FLUSH TABLES WITH READ LOCK needs the RELOAD privilege)",
                where_of(t.url)
            )))?;
        let begun = conns.iter_mut().try_for_each(|c| {
            c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .map_err(sql_err("cannot start the snapshot transaction".into()))
        });
        let unlocked = lock
            .query_drop("UNLOCK TABLES")
            .map_err(sql_err("cannot release the global read lock".into()));
        let lock_ms = started.elapsed().as_millis() as u64;
        drop(lock);
        begun?;
        unlocked?;
        let schema = conns
            .pop()
            .ok_or_else(|| Error::internal("no connection for the schema"))?;
        Ok(SnapshotSet {
            pool: Mutex::new(Pool {
                alive: conns.len(),
                idle: conns,
            }),
            ready: Condvar::new(),
            schema,
            lock_ms,
        })
    }

    /// The schema of `tables` and of the other objects a backup of them keeps (see [`objects`]);
    /// `patterns` are the job's `tables` (`None`: the whole database).
    ///
    /// [`objects`]: super::objects
    pub(crate) fn schema(
        &mut self,
        tables: &[String],
        patterns: Option<&[String]>,
    ) -> Result<MysqlSchema> {
        let (db, collation): (String, String) = self
            .schema
            .query_first(
                "SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME = DATABASE()",
            )
            .map_err(sql_err("cannot read the database's collation".into()))?
            .ok_or_else(|| Error::source_err("the database vanished during the backup"))?;
        let mut out = MysqlSchema {
            tables: Vec::new(),
            views: Vec::new(),
            routines: Vec::new(),
            triggers: Vec::new(),
            events: Vec::new(),
            sequences: Vec::new(),
            collation: Some(collation),
            lock_ms: self.lock_ms,
        };
        for t in tables {
            out.tables.push(MyObject {
                name: t.clone(),
                create: own_sequences(&self.show_create_table(t)?, &db),
                session: None,
            });
        }
        super::objects::read_objects(&mut self.schema, &mut out, tables, patterns)?;
        Ok(out)
    }

    /// `SHOW CREATE TABLE`, as the server's bytes (its text is UTF-8).
    fn show_create_table(&mut self, name: &str) -> Result<String> {
        let row: Option<mysql::Row> = self
            .schema
            .query_first(format!("SHOW CREATE TABLE {}", super::ident(name)))
            .map_err(sql_err(format!("cannot read the definition of {name}")))?;
        let create = row.and_then(|r| match r.as_ref(1) {
            Some(mysql::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        });
        create.ok_or_else(|| Error::source_err(format!("no definition of {name}")))
    }
}

impl SnapshotSet {
    /// Reads `query` into `out` on a connection of the set (waiting for one to be free).
    pub(crate) fn read_range(
        &self,
        query: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<ReadStats> {
        let mut conn = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(c) = pool.idle.pop() {
                    break c;
                }
                if pool.alive == 0 {
                    return Err(Error::source_err(
                        "every connection of the snapshot was lost",
                    ));
                }
                pool = self.ready.wait(pool).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = super::stream_rows(&mut conn, query, out);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            // A connection whose read failed may hold half a result: it leaves the set.
            Err(_) => pool.alive -= 1,
            Ok(_) => pool.idle.push(conn),
        }
        self.ready.notify_one();
        result
    }
}

/// `create` with the database left out of the sequences of its own that it names: the server
/// prints a column's `DEFAULT NEXT VALUE FOR s` as ``nextval(`db`.`s`)``, which would tie a
/// restored table to the source database's sequence instead of its own.
fn own_sequences(create: &str, db: &str) -> String {
    let mut out = create.to_owned();
    for f in ["nextval(", "lastval("] {
        out = out.replace(&format!("{f}{}.", super::ident(db)), f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_drawing_from_a_sequence_of_the_database_names_no_database() {
        let create = "CREATE TABLE `a` (\n  `k` bigint(20) NOT NULL DEFAULT nextval(`shop`.`s`),\n  \
            `p` bigint(20) DEFAULT lastval(`shop`.`s`),\n  `o` bigint(20) DEFAULT nextval(`other`.`s`)\n)";
        assert_eq!(
            own_sequences(create, "shop"),
            "CREATE TABLE `a` (\n  `k` bigint(20) NOT NULL DEFAULT nextval(`s`),\n  \
            `p` bigint(20) DEFAULT lastval(`s`),\n  `o` bigint(20) DEFAULT nextval(`other`.`s`)\n)"
        );
    }
}
