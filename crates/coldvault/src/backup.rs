//! `backup`: plan the job, run its tasks on the local engine, commit the snapshot.
//!
//! The snapshot is committed only when every task has a receipt; a run with any failed task
//! commits nothing and its report lists each failed task with its error. The staging directory is
//! removed at the end of the run, whatever happened.

use serde::Serialize;

use crate::catalog::{now_rfc3339, Manifest, SnapshotId, SourceInfo, FORMAT_VERSION};
use crate::engine::protocol::{WorkReply, WorkRequest};
use crate::engine::spark::SparkEngine;
use crate::engine::{local::map_parallel, Progress};
use crate::error::Result;
use crate::job::{EngineKind, Job, Source};
use crate::plan::Plan;
use crate::repo::Repository;
use crate::source::mysql::MyTarget;
use crate::source::mysql_snapshot as my_snapshot;
use crate::source::postgres::{self as pg, PgTarget};
use crate::source::postgres_schema as pg_schema;
use crate::source::sqlite::SnapshotGuard;
use crate::stage::Staging;
use crate::task::run_task;

/// A failed task.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTask {
    /// The task's id.
    pub task: String,
    /// The task's kind.
    pub kind: String,
    /// Why it failed.
    pub error: String,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The committed snapshot; `None` when a task failed.
    pub snapshot: Option<SnapshotId>,
    /// Tasks planned.
    pub tasks: u64,
    /// Regular files read.
    pub files: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of data files (one copy each).
    pub bytes_stored: u64,
    /// Tasks whose data an interrupted run had stored already, reused without reading them.
    pub reused_tasks: u64,
    /// File-tree tasks whose entries are unchanged since the parent snapshot (same size,
    /// modification and change time, inode): taken from it without reading a byte.
    pub unchanged_tasks: u64,
    /// When the interrupted run that this one resumed started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_run: Option<String>,
    /// The tasks that failed.
    pub failed_tasks: Vec<FailedTask>,
    /// Nodes holding the manifest.
    pub manifest_nodes: Vec<String>,
    /// Problems that did not stop the backup (a node that missed the manifest).
    pub warnings: Vec<String>,
    /// For a database: which point in time the snapshot holds and how it was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

/// Runs a backup of `job` with `parallel` tasks at once.
pub fn backup(job: &Job, parallel: usize, progress: &Progress) -> Result<BackupReport> {
    backup_to(job, &Repository::open(job)?, parallel, progress)
}

/// Runs a backup of `job` into `repo` (whose nodes may be wrapped, e.g. for fault injection).
pub fn backup_to(
    job: &Job,
    repo: &Repository,
    parallel: usize,
    progress: &Progress,
) -> Result<BackupReport> {
    let time = now_rfc3339();
    if matches!(job.source, Source::Mysql(_)) && matches!(job.run.engine, EngineKind::Spark) {
        return Err(crate::Error::config(
            "a MySQL / MariaDB backup runs on the local engine: its consistent snapshot lives in \
             connections of this process, which Spark executors cannot share",
        ));
    }
    let (repo, mut node_warnings) = repo.prepare_backup(job)?;
    let repo = &repo;
    let lock = crate::lock::Lock::backup(repo.nodes(), job.run.lock_wait)?;
    node_warnings.extend(lock.broken.iter().cloned());
    for node in repo.nodes() {
        match node.remove_temporaries() {
            Ok(0) => {}
            Ok(n) => node_warnings.push(format!(
                "removed {n} temporary objects an interrupted run left on node {}",
                node.name()
            )),
            Err(e) => node_warnings.push(e.to_string()),
        }
    }
    // Plan first: a missing table or a `where` that does not parse fails before anything is stored.
    let mut plan = Plan::new(job)?;
    let staging = Staging::create(&job.run.staging, &job.name)?;
    let mut sqlite = None;
    let mut pg_sequences = Vec::new();
    let mut sqlite_guard = None;
    let mut pg_guard = None;
    let (mut mysql, mut my_set, mut consistency) = (None, None, None);
    match &job.source {
        Source::Sqlite { path, .. } => {
            let guard = SnapshotGuard::open(path)?;
            sqlite = Some(guard.schema(path)?);
            sqlite_guard = Some(guard);
        }
        Source::Postgres { .. } => {
            let mut guard = pg::SnapshotGuard::open(&pg_target(job)?)?;
            pg_sequences = guard.sequences()?;
            for t in &mut plan.tasks {
                t.snapshot = Some(guard.id().to_owned());
            }
            consistency = Some(format!(
                "every task read one exported snapshot ({})",
                guard.id()
            ));
            pg_guard = Some(guard);
        }
        Source::Mysql(db) => {
            let mut set = my_snapshot::SnapshotSet::open(&MyTarget::of(db), parallel)?;
            let mut tables: Vec<String> = Vec::new();
            for t in &mut plan.tasks {
                t.snapshot = Some(set.id().to_owned());
                if let crate::plan::TaskKind::MyRange { table, .. } = &t.kind {
                    if tables.last() != Some(table) {
                        tables.push(table.clone());
                    }
                }
            }
            let views = (!db.tables.is_empty()).then_some(&db.tables[..]);
            let schema = set.schema(&tables, views)?;
            consistency = Some(format!(
                "every task read one consistent snapshot; the global read lock was held {} ms",
                schema.lock_ms
            ));
            mysql = Some(schema);
            my_set = Some(set);
        }
        Source::Fs { .. } => {}
    }
    // Tasks whose receipts an interrupted run left are not read or stored again.
    let receipts = repo.unfinished_run();
    // Tasks of a file tree whose entries have the same metadata as in the parent snapshot.
    let parent = parent_tasks(repo, &plan);
    let mut reused = std::collections::BTreeMap::new();
    let mut resumed_run: Option<String> = None;
    let mut unchanged_tasks = 0;
    let mut todo = Vec::with_capacity(plan.tasks.len());
    for t in &plan.tasks {
        if let Some(e) = parent.get(&t.id) {
            unchanged_tasks += 1;
            reused.insert(t.id.clone(), e.clone());
            continue;
        }
        match receipts.get(t.id.as_str()) {
            Some(r) if r.entry.kind == t.kind => {
                if resumed_run.as_ref().is_none_or(|s| &r.run_started < s) {
                    resumed_run = Some(r.run_started.clone());
                }
                reused.insert(t.id.clone(), r.entry.clone());
            }
            _ => todo.push(crate::plan::TaskSpec {
                run: Some(time.clone()),
                ..t.clone()
            }),
        }
    }
    if let (Some(run), Some(c)) = (&resumed_run, consistency.as_mut()) {
        c.push_str(&format!(
            "; resumed: {} of {} tasks were read by the interrupted run of {run} under its own \
             snapshot, so the rows are consistent within each run's tasks, not across both",
            reused.len(),
            plan.tasks.len()
        ));
    }
    let all_tasks = std::mem::replace(&mut plan.tasks, todo);
    progress.start(plan.tasks.len() as u64, plan.estimated_bytes());
    // A PostgreSQL schema is dumped from the same snapshot while the data tasks run.
    let (reports, postgres) = std::thread::scope(|s| {
        let schema = pg_guard.as_ref().map(|g| {
            let (id, sequences) = (g.id().to_owned(), std::mem::take(&mut pg_sequences));
            let staging = &staging;
            s.spawn(move || {
                let target = pg_target(job)?;
                pg_schema::capture(job, &target, &id, sequences, repo, staging)
            })
        });
        let reports = match job.run.engine {
            EngineKind::Local => Ok(map_parallel(&plan.tasks, parallel, |task| {
                run_task(job, repo, &staging, task, progress)
            })),
            EngineKind::Spark => run_on_spark(job, &plan, &staging, progress),
        };
        let schema = schema.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(crate::Error::source_err("the schema thread panicked")))
        });
        (reports, schema.transpose())
    });
    let reports = reports?;
    let postgres = postgres?;
    drop(staging);
    drop(sqlite_guard);
    drop(pg_guard);
    drop(my_set);
    let mut failed_tasks = Vec::new();
    for r in reports {
        match (r.entry, r.error) {
            (Some(e), _) => {
                reused.insert(e.id.clone(), e);
            }
            (None, error) => failed_tasks.push(FailedTask {
                task: r.task.id.to_string(),
                kind: r.task.kind.name().to_owned(),
                error: error.unwrap_or_else(|| "unknown failure".into()),
            }),
        }
    }
    let reused_tasks = (all_tasks.len() - plan.tasks.len() - unchanged_tasks) as u64;
    let entries: Vec<_> = all_tasks
        .iter()
        .filter_map(|t| reused.remove(&t.id))
        .collect();
    let totals = Manifest::totals_of(&entries);
    let mut report = BackupReport {
        snapshot: None,
        tasks: all_tasks.len() as u64,
        reused_tasks,
        resumed_run,
        unchanged_tasks: unchanged_tasks as u64,
        files: totals.read.files,
        rows: totals.read.rows,
        bytes_read: totals.read.bytes_read,
        bytes_stored: totals.bytes_stored,
        failed_tasks,
        manifest_nodes: Vec::new(),
        warnings: Vec::new(),
        consistency,
    };
    if !report.failed_tasks.is_empty() {
        return Ok(report);
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        id: SnapshotId::generate(&job.name, &time),
        job: job.name.clone(),
        time,
        source: source_info(job),
        replicas: job.repository.replicas,
        totals,
        tasks: entries,
        sqlite,
        postgres,
        mysql,
    };
    let (nodes, failures) = repo.commit(&manifest)?;
    crate::failpoint::hit("manifest");
    repo.clear_receipts();
    drop(lock);
    report.snapshot = Some(manifest.id);
    report.manifest_nodes = nodes;
    report.warnings = node_warnings;
    report
        .warnings
        .extend(failures.iter().map(|e| e.to_string()));
    Ok(report)
}

/// The PostgreSQL server of a `postgres` job.
fn pg_target(job: &Job) -> Result<PgTarget<'_>> {
    match &job.source {
        Source::Postgres(db) => Ok(PgTarget {
            url: &db.url,
            password: &db.password,
        }),
        _ => Err(crate::Error::config("not a PostgreSQL job")),
    }
}

/// Runs the plan's tasks on the Spark cluster named in the job.
fn run_on_spark(
    job: &Job,
    plan: &Plan,
    staging: &Staging,
    progress: &Progress,
) -> Result<Vec<crate::task::TaskReport>> {
    let master = job.run.spark.master.as_deref().ok_or_else(|| {
        crate::Error::config(
            "the spark engine needs a master: [run.spark] master or --spark-master",
        )
    })?;
    let requests: Vec<WorkRequest> = plan
        .tasks
        .iter()
        .map(|t| WorkRequest::Backup {
            job: job.clone(),
            task: t.clone(),
        })
        .collect();
    let replies = SparkEngine::new(job, master).run(&requests, staging.dir())?;
    replies
        .into_iter()
        .map(|r| match r {
            WorkReply::Backup { report } => {
                progress.task_done();
                Ok(report)
            }
            WorkReply::Restore { .. } => Err(crate::Error::integrity(
                "spark engine: a restore reply to a backup request",
            )),
        })
        .collect()
}

fn source_info(job: &Job) -> SourceInfo {
    let location = match &job.source {
        Source::Fs { path } | Source::Sqlite { path, .. } => path.display().to_string(),
        Source::Postgres(db) | Source::Mysql(db) => db.url.clone(),
    };
    SourceInfo {
        kind: job.source.type_name().to_owned(),
        location,
    }
}

/// The entries of the newest snapshot that `plan`'s tasks may take as they are: same task, same
/// metadata fingerprint, data file still on every node it names.
fn parent_tasks(
    repo: &Repository,
    plan: &Plan,
) -> std::collections::BTreeMap<crate::plan::TaskId, crate::catalog::TaskEntry> {
    let mut out = std::collections::BTreeMap::new();
    if plan.tasks.iter().all(|t| t.fingerprint.is_none()) {
        return out;
    }
    let Some((parent, _)) = repo.list().snapshots.pop() else {
        return out;
    };
    let wanted: std::collections::BTreeMap<_, _> = plan.tasks.iter().map(|t| (&t.id, t)).collect();
    for e in parent.tasks {
        let Some(t) = wanted.get(&e.id) else { continue };
        if t.fingerprint.is_none() || e.fingerprint != t.fingerprint || e.kind != t.kind {
            continue;
        }
        let present = e.data.nodes.iter().all(|n| {
            repo.replicator().node(n).is_some_and(
                |node| matches!(node.stat(&e.data.key), Ok(Some(s)) if s == e.data.size),
            )
        });
        if present {
            out.insert(e.id.clone(), e);
        }
    }
    out
}
