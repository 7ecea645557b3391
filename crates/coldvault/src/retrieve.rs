//! Retrieval: before a restore, the data files of a snapshot that can only be read from nodes in
//! an archive class (S3 Glacier Flexible Retrieval, Deep Archive) are asked back, then waited for.
//!
//! A data file with a readable replica anywhere — on a node without an archive class, or already
//! retrieved — is left alone: a restore prefers such a node. For the others, a retrieval is
//! requested on one archive node that holds it, unless one is already under way there, so a
//! restore stopped while waiting and run again asks for nothing twice. The state is the store's
//! (`HEAD`'s `x-amz-restore`), not ours: nothing is written to the repository.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::Manifest;
use crate::error::Result;
use crate::repo::Repository;
use crate::store::{Readiness, Receipt, RetrievalAnswer, RetrievalTier, Target, ARCHIVE_CLASSES};
use crate::util::map_parallel;

/// How to retrieve.
#[derive(Debug, Clone)]
pub struct RetrievalOptions {
    /// Speed and price.
    pub tier: RetrievalTier,
    /// How long the retrieved copies stay readable.
    pub days: u32,
    /// Request and return, without waiting.
    pub only_request: bool,
    /// How often to ask the store again while waiting.
    pub poll: Duration,
    /// How many requests are in flight at once.
    pub parallel: usize,
}

/// Where a retrieval stands.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetrievalReport {
    /// Data files of the snapshot.
    pub data_files: u64,
    /// Of those, the ones only archive nodes hold (retrieved or not).
    pub archived: u64,
    /// Retrievals this run requested.
    pub requested: u64,
    /// Retrievals that were already under way (an earlier run's), not requested again.
    pub already_requested: u64,
    /// Archived data files readable now.
    pub ready: u64,
    /// Data files with no replica found on any node (the restore will name them).
    pub unavailable: u64,
    /// Seconds spent waiting.
    pub waited_seconds: u64,
}

/// Where one data file stands.
enum State<'a> {
    /// A replica can be read now.
    Readable,
    /// Only archive nodes hold it, and a retrieved copy can be read now.
    Retrieved,
    /// A retrieval is under way on this node.
    Waiting(&'a str),
    /// Only archived replicas: a retrieval must be requested on this node.
    Archived(&'a str),
    /// No replica found.
    Unavailable,
}

/// True when `node` writes its data files in a class that must be retrieved before reading.
pub fn is_archive(node: &dyn Target) -> bool {
    node.storage_class()
        .is_some_and(|c| ARCHIVE_CLASSES.contains(&c))
}

/// Requests the retrieval of the data files of `manifest` that only archive nodes hold, and
/// (unless `only_request`) waits until all are readable. `on_change` sees each new state.
pub fn retrieve(
    repo: &Repository,
    manifest: &Manifest,
    opts: &RetrievalOptions,
    on_change: &mut dyn FnMut(&RetrievalReport),
) -> Result<RetrievalReport> {
    let receipts = manifest.receipts();
    let mut report = RetrievalReport {
        data_files: receipts.len() as u64,
        ..RetrievalReport::default()
    };
    if !repo.nodes().iter().any(|n| is_archive(n.as_ref())) {
        return Ok(report);
    }
    let states = map_parallel(&receipts, opts.parallel, |r| state(repo, r));
    let mut waiting: Vec<(&Receipt, &str)> = Vec::new();
    let mut to_request = Vec::new();
    for (r, s) in receipts.iter().zip(states) {
        match s? {
            State::Readable => {}
            State::Retrieved => {
                report.archived += 1;
                report.ready += 1;
            }
            State::Unavailable => report.unavailable += 1,
            State::Waiting(node) => {
                report.archived += 1;
                report.already_requested += 1;
                waiting.push((r, node));
            }
            State::Archived(node) => {
                report.archived += 1;
                to_request.push((*r, node));
            }
        }
    }
    let answers = map_parallel(&to_request, opts.parallel, |(r, node)| {
        node_named(repo, node)?.request_retrieval(&r.key, opts.tier, opts.days)
    });
    for ((r, node), answer) in to_request.iter().zip(answers) {
        match answer? {
            RetrievalAnswer::Requested => report.requested += 1,
            RetrievalAnswer::AlreadyRequested => report.already_requested += 1,
            RetrievalAnswer::Ready => {
                report.ready += 1;
                continue;
            }
        }
        waiting.push((r, node));
    }
    on_change(&report);
    if opts.only_request {
        return Ok(report);
    }
    let started = Instant::now();
    while !waiting.is_empty() {
        std::thread::sleep(opts.poll);
        let now = map_parallel(&waiting, opts.parallel, |(r, node)| {
            let n = node_named(repo, node)?;
            let class = n.object_class(&r.key)?;
            // A copy that expired before it was read (or a retrieval the store dropped) is
            // asked for again.
            if let Some(c) = &class {
                if c.readiness == Readiness::Archived {
                    n.request_retrieval(&r.key, opts.tier, opts.days)?;
                }
            }
            Ok(class.is_some_and(|c| c.readiness == Readiness::Readable))
        });
        let mut still = Vec::new();
        for (w, ready) in waiting.into_iter().zip(now) {
            if ready? {
                report.ready += 1;
            } else {
                still.push(w);
            }
        }
        waiting = still;
        report.waited_seconds = started.elapsed().as_secs();
        on_change(&report);
    }
    Ok(report)
}

fn node_named<'a>(repo: &'a Repository, name: &str) -> Result<&'a crate::store::SharedTarget> {
    repo.replicator()
        .node(name)
        .ok_or_else(|| crate::Error::internal(format!("node {name} is not in the job")))
}

/// Where `data` stands: readable on a node without an archive class (or retrieved), waiting
/// for a retrieval, or archived everywhere it is.
fn state<'a>(repo: &Repository, data: &'a Receipt) -> Result<State<'a>> {
    let mut archived = None;
    let mut waiting = None;
    let mut retrieved = false;
    for name in &data.nodes {
        let Some(node) = repo.replicator().node(name) else {
            continue;
        };
        if !is_archive(node.as_ref()) {
            if matches!(node.stat(&data.key), Ok(Some(size)) if size == data.size) {
                return Ok(State::Readable);
            }
            continue;
        }
        // Missing or unreachable here: another replica may do.
        let Ok(Some(c)) = node.object_class(&data.key) else {
            continue;
        };
        match c.readiness {
            Readiness::Readable
                if c.class
                    .is_some_and(|c| ARCHIVE_CLASSES.contains(&c.as_str())) =>
            {
                retrieved = true
            }
            Readiness::Readable => return Ok(State::Readable),
            Readiness::Retrieving => waiting = waiting.or(Some(name.as_str())),
            Readiness::Archived => archived = archived.or(Some(name.as_str())),
        }
    }
    Ok(match (waiting, archived) {
        _ if retrieved => State::Retrieved,
        (Some(node), _) => State::Waiting(node),
        (None, Some(node)) => State::Archived(node),
        (None, None) => State::Unavailable,
    })
}
