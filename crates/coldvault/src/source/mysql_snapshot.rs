//! One point in time for every task of a MySQL / MariaDB backup, as mydumper takes it.
//!
//! MySQL cannot hand a snapshot from one connection to another, so the coordinator opens every
//! connection the tasks will use up front: it takes a brief global read lock (`FLUSH TABLES WITH
//! READ LOCK`), starts `START TRANSACTION WITH CONSISTENT SNAPSHOT` on each connection, and
//! unlocks. While the lock is held no transaction can commit, so all those transactions see the
//! same committed state. The connections wait in a [`SnapshotSet`]; a task borrows one, reads its
//! range inside that transaction and gives it back. The schema (`SHOW CREATE TABLE` / `VIEW`) is
//! read on a connection of the same set.
//!
//! What the lock costs the server: taking it waits for running statements to finish and blocks
//! every write (and the start of new statements on tables being flushed) until it is released;
//! coldvault holds it only while it starts the transactions, typically a few milliseconds, and
//! reports the time. The open transactions then keep old row versions alive (undo) until the
//! backup ends. Needs the RELOAD privilege.
//!
//! Because the connections live in this process, MySQL jobs run on the local engine.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use mysql::prelude::Queryable;
use mysql::Conn;
use serde::{Deserialize, Serialize};

use super::mysql::{connect, sql_err, where_of, MyTarget};
use super::ReadStats;
use crate::error::{Error, Result};

/// A table or view as `SHOW CREATE` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyObject {
    /// Its name.
    pub name: String,
    /// The `CREATE` statement (views without their `DEFINER`).
    pub create: String,
}

/// What a snapshot keeps of a MySQL / MariaDB database besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlSchema {
    /// The tables, with indexes, constraints and the `AUTO_INCREMENT` counter.
    pub tables: Vec<MyObject>,
    /// The views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<MyObject>,
    /// How long the global read lock was held, in milliseconds.
    pub lock_ms: u64,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    alive: usize,
}

struct Shared {
    pool: Mutex<Pool>,
    ready: Condvar,
}

static OPEN: Mutex<Vec<(String, Arc<Shared>)>> = Mutex::new(Vec::new());

/// The connections of one backup, each inside a transaction of the same consistent snapshot.
pub struct SnapshotSet {
    id: String,
    schema: Conn,
    lock_ms: u64,
}

impl SnapshotSet {
    /// Opens `workers` task connections and one for the schema, all in one snapshot.
    pub fn open(t: &MyTarget<'_>, workers: usize) -> Result<SnapshotSet> {
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
            .ok_or_else(|| Error::source_err("no connection"))?;
        let mut h = blake3::Hasher::new();
        h.update(&fastrand::u64(..).to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        let id = format!("mysql-{}", &h.finalize().to_hex()[..16]);
        let shared = Arc::new(Shared {
            pool: Mutex::new(Pool {
                alive: conns.len(),
                idle: conns,
            }),
            ready: Condvar::new(),
        });
        lock_registry().push((id.clone(), shared));
        Ok(SnapshotSet {
            id,
            schema,
            lock_ms,
        })
    }

    /// The id tasks carry to find this set.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The schema of `tables` and of the views named by `views` (every view when `None`).
    pub fn schema(&mut self, tables: &[String], views: Option<&[String]>) -> Result<MysqlSchema> {
        let mut out = MysqlSchema {
            tables: Vec::new(),
            views: Vec::new(),
            lock_ms: self.lock_ms,
        };
        for t in tables {
            out.tables.push(MyObject {
                name: t.clone(),
                create: self.show_create("TABLE", t)?,
            });
        }
        let all_views: Vec<String> = self
            .schema
            .query(
                "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() \
                 ORDER BY TABLE_NAME",
            )
            .map_err(sql_err("cannot list the views".into()))?;
        for v in all_views {
            let wanted = views.is_none_or(|pats| {
                pats.iter()
                    .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&v)))
            });
            if wanted {
                let create = strip_definer(&self.show_create("VIEW", &v)?);
                out.views.push(MyObject { name: v, create });
            }
        }
        Ok(out)
    }

    fn show_create(&mut self, what: &str, name: &str) -> Result<String> {
        let row: Option<mysql::Row> = self
            .schema
            .query_first(format!("SHOW CREATE {what} {}", super::mysql::ident(name)))
            .map_err(sql_err(format!("cannot read the definition of {name}")))?;
        let create = row.and_then(|r| match r.as_ref(1) {
            Some(mysql::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        });
        create.ok_or_else(|| Error::source_err(format!("no definition of {name}")))
    }
}

impl Drop for SnapshotSet {
    fn drop(&mut self) {
        lock_registry().retain(|(id, _)| id != &self.id);
    }
}

fn lock_registry() -> std::sync::MutexGuard<'static, Vec<(String, Arc<Shared>)>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads `query` on a connection of the snapshot `id` into `out`.
pub(crate) fn read_range(
    id: Option<&str>,
    query: &str,
    out: &mut dyn std::io::Write,
) -> Result<ReadStats> {
    let shared = id
        .and_then(|id| {
            lock_registry()
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s.clone())
        })
        .ok_or_else(|| {
            Error::config(
                "a MySQL task runs only in the process that holds the backup's snapshot \
                 connections (the local engine)",
            )
        })?;
    let mut conn = {
        let mut pool = shared.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = pool.idle.pop() {
                break c;
            }
            if pool.alive == 0 {
                return Err(Error::source_err(
                    "every connection of the snapshot was lost",
                ));
            }
            pool = shared.ready.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    };
    let result = super::mysql::stream_rows(&mut conn, query, out);
    let mut pool = shared.pool.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        // A connection whose read failed may hold half a result: it leaves the set.
        Err(_) => pool.alive -= 1,
        Ok(_) => pool.idle.push(conn),
    }
    shared.ready.notify_one();
    result
}

/// `CREATE ALGORITHM=… DEFINER=`u`@`h` SQL SECURITY …` without the definer, so the view can be
/// created by whoever restores it.
fn strip_definer(create: &str) -> String {
    let Some(at) = create.find(" DEFINER=") else {
        return create.to_owned();
    };
    let rest = &create[at + 1..];
    match rest.find(" SQL SECURITY ").or_else(|| rest.find(" VIEW ")) {
        Some(end) => format!("{}{}", &create[..at], &rest[end..]),
        None => create.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definer_is_left_out_of_views() {
        let v = "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1";
        assert_eq!(
            strip_definer(v),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1"
        );
        assert_eq!(
            strip_definer("CREATE VIEW v AS select 1"),
            "CREATE VIEW v AS select 1"
        );
    }
}
