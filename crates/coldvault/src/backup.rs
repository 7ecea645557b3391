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
use std::collections::BTreeMap;

use crate::catalog::TaskEntry;
use crate::lock::Lock;
use crate::plan::{Plan, TaskId, TaskKind, TaskSpec};
use crate::repo::Repository;
use crate::source::mysql::MyTarget;
use crate::source::mysql_snapshot as my_snapshot;
use crate::source::mysql_snapshot::MysqlSchema;
use crate::source::postgres::{self as pg, PgTarget};
use crate::source::postgres_schema as pg_schema;
use crate::source::sqlite::SnapshotGuard;
use crate::source::sqlite::SqliteSchema;
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
    let (repo, lock, warnings) = prepare(job, repo)?;
    let repo = &repo;
    // Plan first: a missing table or a `where` that does not parse fails before anything is stored.
    let mut plan = Plan::new(job)?;
    let staging = Staging::create(&job.run.staging, &job.name)?;
    let mut held = hold_source(job, &mut plan, parallel)?;
    let mut reuse = reuse(repo, &plan, &time);
    if let (Some(run), Some(c)) = (&reuse.resumed_run, held.consistency.as_mut()) {
        c.push_str(&format!(
            "; resumed: {} of {} tasks were read by the interrupted run of {run} under its own \
             snapshot, so the rows are consistent within each run's tasks, not across both",
            reuse.resumed,
            plan.tasks.len()
        ));
    }
    let all_tasks = std::mem::replace(&mut plan.tasks, std::mem::take(&mut reuse.todo));
    progress.start(plan.tasks.len() as u64, plan.estimated_bytes());
    // A PostgreSQL schema is dumped from the same snapshot while the data tasks run.
    let (reports, postgres) = std::thread::scope(|s| {
        let schema = held.pg_guard.as_ref().map(|g| {
            let (id, sequences) = (g.id().to_owned(), std::mem::take(&mut held.pg_sequences));
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
    let (sqlite, mysql, consistency) = held.release();
    let mut failed_tasks = Vec::new();
    for r in reports {
        match (r.entry, r.error) {
            (Some(e), _) => {
                reuse.entries.insert(e.id.clone(), e);
            }
            (None, error) => failed_tasks.push(FailedTask {
                task: r.task.id.to_string(),
                kind: r.task.kind.name().to_owned(),
                error: error.unwrap_or_else(|| "unknown failure".into()),
            }),
        }
    }
    let entries: Vec<_> = all_tasks
        .iter()
        .filter_map(|t| reuse.entries.remove(&t.id))
        .collect();
    let totals = Manifest::totals_of(&entries);
    let mut report = BackupReport {
        snapshot: None,
        tasks: all_tasks.len() as u64,
        reused_tasks: reuse.resumed as u64,
        resumed_run: reuse.resumed_run,
        unchanged_tasks: reuse.unchanged as u64,
        files: totals.read.files,
        rows: totals.read.rows,
        bytes_read: totals.read.bytes_read,
        bytes_stored: totals.bytes_stored,
        failed_tasks,
        manifest_nodes: Vec::new(),
        warnings,
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
    report
        .warnings
        .extend(failures.iter().map(|e| e.to_string()));
    Ok(report)
}

/// The repository of the nodes that answer, the job's backup lock, and warnings (nodes left
/// out, stale locks broken, temporaries of dead runs removed).
fn prepare(job: &Job, repo: &Repository) -> Result<(Repository, Lock, Vec<String>)> {
    let (repo, mut warnings) = repo.prepare_backup(job)?;
    let lock = Lock::backup(repo.nodes(), job.run.lock_wait)?;
    warnings.extend(lock.broken.iter().cloned());
    for node in repo.nodes() {
        match node.remove_temporaries() {
            Ok(0) => {}
            Ok(n) => warnings.push(format!(
                "removed {n} temporary objects an interrupted run left on node {}",
                node.name()
            )),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    Ok((repo, lock, warnings))
}

/// A database source held at one point in time while the tasks run, and its schema.
#[derive(Default)]
struct Held {
    sqlite: Option<SqliteSchema>,
    sqlite_guard: Option<SnapshotGuard>,
    pg_guard: Option<pg::SnapshotGuard>,
    pg_sequences: Vec<(String, i64)>,
    mysql: Option<MysqlSchema>,
    my_set: Option<my_snapshot::SnapshotSet>,
    consistency: Option<String>,
}

impl Held {
    /// Ends the snapshot; returns the schemas and the consistency statement.
    fn release(self) -> (Option<SqliteSchema>, Option<MysqlSchema>, Option<String>) {
        (self.sqlite, self.mysql, self.consistency)
    }
}

/// Opens the source's snapshot and marks the plan's tasks with it.
fn hold_source(job: &Job, plan: &mut Plan, parallel: usize) -> Result<Held> {
    let mut held = Held::default();
    match &job.source {
        Source::Sqlite { path, .. } => {
            let guard = SnapshotGuard::open(path)?;
            held.sqlite = Some(guard.schema(path)?);
            held.sqlite_guard = Some(guard);
        }
        Source::Postgres { .. } => {
            let mut guard = pg::SnapshotGuard::open(&pg_target(job)?)?;
            held.pg_sequences = guard.sequences()?;
            for t in &mut plan.tasks {
                t.snapshot = Some(guard.id().to_owned());
            }
            held.consistency = Some(format!(
                "every task read one exported snapshot ({})",
                guard.id()
            ));
            held.pg_guard = Some(guard);
        }
        Source::Mysql(db) => {
            let mut set = my_snapshot::SnapshotSet::open(&MyTarget::of(db), parallel)?;
            let mut tables: Vec<String> = Vec::new();
            for t in &mut plan.tasks {
                t.snapshot = Some(set.id().to_owned());
                if let TaskKind::MyRange { table, .. } = &t.kind {
                    if tables.last() != Some(table) {
                        tables.push(table.clone());
                    }
                }
            }
            let views = (!db.tables.is_empty()).then_some(&db.tables[..]);
            let schema = set.schema(&tables, views)?;
            held.consistency = Some(format!(
                "every task read one consistent snapshot; the global read lock was held {} ms",
                schema.lock_ms
            ));
            held.mysql = Some(schema);
            held.my_set = Some(set);
        }
        Source::Fs { .. } => {}
    }
    Ok(held)
}

/// What a run takes without reading: tasks unchanged since the parent snapshot, and tasks an
/// interrupted run stored. `todo` is the rest, marked with this run's start.
struct Reuse {
    todo: Vec<TaskSpec>,
    entries: BTreeMap<TaskId, TaskEntry>,
    resumed_run: Option<String>,
    unchanged: usize,
    resumed: usize,
}

fn reuse(repo: &Repository, plan: &Plan, time: &str) -> Reuse {
    // One listing of the manifests serves both: the parent is the newest snapshot, and only
    // receipts newer than it belong to an unfinished run.
    let parent = repo.list().snapshots.pop().map(|(m, _)| m);
    let receipts = repo.unfinished_run(parent.as_ref().map_or("", |m| m.time.as_str()));
    let parent = parent_tasks(repo, plan, parent);
    let mut r = Reuse {
        todo: Vec::with_capacity(plan.tasks.len()),
        entries: BTreeMap::new(),
        resumed_run: None,
        unchanged: 0,
        resumed: 0,
    };
    for t in &plan.tasks {
        if let Some(e) = parent.get(&t.id) {
            r.unchanged += 1;
            r.entries.insert(t.id.clone(), e.clone());
            continue;
        }
        match receipts.get(t.id.as_str()) {
            Some(rc) if rc.entry.kind == t.kind => {
                if r.resumed_run.as_ref().is_none_or(|s| &rc.run_started < s) {
                    r.resumed_run = Some(rc.run_started.clone());
                }
                r.resumed += 1;
                r.entries.insert(t.id.clone(), rc.entry.clone());
            }
            _ => r.todo.push(TaskSpec {
                run_started: Some(time.to_owned()),
                ..t.clone()
            }),
        }
    }
    r
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
    parent: Option<Manifest>,
) -> BTreeMap<TaskId, TaskEntry> {
    let mut out = BTreeMap::new();
    let Some(parent) = parent else {
        return out;
    };
    let wanted: BTreeMap<_, _> = plan.tasks.iter().map(|t| (&t.id, t)).collect();
    for e in parent.tasks {
        let Some(t) = wanted.get(&e.id) else { continue };
        if t.fingerprint.is_none() || e.fingerprint != t.fingerprint || e.kind != t.kind {
            continue;
        }
        if repo.holds(&e.data) {
            out.insert(e.id.clone(), e);
        }
    }
    out
}
