//! `check`: everything a backup needs, without backing up — the source (reachable, readable,
//! the privileges and client programs it needs), every node (reachable, writable, the
//! repository marker, free space where the node can say), the staging directory (writable,
//! free space for the tasks that run at once) and the Spark master when the job names one. Each
//! check is one line that names what it checked and, when it fails, why.
//!
//! Nothing is stored: the one write on a node is a probe object under `check/`, deleted at
//! once (with the directory it made on a local node), and the one write in staging a probe
//! file removed at once, with the directories made for it.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::job::{EngineKind, Job};
use crate::plan::Plan;
use crate::repo::Repository;
use crate::store::{NodeUrl, ObjectKey, Payload, SharedTarget, CONFIG_KEY, SNAPSHOTS_PREFIX};

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// What was checked: `source`, `node NAME`, `staging`, `spark`.
    pub check: String,
    /// True when it is fit for a backup.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl CheckLine {
    pub(crate) fn new(check: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        CheckLine {
            check: check.into(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Every check of a job.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// True when every check passed.
    pub ok: bool,
    /// The checks, in order.
    pub checks: Vec<CheckLine>,
}

/// Checks `job` from end to end.
pub fn check(job: &Job) -> CheckReport {
    let source = crate::source::kind_of(job);
    let mut checks = source.preflight(job);
    let mut largest = None;
    match Plan::new(job) {
        Ok(plan) => {
            let big = plan
                .tasks
                .iter()
                .map(|t| t.estimated_bytes)
                .max()
                .unwrap_or(0);
            largest = Some(big);
            checks.push(CheckLine::new(
                "source",
                true,
                format!(
                    "{} reachable and readable: {} tasks, about {}, the largest {}",
                    job.source.location(),
                    plan.tasks.len(),
                    crate::util::human_bytes(plan.estimated_bytes()),
                    crate::util::human_bytes(big)
                ),
            ));
        }
        Err(e) => checks.push(CheckLine::new("source", false, e.to_string())),
    }
    match Repository::open(job) {
        Ok(repo) => {
            // As a backup does: in a repository no node knows yet, a local node's missing root is
            // made by the first backup; otherwise it is a disk that is not mounted.
            let new_repository = !repo
                .nodes()
                .iter()
                .any(|n| matches!(n.stat(&ObjectKey::new(CONFIG_KEY)), Ok(Some(_))));
            for (node, spec) in repo.nodes().iter().zip(&job.repository.nodes) {
                checks.push(match &spec.url {
                    NodeUrl::File { path } if new_repository && !path.exists() => {
                        check_new_root(node.name(), path)
                    }
                    url => check_node(node, url, &job.repository.directory),
                });
            }
        }
        Err(e) => checks.push(CheckLine::new("nodes", false, e.to_string())),
    }
    checks.push(check_staging(&job.run.staging, largest, job.run.parallel));
    if job.run.engine == EngineKind::Spark || job.run.spark.master.is_some() {
        checks.push(check_spark(job));
    }
    CheckReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn check_node(node: &SharedTarget, url: &NodeUrl, directory: &str) -> CheckLine {
    let name = format!("node {}", node.name());
    if let Err(e) = node.list(SNAPSHOTS_PREFIX) {
        return CheckLine::new(name, false, format!("unreachable: {e}"));
    }
    let marker = match node.stat(&ObjectKey::new(CONFIG_KEY)) {
        Ok(Some(_)) => "repository marker present".to_owned(),
        Ok(None) => "no repository yet (init or the first backup creates it)".to_owned(),
        Err(e) => return CheckLine::new(name, false, format!("cannot read the marker: {e}")),
    };
    let probe = ObjectKey::new(format!(
        "check/probe-{}-{}",
        std::process::id(),
        crate::util::now_rfc3339()
    ));
    let written = node
        .put(&probe, Payload::Bytes(b"coldvault check"))
        .and_then(|()| node.delete(&probe));
    if let NodeUrl::File { path } = url {
        // A local node's put made the directory the probe went in: take it away again.
        let _ = std::fs::remove_dir(path.join(directory).join("check"));
    }
    if let Err(e) = written {
        return CheckLine::new(name, false, format!("not writable: {e}"));
    }
    // A backup reads through the class requests of an archive-class node: check they work too.
    if node.storage_class().is_some() {
        if let Err(e) = node.object_class(&ObjectKey::new(CONFIG_KEY)) {
            return CheckLine::new(name, false, format!("cannot read storage classes: {e}"));
        }
    }
    let space = match url {
        NodeUrl::File { path } => match free_bytes(&path.join(directory)).or(free_bytes(path)) {
            Some(free) => format!("{} free", crate::util::human_bytes(free)),
            None => "free space unknown".to_owned(),
        },
        _ => "free space not reported by the store".to_owned(),
    };
    CheckLine::new(
        name,
        true,
        format!("reachable, writable, {marker}, {space}"),
    )
}

/// A local node's root that the first backup of a new repository will create: its nearest
/// existing ancestor must be a writable directory.
fn check_new_root(name: &str, root: &Path) -> CheckLine {
    let name = format!("node {name}");
    let Some(parent) = root.ancestors().skip(1).find(|p| p.exists()) else {
        return CheckLine::new(
            name,
            false,
            format!("{} has no existing parent", root.display()),
        );
    };
    let probe = parent.join(format!(".coldvault-check-{}", std::process::id()));
    match std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => CheckLine::new(
            name,
            true,
            format!(
                "{} does not exist yet: the first backup (or init) creates it in {}{}",
                root.display(),
                parent.display(),
                free_bytes(parent)
                    .map(|f| format!(", {} free", crate::util::human_bytes(f)))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => CheckLine::new(
            name,
            false,
            format!(
                "cannot create {}: {} is not writable: {e}",
                root.display(),
                parent.display()
            ),
        ),
    }
}

fn check_staging(dir: &Path, largest: Option<u64>, parallel: usize) -> CheckLine {
    let probe = dir.join(format!(".check-{}", std::process::id()));
    // What did not exist is taken away again: the nearest existing ancestor stays as it was.
    let made = dir
        .ancestors()
        .take_while(|a| !a.exists())
        .last()
        .map(Path::to_path_buf);
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"coldvault check"))
        .and_then(|()| std::fs::remove_file(&probe));
    let free = free_bytes(dir);
    if let Some(top) = made {
        let _ = std::fs::remove_dir_all(top);
    }
    if let Err(e) = written {
        return CheckLine::new(
            "staging",
            false,
            format!("{} is not writable: {e}", dir.display()),
        );
    }
    let Some(free) = free else {
        return CheckLine::new("staging", true, format!("{} writable", dir.display()));
    };
    let need = largest.unwrap_or(0).saturating_mul(parallel as u64);
    CheckLine::new(
        "staging",
        free >= need,
        format!(
            "{} writable, {} free; {parallel} tasks at once stage up to {}{}",
            dir.display(),
            crate::util::human_bytes(free),
            crate::util::human_bytes(need),
            if free >= need {
                ""
            } else {
                ": not enough room"
            }
        ),
    )
}

fn check_spark(job: &Job) -> CheckLine {
    let master = match job.run.spark.master() {
        Ok(m) => m,
        Err(e) => return CheckLine::new("spark", false, e.to_string()),
    };
    let submit = crate::engine::spark::submit_command(job);
    let runs = std::process::Command::new(&submit)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        return CheckLine::new(
            "spark",
            false,
            format!(
                "cannot run {} (set SPARK_HOME or [run.spark] submit)",
                submit.display()
            ),
        );
    }
    let Some(hostport) = master.strip_prefix("spark://") else {
        return CheckLine::new(
            "spark",
            true,
            format!(
                "{} runs; master {master} is not checked (not spark://)",
                submit.display()
            ),
        );
    };
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
        .map(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
    match reachable {
        Some(Ok(_)) => CheckLine::new(
            "spark",
            true,
            format!("{} runs; master {master} answers", submit.display()),
        ),
        Some(Err(e)) => CheckLine::new(
            "spark",
            false,
            format!("master {master} does not answer: {e}"),
        ),
        None => CheckLine::new("spark", false, format!("master {master}: unknown host")),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}
