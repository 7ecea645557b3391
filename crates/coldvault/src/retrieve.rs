//! Retrieval: before a restore, the data files of a snapshot that can only be read from nodes in
//! an archive class (S3 Glacier Flexible Retrieval, Deep Archive) are asked back. The restore
//! then reads each as soon as it is readable ([`crate::fetch`] waits for a retrieval under way),
//! so it goes on with what is ready while the rest is still being retrieved.
//!
//! A data file with a readable replica anywhere — on a node without an archive class, or already
//! retrieved — is left alone: a restore prefers such a node. For the others, a retrieval is
//! requested on one archive node that holds it, unless one is already under way there, so a
//! restore stopped while waiting and run again asks for nothing twice. The state is the store's
//! (`HEAD`'s `x-amz-restore`), not ours: nothing is written to the repository.

use serde::Serialize;

use crate::catalog::Manifest;
use crate::error::Result;
use crate::repo::Repository;
use crate::store::{Readiness, Receipt, RetrievalAnswer, RetrievalTier, Target, ARCHIVE_CLASSES};
use crate::util::map_parallel;

/// How to retrieve, for the request before a restore and for the restore's workers, which
/// request a copy again when one expired (or a hot replica turned out bad) and wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Retrieval {
    /// Speed and price.
    pub tier: RetrievalTier,
    /// How long the retrieved copies stay readable.
    pub days: u32,
    /// How often to ask the store again about a retrieval under way, in milliseconds.
    pub poll_ms: u64,
}

impl Retrieval {
    /// How often to ask again.
    pub fn poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.poll_ms)
    }
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
    /// Why each unavailable data file is: what every node said of it.
    pub problems: Vec<String>,
}

/// Where one data file stands.
enum State<'a> {
    /// A replica can be read now.
    Readable,
    /// Only archive nodes hold it, and a retrieved copy can be read now.
    Retrieved,
    /// A retrieval is under way.
    Waiting,
    /// Only archived replicas: a retrieval must be requested on this node.
    Archived(&'a str),
    /// No replica found; what the nodes said.
    Unavailable(Vec<String>),
}

/// True when `node` writes its data files in a class that must be retrieved before reading.
pub fn is_archive(node: &dyn Target) -> bool {
    node.storage_class()
        .is_some_and(|c| ARCHIVE_CLASSES.contains(&c))
}

/// Requests the retrieval of the data files of `manifest` that only archive nodes hold, unless
/// one is readable or already under way; says where they stand.
pub fn retrieve(
    repo: &Repository,
    manifest: &Manifest,
    include: &[String],
    opts: &Retrieval,
    parallel: usize,
) -> Result<RetrievalReport> {
    let receipts = crate::source::kind_named(&manifest.source.kind)?.needed(manifest, include)?;
    let mut report = RetrievalReport {
        data_files: receipts.len() as u64,
        ..RetrievalReport::default()
    };
    if !repo.nodes().iter().any(|n| is_archive(n.as_ref())) {
        return Ok(report);
    }
    let states = map_parallel(&receipts, parallel, |r| state(repo, r));
    let mut to_request = Vec::new();
    for (r, s) in receipts.iter().zip(states) {
        match s? {
            State::Unavailable(said) => {
                report.unavailable += 1;
                report
                    .problems
                    .push(format!("{}: {}", r.key, said.join("; ")));
            }
            State::Readable => {}
            State::Retrieved => {
                report.archived += 1;
                report.ready += 1;
            }
            State::Waiting => {
                report.archived += 1;
                report.already_requested += 1;
            }
            State::Archived(node) => {
                report.archived += 1;
                to_request.push((*r, node));
            }
        }
    }
    let answers = map_parallel(&to_request, parallel, |(r, node)| {
        node_named(repo, node)?.request_retrieval(&r.key, opts.tier, opts.days)
    });
    for answer in answers {
        match answer? {
            RetrievalAnswer::Requested => report.requested += 1,
            RetrievalAnswer::AlreadyRequested => report.already_requested += 1,
            RetrievalAnswer::Ready => report.ready += 1,
        }
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
    let mut waiting = false;
    let mut retrieved = false;
    let mut said = Vec::new();
    for name in &data.nodes {
        let Some(node) = repo.replicator().node(name) else {
            continue;
        };
        if !is_archive(node.as_ref()) {
            match node.stat(&data.key) {
                Ok(Some(size)) if size == data.size => return Ok(State::Readable),
                Ok(Some(size)) => said.push(format!("{name}: {size} bytes")),
                Ok(None) => said.push(format!("{name}: missing")),
                Err(e) => said.push(format!("{name}: {e}")),
            }
            continue;
        }
        // Missing or unreachable here: another replica may do.
        let c = match node.object_class(&data.key) {
            Ok(Some(c)) => c,
            Ok(None) => {
                said.push(format!("{name}: missing"));
                continue;
            }
            Err(e) => {
                said.push(format!("{name}: {e}"));
                continue;
            }
        };
        match c.readiness {
            Readiness::Readable
                if c.class
                    .is_some_and(|c| ARCHIVE_CLASSES.contains(&c.as_str())) =>
            {
                retrieved = true
            }
            Readiness::Readable => return Ok(State::Readable),
            Readiness::Retrieving => waiting = true,
            Readiness::Archived => archived = archived.or(Some(name.as_str())),
        }
    }
    Ok(match archived {
        _ if retrieved => State::Retrieved,
        _ if waiting => State::Waiting,
        Some(node) => State::Archived(node),
        None => State::Unavailable(said),
    })
}
