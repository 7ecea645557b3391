//! A PostgreSQL snapshot's schema, captured in the same exported snapshot as the rows and
//! stored as data files like any other, each a SQL script `psql` runs:
//!
//! - pre-data (`pg_dump --schema-only --section=pre-data`): types, functions, tables, views;
//! - post-data (`--section=post-data`): indexes, constraints, triggers, rules, policies,
//!   publications, statistics, then `REFRESH MATERIALIZED VIEW` of every materialized view that
//!   was populated, in dependency order, as pg_restore does: their contents are a function of
//!   the restored rows, so refreshing them stores nothing twice and cannot disagree with them;
//! - drops: the `DROP … IF EXISTS` block of `pg_dump --clean --if-exists`, dependents first,
//!   which only `restore --force` runs, so a plain restore never drops anything;
//! - large objects with their OIDs and comments (`lo_create`, `lo_put` in 1 MiB pieces).
//!
//! A job that names its `tables` captures those tables only (`pg_dump -t`, with the partitioned
//! tables their partitions hang from, the sequences they own, and `CREATE SCHEMA IF NOT EXISTS`
//! for their schemas): a restore of it creates nothing else. Owners and privileges are left out
//! (`--no-owner --no-acl`), so a restore works into a server whose roles differ.

use std::io::Write;
use std::path::Path;

use postgres::Client;

use super::{client, connect, qualified, sql_err, PgServer};
use crate::catalog::PostgresSchema;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::repo::Repository;
use crate::stage::Staging;
use crate::store::{data_key, Payload, Receipt};

/// What a schema capture covers.
pub(super) enum Cover {
    /// Every object of the database.
    Whole,
    /// These tables (`schema.name`) and what belongs to them.
    Tables(Vec<String>),
}

/// The bytes of one large object read per statement.
const LO_PIECE: i32 = 1 << 20;

/// Captures the schema of `snapshot` and stores it; `sequences` were read in the same snapshot.
/// Runs while the data tasks run: it only needs the snapshot to stay open.
pub(super) fn capture(
    job: &Job,
    server: &PgServer<'_>,
    snapshot: &str,
    cover: &Cover,
    sequences: Vec<(String, i64)>,
    repo: &Repository,
    staging: &Staging,
) -> Result<PostgresSchema> {
    let store = |name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>| {
        let mut stager = staging.stager(
            &format!("schema-{name}"),
            job.run.zstd_level,
            repo.crypt()?.as_ref(),
        )?;
        write(&mut stager)?;
        let staged = stager.finish()?;
        let key = data_key(staged.checksum(), "sql.zst");
        repo.replicator().put(
            &key,
            Payload::File(staged.path()),
            staged.size(),
            staged.checksum(),
        )
    };
    let mut reader = in_snapshot(server, snapshot)?;
    let (matviews, large_objects) = match cover {
        Cover::Whole => (
            refresh_order(&mut reader)?,
            large_object_count(&mut reader)?,
        ),
        Cover::Tables(_) => (Vec::new(), 0),
    };
    // One pg_dump reads the catalogs once, into an archive; the sections are rendered from it
    // without the server.
    let archive = tempfile::Builder::new()
        .prefix("schema-")
        .suffix(".dump")
        .tempfile_in(staging.dir())
        .map_err(|e| Error::io("cannot create the schema archive in staging", e))?;
    pg_dump(server, snapshot, cover, archive.path())?;
    let dump = |extra: &[&str], out: &mut dyn Write| pg_restore(server, archive.path(), extra, out);
    let (pre, post, drops, los) = std::thread::scope(|s| {
        let pre = s.spawn(|| {
            store("pre-data", &mut |out| {
                create_schemas(cover, out)?;
                dump(&["--section=pre-data"], out)
            })
        });
        let post = s.spawn(|| {
            store("post-data", &mut |out| {
                dump(&["--section=post-data"], out)?;
                refresh(&matviews, out)
            })
        });
        let drops = s.spawn(|| {
            store("drops", &mut |out| {
                let mut block = DropBlock::new(out);
                dump(&["--clean", "--if-exists"], &mut block)
            })
        });
        let los = (large_objects > 0)
            .then(|| {
                store("large-objects", &mut |out| {
                    dump_large_objects(&mut reader, out)
                })
            })
            .transpose();
        (pre.join(), post.join(), drops.join(), los)
    });
    let joined = |r: std::thread::Result<Result<Receipt>>| {
        r.map_err(|_| Error::source_err("a pg_dump thread panicked"))?
    };
    Ok(PostgresSchema {
        pre_data: joined(pre)?,
        post_data: joined(post)?,
        sequences,
        drops: Some(joined(drops)?),
        large_objects: los?,
    })
}

/// A connection reading in `snapshot`.
fn in_snapshot(server: &PgServer<'_>, snapshot: &str) -> Result<Client> {
    let mut c = connect(server)?;
    c.batch_execute(&super::reading_in(Some(snapshot)).join(";"))
        .map_err(sql_err("cannot import the snapshot".into()))?;
    Ok(c)
}

/// `CREATE SCHEMA IF NOT EXISTS` for the schemas of a table selection (`pg_dump -t` leaves
/// them out), so the script runs into a new database.
fn create_schemas(cover: &Cover, out: &mut dyn Write) -> Result<()> {
    let Cover::Tables(tables) = cover else {
        return Ok(());
    };
    let mut schemas: Vec<&str> = tables
        .iter()
        .filter_map(|t| t.split_once('.').map(|(s, _)| s))
        .filter(|s| *s != "public")
        .collect();
    schemas.sort_unstable();
    schemas.dedup();
    for s in schemas {
        writeln!(out, "CREATE SCHEMA IF NOT EXISTS {};", super::ident(s))
            .map_err(|e| Error::io("cannot write staged data", e))?;
    }
    Ok(())
}

/// Runs `pg_dump --schema-only` of `snapshot` over `cover` into the archive `to`.
fn pg_dump(server: &PgServer<'_>, snapshot: &str, cover: &Cover, to: &Path) -> Result<()> {
    let mut dump = client::PgTool::pg_dump(server);
    // Never queued for ever behind a DDL statement that waits for the run's own locks.
    dump.args(["--schema-only", "--format=custom", "--compress=0"])
        .arg(format!("--lock-wait-timeout={}", super::LOCK_WAIT))
        .args([format!("--snapshot={snapshot}")])
        .arg("--file")
        .arg(to);
    if let Cover::Tables(tables) = cover {
        // In double quotes a pattern is a name: no wildcard, no case folding.
        for t in tables {
            dump.args(["-t".to_owned(), qualified(t)]);
        }
    }
    dump.run(None, None, "pg_dump --schema-only failed")
}

/// Renders the schema archive `from` as SQL (`pg_restore` with `extra`, no server) into `out`.
/// Owners and privileges are left out.
fn pg_restore(
    server: &PgServer<'_>,
    from: &Path,
    extra: &[&str],
    out: &mut dyn Write,
) -> Result<()> {
    let mut render = client::PgTool::pg_restore(server);
    render
        .args(["--no-owner", "--no-acl", "--file=-"])
        .args(extra)
        .arg(from);
    render.run(
        None,
        Some(&mut |chunk: &[u8]| {
            out.write_all(chunk)
                .map_err(|e| Error::io("cannot write staged data", e))
        }),
        &format!("pg_restore {} of the schema failed", extra.join(" ")),
    )
}

/// Keeps the lines of a `--clean` dump up to its first object header (`-- Name: …`).
struct DropBlock<'a> {
    out: &'a mut dyn Write,
    line: Vec<u8>,
    done: bool,
}

impl<'a> DropBlock<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        DropBlock {
            out,
            line: Vec::new(),
            done: false,
        }
    }
}

impl Write for DropBlock<'_> {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<usize> {
        for &b in chunk {
            if self.done {
                break;
            }
            self.line.push(b);
            if b != b'\n' {
                continue;
            }
            if self.line.starts_with(b"-- Name: ") {
                self.done = true;
            } else if !self.line.starts_with(b"\\") {
                self.out.write_all(&self.line)?;
            }
            self.line.clear();
        }
        Ok(chunk.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The populated materialized views, each after those it reads (through views too).
fn refresh_order(c: &mut Client) -> Result<Vec<String>> {
    let rows = c
        .query(
            "WITH RECURSIVE uses(mv, rel) AS ( \
               SELECT r.ev_class, d.refobjid FROM pg_rewrite r \
                 JOIN pg_class m ON m.oid = r.ev_class AND m.relkind = 'm' \
                 JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class \
               UNION \
               SELECT u.mv, d.refobjid FROM uses u \
                 JOIN pg_class v ON v.oid = u.rel AND v.relkind = 'v' \
                 JOIN pg_rewrite r ON r.ev_class = v.oid \
                 JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid) \
             SELECT format('%I.%I', n.nspname, c.relname), c.oid::int8, \
               coalesce((SELECT array_agg(DISTINCT u.rel::int8) FROM uses u \
                 JOIN pg_class x ON x.oid = u.rel AND x.relkind = 'm' \
                 WHERE u.mv = c.oid AND u.rel <> c.oid), '{}') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid",
            &[],
        )
        .map_err(sql_err("cannot list the materialized views".into()))?;
    let views: Vec<(String, i64, Vec<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(dependents_last(views))
}

/// Orders `(name, id, ids it reads)` so each comes after what it reads among them; a cycle
/// (which PostgreSQL does not allow) would keep the creation order.
fn dependents_last(mut pending: Vec<(String, i64, Vec<i64>)>) -> Vec<String> {
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = |v: &(String, i64, Vec<i64>), pending: &[(String, i64, Vec<i64>)]| {
            !v.2.iter().any(|d| pending.iter().any(|p| p.1 == *d))
        };
        let i = (0..pending.len())
            .find(|&i| ready(&pending[i], &pending))
            .unwrap_or(0);
        order.push(pending.remove(i).0);
    }
    order
}

/// `REFRESH MATERIALIZED VIEW` of each view in `order`.
fn refresh(order: &[String], out: &mut dyn Write) -> Result<()> {
    for v in order {
        writeln!(out, "REFRESH MATERIALIZED VIEW {v};")
            .map_err(|e| Error::io("cannot write staged data", e))?;
    }
    Ok(())
}

fn large_object_count(c: &mut Client) -> Result<i64> {
    Ok(
        c.query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
            .map_err(sql_err("cannot count the large objects".into()))?
            .get(0),
    )
}

/// Writes every large object of the snapshot as SQL, reading them through a cursor and in
/// pieces, so memory stays bounded whatever their number and size.
fn dump_large_objects(c: &mut Client, out: &mut dyn Write) -> Result<()> {
    let w = |e| Error::io("cannot write staged data", e);
    c.batch_execute(
        "DECLARE coldvault_lo CURSOR FOR SELECT oid::int8, \
           quote_literal(obj_description(oid, 'pg_largeobject')) \
         FROM pg_largeobject_metadata ORDER BY oid",
    )
    .map_err(sql_err("cannot list the large objects".into()))?;
    writeln!(
        out,
        "-- Large objects with their OIDs (coldvault): run with psql"
    )
    .map_err(w)?;
    loop {
        let batch = c
            .query("FETCH 1000 FROM coldvault_lo", &[])
            .map_err(sql_err("cannot list the large objects".into()))?;
        if batch.is_empty() {
            return Ok(());
        }
        for row in batch {
            let (oid, comment): (i64, Option<String>) = (row.get(0), row.get(1));
            writeln!(out, "SELECT pg_catalog.lo_create('{oid}');").map_err(w)?;
            let mut offset = 0i64;
            loop {
                let piece: Vec<u8> = c
                    .query_one(
                        "SELECT lo_get($1::int8::oid, $2, $3)",
                        &[&oid, &offset, &LO_PIECE],
                    )
                    .map_err(sql_err(format!("cannot read large object {oid}")))?
                    .get(0);
                if piece.is_empty() {
                    break;
                }
                write!(out, "SELECT pg_catalog.lo_put('{oid}', {offset}, '\\x").map_err(w)?;
                out.write_all(hex(&piece).as_bytes()).map_err(w)?;
                writeln!(out, "');").map_err(w)?;
                offset += piece.len() as i64;
                if piece.len() < LO_PIECE as usize {
                    break;
                }
            }
            if let Some(text) = comment {
                writeln!(out, "COMMENT ON LARGE OBJECT {oid} IS {text};").map_err(w)?;
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_block_ends_at_the_first_object_and_leaves_meta_commands_out() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET x = 1;\n\
                    DROP VIEW IF EXISTS public.v;\nDROP TABLE IF EXISTS public.t;\n--\n\
                    -- Name: t; Type: TABLE; Schema: public; Owner: -\n--\nCREATE TABLE t ();\n";
        let mut out = Vec::new();
        let mut f = DropBlock::new(&mut out);
        for chunk in dump.as_bytes().chunks(7) {
            f.write_all(chunk).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "--\n-- PostgreSQL database dump\n--\nSET x = 1;\n\
             DROP VIEW IF EXISTS public.v;\nDROP TABLE IF EXISTS public.t;\n--\n"
        );
    }

    #[test]
    fn a_materialized_view_is_refreshed_after_those_it_reads() {
        let order = dependents_last(vec![
            ("outer".into(), 3, vec![2]),
            ("inner".into(), 2, vec![1]),
            ("base".into(), 1, vec![]),
            ("alone".into(), 4, vec![]),
        ]);
        assert_eq!(order, ["base", "inner", "outer", "alone"]);
    }
}
