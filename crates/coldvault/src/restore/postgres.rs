//! Restoring a PostgreSQL snapshot into a database: the schema's pre-data section (tables, types,
//! sequences), then every range's rows with `COPY … FROM STDIN` in parallel, then the post-data
//! section (indexes, constraints, triggers, built once over the loaded rows), then the sequences'
//! values. The target must not hold the snapshot's tables yet, unless `force` is given: then they
//! are dropped (with what depends on them) and replaced.

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{run_tasks, Ctx, RestoreOptions};
use crate::catalog::{Manifest, TaskEntry};
use crate::engine::protocol::WorkRequest;
use crate::engine::spark::SparkEngine;
use crate::error::{Error, Result};
use crate::job::{EngineKind, Job};
use crate::plan::TaskKind;
use crate::source::postgres::{connect, ident, qualified, where_of, PgTarget};
use crate::source::ReadStats;
use crate::store::Receipt;

pub(super) fn restore(
    ctx: &Ctx<'_>,
    job: &Job,
    manifest: &Manifest,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<(ReadStats, Vec<String>)> {
    let schema = manifest
        .postgres
        .as_ref()
        .ok_or_else(|| Error::integrity("the snapshot has no PostgreSQL schema"))?;
    let (url, password) = super::database_target(
        job,
        target,
        &["postgres://", "postgresql://"],
        "PostgreSQL",
        "postgres://user@host:port/database",
    )?;
    let t = PgTarget {
        url,
        password: &password,
    };
    let mut tables: Vec<&str> = manifest
        .tasks
        .iter()
        .filter_map(|task| match &task.kind {
            TaskKind::PgRange { table, .. } => Some(table.as_str()),
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
    let (stats, p) = match job.run.engine {
        EngineKind::Local => run_tasks(
            manifest,
            opts.parallel,
            |_| true,
            |task| load_range(ctx, &t, task),
        )?,
        EngineKind::Spark => load_on_spark(ctx, job, manifest, url)?,
    };
    problems.extend(p);
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

/// Loads one range's rows with `COPY … FROM STDIN`.
pub(crate) fn load_range(
    ctx: &Ctx<'_>,
    t: &PgTarget<'_>,
    task: &TaskEntry,
) -> Result<(ReadStats, Vec<String>)> {
    let TaskKind::PgRange { table, columns, .. } = &task.kind else {
        return Err(Error::integrity(
            "a non-table task in a PostgreSQL snapshot",
        ));
    };
    let column_list = if columns.is_empty() {
        String::new()
    } else {
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        format!(" ({})", cols.join(", "))
    };
    let (data, problems) = ctx.fetch(&task.data)?;
    let mut reader = BufReader::with_capacity(256 << 10, data.open()?);
    let mut client = connect(t)?;
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

/// Loads every range with the executors of a Spark cluster.
fn load_on_spark(
    ctx: &Ctx<'_>,
    job: &Job,
    manifest: &Manifest,
    url: &str,
) -> Result<(ReadStats, Vec<String>)> {
    let master = job.run.spark.master.as_deref().ok_or_else(|| {
        Error::config("the spark engine needs a master: [run.spark] master or --spark-master")
    })?;
    let requests: Vec<WorkRequest> = manifest
        .tasks
        .iter()
        .map(|entry| WorkRequest::RestorePgRange {
            job: job.clone(),
            target: url.to_owned(),
            entry: entry.clone(),
        })
        .collect();
    let replies = SparkEngine::new(job, master).run(&requests, ctx.staging.dir())?;
    let (stats, problems, _) = super::merge_restore_replies(replies, Error::source_err)?;
    Ok((stats, problems))
}

/// Runs one schema section with `psql` (pg_dump's output may hold psql meta-commands).
fn psql(ctx: &Ctx<'_>, t: &PgTarget<'_>, data: &Receipt, section: &str) -> Result<Vec<String>> {
    let (verified, problems) = ctx.fetch(data)?;
    let mut sql = Vec::new();
    std::io::copy(&mut verified.open()?, &mut sql).map_err(|e| {
        Error::integrity(format!("cannot decode the {section} schema")).with_source(e)
    })?;
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", t.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(pw) = crate::secrets::db_password(t.password, "PGPASSWORD")? {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::source_err("cannot run psql (is the PostgreSQL client installed?)").with_source(e)
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&sql)
            .map_err(|e| Error::source_err("cannot feed psql").with_source(e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::source_err("psql failed").with_source(e))?;
    if !out.status.success() {
        return Err(Error::source_err(format!(
            "creating the {section} schema in {} failed: {}",
            where_of(t.url),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(problems)
}

/// `"public"."x", "s"."y"` as `public.x, s.y`.
fn tables_named(quoted: &[String]) -> String {
    quoted.join(", ").replace('"', "")
}
