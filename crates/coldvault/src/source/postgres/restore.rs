//! Restoring a PostgreSQL snapshot into a database: the schema's pre-data section (tables, types,
//! sequences), then every range's rows with `COPY … FROM STDIN` in parallel, then the post-data
//! section (indexes, constraints, triggers, built once over the loaded rows), then the sequences'
//! values. The target must not hold the snapshot's tables yet, unless `force` is given: then they
//! are dropped (with what depends on them) and replaced.

use std::io::BufReader;

use super::{client, connect, ident, qualified, where_of, PgServer};
use crate::catalog::{ReadStats, TaskEntry, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::source::{EntryWork, RestoreRun};
use crate::store::Receipt;

pub(super) fn restore(r: &RestoreRun<'_>) -> Result<(ReadStats, Vec<String>)> {
    let (ctx, job, manifest, opts) = (r.fetch, r.job, r.manifest, r.opts);
    let schema = manifest
        .postgres
        .as_ref()
        .ok_or_else(|| Error::integrity("the snapshot has no PostgreSQL schema"))?;
    let url = r.to.url(
        &["postgres://", "postgresql://"],
        "PostgreSQL",
        "postgres://user@host:port/database",
    )?;
    let password = crate::source::password_of(job);
    let t = PgServer {
        url,
        password: &password,
    };
    let mut tables: Vec<&str> = manifest
        .tasks
        .iter()
        .filter_map(|task| match &task.kind {
            TaskKind::PgRange(r) => Some(r.table.as_str()),
            _ => None,
        })
        .collect();
    tables.dedup();
    let mut client = connect(&t)?;
    let mut present = Vec::new();
    for table in &tables {
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&qualified(table)])
            .map_err(|e| Error::source_err("cannot inspect the target").with_source(e))?
            .get(0);
        if exists.is_some() {
            present.push(qualified(table));
        }
    }
    if !present.is_empty() && !opts.force {
        return Err(Error::config(format!(
            "the target database {} already has table {}; restore into a new database, or pass --force to replace them",
            where_of(url),
            tables_named(&present)
        )));
    }
    if !present.is_empty() {
        // CASCADE: foreign keys and views of other tables that point at them go too.
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {} CASCADE",
                present.join(", ")
            ))
            .map_err(|e| Error::source_err("cannot drop the tables to replace").with_source(e))?;
    }
    let mut problems = Vec::new();
    problems.extend(psql(ctx, &t, &schema.pre_data, "pre-data")?);
    let entries: Vec<&TaskEntry> = manifest.tasks.iter().collect();
    let loaded = r.each_entry(&entries, r.to)?;
    problems.extend(loaded.problems);
    let stats = loaded.stats;
    problems.extend(psql(ctx, &t, &schema.post_data, "post-data")?);
    for (seq, value) in &schema.sequences {
        client
            .execute(
                "SELECT setval($1::text::regclass, $2, true)",
                &[&qualified(seq), value],
            )
            .map_err(|e| Error::source_err(format!("cannot set sequence {seq}")).with_source(e))?;
    }
    Ok((stats, problems))
}

/// Loads one range's rows into the database of `work` with `COPY … FROM STDIN`.
pub(super) fn load_range(
    ctx: &Fetcher<'_>,
    job: &Job,
    work: &EntryWork,
) -> Result<(ReadStats, Vec<String>)> {
    let task = &work.entry;
    let TaskKind::PgRange(range) = &task.kind else {
        return Err(Error::integrity(
            "a non-table task in a PostgreSQL snapshot",
        ));
    };
    let (table, columns) = (&range.table, &range.columns);
    let password = crate::source::password_of(job);
    let t = PgServer {
        url: work.to.url(
            &["postgres://", "postgresql://"],
            "PostgreSQL",
            "postgres://user@host:port/database",
        )?,
        password: &password,
    };
    let column_list = if columns.is_empty() {
        String::new()
    } else {
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        format!(" ({})", cols.join(", "))
    };
    let (data, problems) = ctx.fetch(&task.data)?;
    let mut reader = BufReader::with_capacity(256 << 10, data.open()?);
    let mut client = connect(&t)?;
    let load_err =
        |e: postgres::Error| Error::source_err(format!("cannot load {table}")).with_source(e);
    let mut writer = client
        .copy_in(&format!(
            "COPY {}{column_list} FROM STDIN",
            qualified(table)
        ))
        .map_err(load_err)?;
    let n = std::io::copy(&mut reader, &mut writer)
        .map_err(|e| Error::source_err(format!("cannot load {table}")).with_source(e))?;
    let rows = writer.finish().map_err(load_err)?;
    ctx.progress.add_bytes(n);
    Ok((
        ReadStats {
            rows,
            bytes_read: n,
            ..ReadStats::default()
        },
        problems,
    ))
}

/// Runs one schema section with `psql` (pg_dump's output may hold psql meta-commands).
fn psql(ctx: &Fetcher<'_>, t: &PgServer<'_>, data: &Receipt, section: &str) -> Result<Vec<String>> {
    let (verified, problems) = ctx.fetch(data)?;
    let mut sql = Vec::new();
    std::io::copy(&mut verified.open()?, &mut sql).map_err(|e| {
        Error::integrity(format!("cannot decode the {section} schema")).with_source(e)
    })?;
    client::PgTool::psql(t).run(
        Some(&sql),
        None,
        &format!("creating the {section} schema failed"),
    )?;
    Ok(problems)
}

/// `"public"."x", "s"."y"` as `public.x, s.y`.
fn tables_named(quoted: &[String]) -> String {
    quoted.join(", ").replace('"', "")
}
