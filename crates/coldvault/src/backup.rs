//! `backup`: plan the job, hold its source at one point in time, run its tasks on the job's
//! engine, commit the snapshot.
//!
//! The snapshot is committed only when every task has a receipt; a run with any failed task
//! commits nothing and its report lists each failed task with its error. The staging directory is
//! removed at the end of the run, whatever happened.
//!
//! Recorded damage is healed from the source: the run lists `damaged/` on every node once, at its
//! start ([`crate::store::DamageBook`]); a task of the parent snapshot or of an interrupted run
//! whose data file is recorded damaged on any node is not taken as it is but read again, and the
//! replicator writes its bytes over the damaged copies (see [`crate::store::Replicator`]).

use std::borrow::Cow;

use serde::Serialize;

use std::collections::BTreeMap;

use crate::catalog::{Manifest, SnapshotId, SourceInfo, TaskEntry, Warning, FORMAT_VERSION};
use crate::engine::Engine;
use crate::error::Result;
use crate::fetch::Fetcher;
use crate::job::Job;
use crate::lock::Lock;
use crate::plan::{Plan, TaskId, TaskSpec};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::stage::Staging;
use crate::util::now_rfc3339;
use crate::worker::{WorkRequest, Worker};

/// A failed task.
#[derive(Debug, Serialize)]
pub struct FailedTask {
    /// The task's id.
    pub task: String,
    /// The task's kind.
    pub kind: String,
    /// Why it failed, in words.
    pub error: String,
    /// Why it failed, as data: the error's kind, status and context (node, key, path).
    pub cause: crate::Error,
}

/// What a backup did.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    /// The committed snapshot; `None` when a task failed.
    pub snapshot: Option<SnapshotId>,
    /// When the run started (RFC 3339): the time of its snapshot.
    pub time: String,
    /// Tasks planned.
    pub tasks: u64,
    /// Regular files read.
    pub files: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes this run read from the source (tasks taken unchanged from the parent read none).
    pub bytes_read: u64,
    /// Bytes of the snapshot's data files (one copy each), shared with earlier snapshots or not.
    pub bytes_stored: u64,
    /// Bytes of the data files this run's tasks stored (one copy each): what the snapshot adds,
    /// unless a data file with the same bytes was there already.
    pub bytes_added: u64,
    /// File-tree ranges stored as their changes since the parent (a delta) rather than whole.
    pub delta_tasks: u64,
    /// Tasks whose data an interrupted run had stored already, reused without reading them.
    pub reused_tasks: u64,
    /// File-tree tasks whose entries are unchanged since the parent snapshot (same size,
    /// modification and change time, inode): taken from it without reading a byte.
    pub unchanged_tasks: u64,
    /// Unchanged tasks of the parent snapshot read again all the same, because their data file is
    /// recorded damaged on a node: their good bytes are written over the damaged copies.
    pub damaged_tasks: u64,
    /// When the interrupted run that this one resumed started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_run: Option<String>,
    /// The tasks that failed.
    pub failed_tasks: Vec<FailedTask>,
    /// Nodes holding the manifest.
    pub manifest_nodes: Vec<String>,
    /// What the backup left out or found changing (`path`, `problem`, `detail`), and problems
    /// that did not stop it (a node that missed the manifest: problem `repository`, no path).
    pub warnings: Vec<Warning>,
    /// Entries the snapshot should hold but does not (unreadable, or kept changing): the
    /// snapshot is saved and marked incomplete, and the command exits 3.
    pub left_out: u64,
    /// What the plan's selection left out, for people (a node's directory inside the tree).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// For a database: which point in time the snapshot holds and how it was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// What went to each node that took part.
    pub nodes: Vec<NodeRun>,
}

/// What one node took in a backup.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRun {
    /// The node.
    pub node: String,
    /// Bytes of the data files this run's tasks placed on it (a copy already there counts).
    pub bytes_written: u64,
    /// Requests sent to it again after a temporary failure, in this process (the local
    /// engine's; a Spark executor's retries are its own).
    pub retries: u64,
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
    let source = crate::source::kind_of(job);
    let engine = Engine::for_job(job, parallel)?;
    if let Some(why) = source.local_only() {
        engine.require_local(why)?;
    }
    let (repo, lock, warnings) = prepare(job, repo)?;
    let repo = &repo;
    // The key before any task: a key that cannot be had stops the run here, once, not per task.
    repo.crypt()?;
    // One listing of the manifests: the parent (the newest snapshot), whose ranges the plan
    // keeps, and the bound on the run receipts that may be reused.
    let listing = repo.list();
    let parent = listing.snapshots.last().map(|(m, _)| m);
    // Plan first: a missing table or a `where` that does not parse fails before anything is stored.
    let mut plan = Plan::after(job, parent)?;
    let staging = Staging::create(&job.run.staging, &job.name)?;
    let kinds: Vec<&crate::plan::TaskKind> = plan.tasks.iter().map(|t| &t.kind).collect();
    let reader = source.open_run(job, &kinds, parallel)?;
    if let Some(id) = reader.snapshot() {
        for t in &mut plan.tasks {
            t.snapshot = Some(id.to_owned());
        }
    }
    let mut consistency = reader.consistency();
    let mut reuse = reuse(repo, job, &plan, &time, listing);
    let mut warnings: Vec<Warning> = warnings.into_iter().map(Warning::repository).collect();
    warnings.extend(reuse.warning.take().map(Warning::repository));
    if let (Some(run), Some(c)) = (&reuse.resumed_run, consistency.as_mut()) {
        c.push_str(&format!(
            "; resumed: {} of {} tasks were read by the interrupted run of {run} under its own \
             snapshot, so the rows are consistent within each run's tasks, not across both",
            reuse.resumed,
            plan.tasks.len()
        ));
    }
    let all_tasks = std::mem::replace(&mut plan.tasks, std::mem::take(&mut reuse.todo));
    crate::failpoint::hit("planned");
    progress.start(plan.tasks.len() as u64, plan.estimated_bytes());
    let worker = Worker {
        job,
        fetch: Fetcher {
            repo,
            staging: &staging,
            progress,
            retrieval: None,
        },
        reader: Some(reader.as_ref()),
        sessions: &crate::source::Sessions::default(),
    };
    let run = |tasks: &[TaskSpec]| -> Result<Vec<crate::worker::WorkReply>> {
        let requests: Vec<WorkRequest> = tasks
            .iter()
            .map(|t| WorkRequest::Backup {
                job: Cow::Borrowed(job),
                task: t.clone(),
            })
            .collect();
        let replies = engine.run(&requests, staging.dir(), |r| r.run(&worker))?;
        if let Engine::Spark(_) = engine {
            // Executors count in their own processes; here each reply is a task done.
            replies.iter().for_each(|_| progress.task_done());
        }
        Ok(replies)
    };
    // Work beside the tasks (a PostgreSQL schema dump) runs under the same point in time.
    let (replies, beside) = std::thread::scope(|s| {
        let beside = s.spawn(|| reader.beside_tasks(repo, &staging));
        let replies = run(&plan.tasks);
        let beside = beside.join().unwrap_or_else(|_| {
            Err(crate::Error::internal(
                "the thread beside the tasks panicked",
            ))
        });
        (replies, beside)
    });
    let mut failed_tasks = Vec::new();
    let mut counts = RunCounts::default();
    collect(replies?, &mut reuse.entries, &mut failed_tasks, &mut counts)?;
    beside?;
    // Tasks whose entries disagree (parts of one file read from different versions) are read
    // again, a bounded number of rounds; what still disagrees is marked left out by the source.
    for round in 0..=REREAD_ROUNDS {
        let mut mine: Vec<&mut TaskEntry> = reuse.entries.values_mut().collect();
        let again = source.recheck(&mut mine, round == REREAD_ROUNDS);
        if again.is_empty() || !failed_tasks.is_empty() {
            break;
        }
        let tasks: Vec<TaskSpec> = all_tasks
            .iter()
            .filter(|t| again.contains(&t.id))
            .map(|t| TaskSpec {
                run_started: Some(time.clone()),
                ..t.clone()
            })
            .collect();
        collect(
            run(&tasks)?,
            &mut reuse.entries,
            &mut failed_tasks,
            &mut counts,
        )?;
    }
    drop(staging);
    let record = reader.finish()?;
    let entries: Vec<_> = all_tasks
        .iter()
        .filter_map(|t| reuse.entries.remove(&t.id))
        .collect();
    let totals = Manifest::totals_of(&entries);
    warnings.extend(
        crate::catalog::once_each(entries.iter().flat_map(|e| &e.warnings))
            .into_iter()
            .cloned(),
    );
    let mut report = BackupReport {
        snapshot: None,
        time: time.clone(),
        tasks: all_tasks.len() as u64,
        reused_tasks: reuse.resumed as u64,
        resumed_run: reuse.resumed_run,
        unchanged_tasks: reuse.unchanged as u64,
        damaged_tasks: reuse.damaged as u64,
        files: totals.read.files,
        rows: totals.read.rows,
        bytes_read: counts.read,
        bytes_stored: totals.bytes_stored,
        bytes_added: counts.added,
        delta_tasks: counts.deltas,
        failed_tasks,
        manifest_nodes: Vec::new(),
        left_out: warnings.iter().filter(|w| w.problem.left_out()).count() as u64,
        warnings,
        notes: std::mem::take(&mut plan.notes),
        consistency,
        nodes: repo
            .nodes()
            .iter()
            .map(|n| NodeRun {
                node: n.name().to_owned(),
                bytes_written: counts.written.get(n.name()).copied().unwrap_or(0),
                retries: n.retries(),
            })
            .collect(),
    };
    if !report.failed_tasks.is_empty() {
        return Ok(report);
    }
    let mut manifest = Manifest {
        format: FORMAT_VERSION,
        id: SnapshotId::generate(&job.name, &time),
        job: job.name.clone(),
        time,
        source: SourceInfo {
            kind: source.name().to_owned(),
            location: job.source.location(),
        },
        replicas: job.repository.replicas,
        totals,
        tasks: entries,
        sqlite: None,
        postgres: None,
        mysql: None,
    };
    if let Some(schema) = record.schema {
        manifest.set_schema(schema);
    }
    let (nodes, failures) = repo.commit(&manifest)?;
    crate::failpoint::hit("manifest");
    repo.clear_receipts();
    drop(lock);
    report.snapshot = Some(manifest.id);
    report.manifest_nodes = nodes;
    report
        .warnings
        .extend(failures.iter().map(|e| Warning::repository(e.to_string())));
    Ok(report)
}

/// How often tasks whose entries disagree are read again before the source gives up on them.
const REREAD_ROUNDS: usize = 2;

/// What the tasks a run ran did, added up.
#[derive(Default)]
struct RunCounts {
    /// Bytes their data files placed on each node.
    written: BTreeMap<String, u64>,
    /// Bytes read from the source.
    read: u64,
    /// Bytes of the data files they stored (one copy each).
    added: u64,
    /// Ranges stored as a delta.
    deltas: u64,
}

/// Files the replies' entries under their tasks, their failures in `failed`, and what they did
/// in `counts`.
fn collect(
    replies: Vec<crate::worker::WorkReply>,
    entries: &mut BTreeMap<TaskId, TaskEntry>,
    failed: &mut Vec<FailedTask>,
    counts: &mut RunCounts,
) -> Result<()> {
    for reply in replies {
        let r = reply.into_task_report()?;
        counts.read += r.bytes_read;
        for d in &r.stored {
            counts.added += d.size;
            for node in &d.nodes {
                *counts.written.entry(node.clone()).or_default() += d.size;
            }
        }
        match (r.entry, r.error) {
            (Some(e), _) => {
                counts.deltas += u64::from(!r.stored.is_empty() && !e.deltas.is_empty());
                entries.insert(e.id.clone(), e);
            }
            (None, error) => {
                let cause = error.unwrap_or_else(|| {
                    crate::Error::internal("a task report with neither a receipt nor an error")
                });
                failed.push(FailedTask {
                    task: r.task.id.to_string(),
                    kind: r.task.kind.name().to_owned(),
                    error: cause.to_string(),
                    cause,
                })
            }
        }
    }
    Ok(())
}

/// The repository of the nodes that answer, the job's backup lock, and warnings (nodes left
/// out, stale locks broken, temporaries of dead runs removed).
fn prepare(job: &Job, repo: &Repository) -> Result<(Repository, Lock, Vec<String>)> {
    let (repo, mut warnings) = repo.prepare_backup(job)?;
    let lock = Lock::backup(repo.nodes(), job.run.lock_wait)?;
    // The repository marker under the lock: of two first backups racing, the one holding the
    // lock creates the repository's id and the other, after it, finds it. The lock protocol needs
    // only read-after-write, so this holds on S3 stores without conditional writes (Garage 2.5
    // ignores `If-None-Match`), where create-if-absent alone would race.
    repo.ensure_marker(false)?;
    warnings.extend(lock.broken.iter().cloned());
    // One LIST of `damaged/` per node: what this run must not reuse or trust as stored.
    for e in repo.replicator().damage().load(repo.nodes()) {
        warnings.push(format!(
            "cannot list the damage records ({e}): data files recorded damaged there may be taken \
             as unchanged by this run, and copies there are written again rather than trusted"
        ));
    }
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

/// What a run takes without reading: tasks unchanged since the parent snapshot, and tasks an
/// interrupted run stored. `todo` is the rest, marked with this run's start.
struct Reuse {
    todo: Vec<TaskSpec>,
    entries: BTreeMap<TaskId, TaskEntry>,
    resumed_run: Option<String>,
    unchanged: usize,
    /// Tasks of the parent read again because their data file is recorded damaged.
    damaged: usize,
    resumed: usize,
    /// Why nothing could be taken from earlier snapshots, when they could not be read.
    warning: Option<String>,
}

fn reuse(
    repo: &Repository,
    job: &Job,
    plan: &Plan,
    time: &str,
    mut listing: crate::repo::Listing,
) -> Reuse {
    // Only receipts newer than the parent belong to an unfinished run.
    let warning = (!listing.unreadable.is_empty()).then(|| {
        format!(
            "{} earlier snapshot manifest(s) could not be read ({}): no task is taken from them, \
             so every task they could have provided is read again",
            listing.unreadable.len(),
            listing
                .warnings
                .first()
                .map_or_else(|| "no cause given".to_owned(), |e| e.to_string())
        )
    });
    let parent = listing.snapshots.pop().map(|(m, _)| m);
    let receipts = repo.unfinished_run(parent.as_ref().map_or("", |m| m.time.as_str()));
    let (parent, damaged, mut ranges) = parent_tasks(repo, job, plan, parent);
    let mut r = Reuse {
        todo: Vec::with_capacity(plan.tasks.len()),
        entries: BTreeMap::new(),
        resumed_run: None,
        unchanged: 0,
        damaged,
        resumed: 0,
        warning,
    };
    // Only a receipt of the same entries: a task whose metadata moved is read again.
    let stored = |t: &TaskSpec| {
        receipts
            .get(t.id.as_str())
            .filter(|rc| rc.entry.kind == t.kind && rc.entry.fingerprint == t.fingerprint)
    };
    // A group read together is taken only when one run stored every task of it.
    let mut groups: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for t in &plan.tasks {
        if let Some(g) = t.kind.read_together() {
            let run = stored(t).map(|rc| rc.run_started.as_str());
            let seen = groups.entry(g).or_insert(run);
            if *seen != run {
                *seen = None;
            }
        }
    }
    for t in &plan.tasks {
        if let Some(e) = parent.get(&t.id) {
            r.unchanged += 1;
            r.entries.insert(t.id.clone(), e.clone());
            continue;
        }
        let whole = t.kind.read_together().is_none_or(|g| groups[g].is_some());
        match stored(t) {
            Some(rc) if whole => {
                if r.resumed_run.as_ref().is_none_or(|s| &rc.run_started < s) {
                    r.resumed_run = Some(rc.run_started.clone());
                }
                r.resumed += 1;
                r.entries.insert(t.id.clone(), rc.entry.clone());
            }
            _ => r.todo.push(TaskSpec {
                run_started: Some(time.to_owned()),
                parent: range_of(&t.kind)
                    .and_then(|k| ranges.remove(&k))
                    .map(Box::new),
                ..t.clone()
            }),
        }
    }
    r
}

/// A file-tree range's boundaries, by which a range is known from one plan to the next (its
/// split files may change).
type RangeKey = (Option<crate::path::RelPath>, Option<crate::path::RelPath>);

fn range_of(kind: &crate::plan::TaskKind) -> Option<RangeKey> {
    match kind {
        crate::plan::TaskKind::Files(f) => Some((f.start.clone(), f.end.clone())),
        _ => None,
    }
}

/// Whether the parent's entry `e` for a range may take one more delta: it has an index, fewer
/// than `max_deltas` deltas, and files gone or replaced in its chain ([`TaskEntry::dead_bytes`])
/// adding up to no more than `rewrite_percent` of the range. Otherwise the range is read whole.
pub(crate) fn extendable(job: &Job, e: &TaskEntry) -> bool {
    e.index.is_some()
        && (e.deltas.len() as u64) < job.split.max_deltas
        && u128::from(e.dead_bytes) * 100
            <= u128::from(e.stats.bytes_read) * u128::from(job.split.rewrite_percent)
}

/// The entries of the newest snapshot that `plan`'s tasks may take as they are: same task, same
/// metadata fingerprint, data files still on every node they name and recorded damaged on none;
/// how many were left out only for recorded damage; and, by range, the parent's entries that a
/// changed range may extend with a delta ([`extendable`], every data file held).
fn parent_tasks(
    repo: &Repository,
    job: &Job,
    plan: &Plan,
    parent: Option<Manifest>,
) -> (
    BTreeMap<TaskId, TaskEntry>,
    usize,
    BTreeMap<RangeKey, TaskEntry>,
) {
    let mut out = BTreeMap::new();
    let mut ranges = BTreeMap::new();
    let mut damaged = 0;
    let Some(parent) = parent else {
        return (out, damaged, ranges);
    };
    let wanted: BTreeMap<_, _> = plan.tasks.iter().map(|t| (&t.id, t)).collect();
    let planned_ranges: std::collections::BTreeSet<RangeKey> = plan
        .tasks
        .iter()
        .filter_map(|t| range_of(&t.kind))
        .collect();
    let damage = repo.replicator().damage();
    for e in parent.tasks {
        let is_damaged = e
            .receipts()
            .iter()
            .any(|r| damage.recorded_anywhere(&r.key));
        let unchanged = wanted.get(&e.id).is_some_and(|t| {
            // An entry with warnings (a file left out or stored as changing) is read again.
            t.fingerprint.is_some()
                && e.fingerprint == t.fingerprint
                && e.kind == t.kind
                && e.warnings.is_empty()
        });
        if unchanged && is_damaged {
            damaged += 1;
        } else if unchanged && repo.holds_entry(&e) {
            out.insert(e.id.clone(), e);
        } else if let Some(key) = range_of(&e.kind).filter(|k| planned_ranges.contains(k)) {
            if !is_damaged && extendable(job, &e) && repo.holds_entry(&e) {
                ranges.insert(key, e);
            }
        }
    }
    (out, damaged, ranges)
}
