//! Restoring a MySQL / MariaDB snapshot into a database, in dependency order: the sequences (a
//! column's default may draw from one), the tables (primary key only), every range's rows with
//! `LOAD DATA LOCAL INFILE` in parallel, then the secondary indexes (built once over the loaded
//! rows, as `myloader --innodb-optimize-keys` does) and the foreign keys, the sequences' values,
//! then the routines, the views, the triggers (after the rows, so the load fires none, as
//! mysqldump places them after each table's data) and the events (last, so none runs on a
//! database half restored), each as [`recreate`] creates it. The database is created when
//! missing. Objects of the snapshot that already exist there are refused unless `force` is
//! given, which replaces them.
//!
//! A load that produces any warning (a value the column would not take as it is) fails with the
//! server's warning, and the number of rows loaded must equal the number read. An object that
//! cannot be created is named in [`Restored::not_restored`], never left out silently.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mysql::prelude::Queryable;
use mysql::{Conn, LocalInfileHandler};

use super::recreate::{self, Creator};
use super::{ident, literal, options, sql_err, where_of, MyServer};
use crate::catalog::{ColumnKind, MyRangeTask, MysqlSchema, ReadStats, TaskEntry, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::source::{RestoreRun, Restored};
use crate::util::map_parallel;

pub(super) fn restore(r: &RestoreRun<'_>) -> Result<Restored> {
    let (job, manifest, opts) = (r.job, r.manifest, r.opts);
    let schema = manifest
        .mysql
        .as_ref()
        .ok_or_else(|| Error::integrity("the snapshot has no MySQL schema"))?;
    let url = r.to.url(
        &["mysql://", "mariadb://"],
        "MySQL",
        "mysql://user@host:port/database",
    )?;
    let parallel = r.engine.require_local(
        "a MySQL snapshot is restored by the local engine: run restore without --engine spark",
    )?;
    let password = crate::source::password_of(job);
    let t = MyServer {
        url,
        password: &password,
    };
    let mut conn = create_database(&t, schema.collation.as_deref())?;
    recreate::clear_target(&mut conn, schema, url, opts.force)?;
    // From here on a failure leaves part of the snapshot in the target: the error says so.
    let partial = |step: &str, e: Error| {
        Error::incomplete(format!(
            "{step} failed; the database {} now holds part of snapshot {} (its tables and some \
             of their rows): restore again with --force to replace them, or drop the database",
            super::where_of(url),
            &manifest.id.as_str()[..8]
        ))
        .with_source(e)
    };
    let mut objects = Creator::new(&mut conn, opts.skip_definer);
    objects.create_sequences(&schema.sequences);
    let deferred =
        create_tables(objects.conn(), schema).map_err(|e| partial("creating the tables", e))?;
    let (stats, problems) =
        load_all(r, &t, parallel).map_err(|e| partial("loading the rows", e))?;
    crate::failpoint::hit("my-rows-loaded");
    let built = map_parallel(&deferred, parallel, |(table, keys, _)| {
        alter(&t, table, keys)
    });
    built
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map_err(|e| partial("building the indexes", e))?;
    for (table, _, fks) in &deferred {
        alter(&t, table, fks).map_err(|e| partial("adding the foreign keys", e))?;
    }
    objects.set_sequence_values(&schema.sequences);
    for kind in recreate::items(schema) {
        objects.create_all(&kind);
    }
    objects.check_all_there(schema)?;
    Ok(Restored {
        stats,
        problems,
        not_restored: objects.not_restored,
        ..Restored::default()
    })
}

/// Creates the tables with their primary keys; returns per table the `ADD` clauses of its
/// secondary indexes and of its foreign keys, added after the load.
fn create_tables<'s>(conn: &mut Conn, schema: &'s MysqlSchema) -> Result<Vec<Deferred<'s>>> {
    let mut deferred = Vec::new();
    for table in &schema.tables {
        let (create, keys, fks) = split_create(&table.create);
        conn.query_drop(&create)
            .map_err(sql_err(format!("cannot create table {}", table.name)))?;
        deferred.push((table.name.as_str(), keys, fks));
    }
    Ok(deferred)
}

/// A table's name, its secondary indexes and its foreign keys.
type Deferred<'s> = (&'s str, Vec<String>, Vec<String>);

/// Loads every range in parallel; what was loaded, and the replicas skipped.
fn load_all(
    r: &RestoreRun<'_>,
    t: &MyServer<'_>,
    parallel: usize,
) -> Result<(ReadStats, Vec<String>)> {
    let mut stats = ReadStats::default();
    let mut problems = Vec::new();
    // Parallel loads into one table can deadlock on InnoDB's locks; the server rolls the load
    // back, and it is sent again.
    let backoff = crate::store::Backoff::new(r.job.run.retries, r.job.run.retry_delay);
    let loaded = map_parallel(&r.manifest.tasks, parallel, |task| {
        backoff
            .run(&format!("load {}", task.id), || {
                load_range(r.fetch, t, task)
            })
            .map_err(|e| e.with_context("task", &task.id))
    });
    for l in loaded {
        let (s, p) = l?;
        stats.add(&s);
        problems.extend(p);
    }
    Ok((stats, problems))
}

/// Connects to the target's server, creates the database when missing (with the source's default
/// collation) and selects it (once per restore; the loading connections then use
/// [`restoring_session`]).
fn create_database(t: &MyServer<'_>, collation: Option<&str>) -> Result<Conn> {
    let opts = options(t)?;
    let db = mysql::Opts::from(opts.clone())
        .get_db_name()
        .map(str::to_owned)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            Error::config(format!(
                "--to {}: name the database, as in mysql://user@host:port/database",
                t.url
            ))
        })?;
    let mut conn = Conn::new(opts.db_name(None::<String>))
        .map_err(sql_err(format!("cannot connect to {}", where_of(t.url))))?;
    let collate = collation.map_or(String::new(), |c| format!(" COLLATE {}", literal(c)));
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}{collate}",
        ident(&db)
    ))
    .map_err(sql_err(format!("cannot create database {db}")))?;
    conn.select_db(&db)
        .map_err(sql_err(format!("cannot use database {db}")))?;
    conn.query_drop(recreate::DDL_SESSION)
        .map_err(sql_err("cannot set up the session".into()))?;
    Ok(conn)
}

/// A connection to the (existing) target database, set up for restoring: no checks that the
/// snapshot already passed, a zero in an `AUTO_INCREMENT` column stays zero, and (`ddl`) the
/// statements' text is UTF-8, as `SHOW CREATE TABLE` prints it.
fn restoring_session(t: &MyServer<'_>, ddl: bool) -> Result<Conn> {
    let mut conn = crate::source::mysql::connect(t)?;
    let set = if ddl {
        recreate::DDL_SESSION
    } else {
        "SET SESSION foreign_key_checks = 0, unique_checks = 0, sql_mode = 'NO_AUTO_VALUE_ON_ZERO'"
    };
    conn.query_drop(set)
        .map_err(sql_err("cannot set up the session".into()))?;
    Ok(conn)
}

/// Splits a `CREATE TABLE` into the statement without secondary indexes and foreign keys, the
/// `ADD …` clauses of the indexes, and those of the foreign keys. An index that starts with the
/// `AUTO_INCREMENT` column stays (the column must be indexed).
pub(crate) fn split_create(create: &str) -> (String, Vec<String>, Vec<String>) {
    let lines: Vec<&str> = create.lines().collect();
    let Some(end) = lines.iter().skip(1).position(|l| l.starts_with(')')) else {
        return (create.to_owned(), Vec::new(), Vec::new());
    };
    let body: Vec<&str> = lines[1..=end]
        .iter()
        .map(|l| l.trim().trim_end_matches(','))
        .collect();
    let auto = body.iter().find_map(|l| {
        let rest = l.strip_prefix('`')?;
        let name = &rest[..rest.find("` ")?];
        l.contains(" AUTO_INCREMENT").then(|| format!("(`{name}`"))
    });
    let (mut kept, mut keys, mut fks) = (Vec::new(), Vec::new(), Vec::new());
    for l in body {
        let index = ["KEY ", "UNIQUE KEY ", "FULLTEXT KEY ", "SPATIAL KEY "]
            .iter()
            .any(|p| l.starts_with(p));
        if index && !auto.as_ref().is_some_and(|a| l.contains(a.as_str())) {
            keys.push(format!("ADD {l}"));
        } else if l.starts_with("CONSTRAINT ") && l.contains(" FOREIGN KEY ") {
            fks.push(format!("ADD {l}"));
        } else {
            kept.push(format!("  {l}"));
        }
    }
    let stmt = format!(
        "{}\n{}\n{}",
        lines[0],
        kept.join(",\n"),
        lines[end + 1..].join("\n")
    );
    (stmt, keys, fks)
}

/// `ALTER TABLE table ADD …, ADD …` on a fresh connection.
fn alter(t: &MyServer<'_>, table: &str, clauses: &[String]) -> Result<()> {
    if clauses.is_empty() {
        return Ok(());
    }
    let mut conn = restoring_session(t, true)?;
    conn.query_drop(format!(
        "ALTER TABLE {} {}",
        ident(table),
        clauses.join(", ")
    ))
    .map_err(sql_err(format!("cannot build the indexes of {table}")))
}

/// Loads one range's rows with `LOAD DATA LOCAL INFILE`, the data file streamed as the file.
pub(crate) fn load_range(
    ctx: &Fetcher<'_>,
    t: &MyServer<'_>,
    task: &TaskEntry,
) -> Result<(ReadStats, Vec<String>)> {
    let TaskKind::MyRange(MyRangeTask { table, columns, .. }) = &task.kind else {
        return Err(Error::integrity("a non-table task in a MySQL snapshot"));
    };
    let (data, problems) = ctx.fetch(&task.data)?;
    let reader: Box<dyn Read + Send> = Box::new(data.open()?);
    let slot = Arc::new(Mutex::new(Some(reader)));
    let sent = Arc::new(AtomicU64::new(0));
    let mut conn = restoring_session(t, false)?;
    let (slot2, sent2) = (slot.clone(), sent.clone());
    conn.set_local_infile_handler(Some(LocalInfileHandler::new(move |_, out| {
        let taken = slot2.lock().map(|mut s| s.take()).unwrap_or(None);
        let mut r = taken.ok_or_else(|| std::io::Error::other("the data file was sent already"))?;
        let n = std::io::copy(&mut r, out)?;
        sent2.fetch_add(n, Ordering::Relaxed);
        Ok(())
    })));
    let (mut list, mut sets) = (Vec::new(), Vec::new());
    for (i, c) in columns.iter().enumerate() {
        let via = match c.kind {
            ColumnKind::Plain => None,
            ColumnKind::Bit => Some(format!("CAST(@c{i} AS UNSIGNED)")),
            ColumnKind::Text => Some(format!("CONVERT(@c{i} USING utf8mb4)")),
        };
        match via {
            Some(expr) => {
                list.push(format!("@c{i}"));
                sets.push(format!("{} = {expr}", ident(&c.name)));
            }
            None => list.push(ident(&c.name)),
        }
    }
    let mut stmt = format!(
        r"LOAD DATA LOCAL INFILE 'coldvault' INTO TABLE {} CHARACTER SET binary FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' ({})",
        ident(table),
        list.join(", ")
    );
    if !sets.is_empty() {
        stmt.push_str(" SET ");
        stmt.push_str(&sets.join(", "));
    }
    let load_err = sql_err(format!("cannot load {table}"));
    let (rows, warnings) = {
        let res = conn.query_iter(&stmt).map_err(load_err)?;
        (res.affected_rows(), res.warnings())
    };
    if warnings > 0 {
        let first: Vec<(String, u32, String)> =
            conn.query("SHOW WARNINGS LIMIT 3").unwrap_or_default();
        let text: Vec<String> = first.into_iter().map(|(_, _, m)| m).collect();
        return Err(Error::source_err(format!(
            "loading {table} gave {warnings} warning(s): {}",
            text.join("; ")
        )));
    }
    if rows != task.stats.rows {
        return Err(Error::source_err(format!(
            "loading {table} stored {rows} rows of the {} read",
            task.stats.rows
        )));
    }
    let n = sent.load(Ordering::Relaxed);
    ctx.progress.add_bytes(n);
    ctx.progress.task_done();
    Ok((
        ReadStats {
            rows,
            bytes_read: n,
            ..ReadStats::default()
        },
        problems,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_indexes_and_foreign_keys_are_deferred() {
        let create = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  `p` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `ua` (`a`),\n  KEY `kp` (`p`),\n  CONSTRAINT `fk` FOREIGN KEY (`p`) REFERENCES `par` (`id`),\n  CONSTRAINT `c` CHECK (`a` > 0)\n) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4";
        let (stmt, keys, fks) = split_create(create);
        assert_eq!(
            stmt,
            "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` int(11) DEFAULT NULL,\n  `p` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  CONSTRAINT `c` CHECK (`a` > 0)\n) ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(keys, ["ADD UNIQUE KEY `ua` (`a`)", "ADD KEY `kp` (`p`)"]);
        assert_eq!(
            fks,
            ["ADD CONSTRAINT `fk` FOREIGN KEY (`p`) REFERENCES `par` (`id`)"]
        );
    }

    #[test]
    fn an_index_on_the_auto_increment_column_stays() {
        let create = "CREATE TABLE `t` (\n  `k` varchar(3) NOT NULL,\n  `n` int(11) NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`k`),\n  KEY `n` (`n`)\n) ENGINE=InnoDB";
        let (stmt, keys, _) = split_create(create);
        assert!(stmt.contains("KEY `n` (`n`)"), "{stmt}");
        assert!(keys.is_empty());
    }
}
