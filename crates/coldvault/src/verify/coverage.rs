//! What `verify` has read, and when, kept on the nodes themselves: each node holds one record,
//! `coverage.json` (in the bucket's default class, like every document), of the last time each of
//! its replicas was read whole and its checksum checked. Subset and time-boxed runs read the
//! replicas read longest ago first, so repeated runs go round the whole snapshot before reading
//! any part again, whichever machine runs them.
//!
//! The record is a self-checking document like a manifest. One that is damaged or unreadable is a
//! warning, and its node's replicas count as never read: a bad record can only make `verify`
//! read more, never skip a replica. Two `verify` runs at once may each write the record; the last
//! one wins and the other's reads are read again later.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::catalog::{checked, FORMAT_VERSION};
use crate::error::ErrorKind;
use crate::repo::Repository;
use crate::store::{read_small, ObjectKey, Payload, SharedTarget};

/// The record's key, in each node's job directory.
pub const COVERAGE_KEY: &str = "coverage.json";

/// One node's record: data file key → seconds since the epoch of its last full read.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    node: String,
    read: BTreeMap<String, u64>,
}

/// Every node's record, as read at the start of a run and added to as it reads.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    nodes: HashMap<String, Record>,
    /// Nodes whose record could not be read for a reason that may pass (unreachable): their
    /// record is not written over, so a passing outage does not wipe its history.
    keep: Vec<String>,
}

/// Reads older than this are dropped from a record when it is written: they no longer change
/// which replica is read first, and a record must not grow with the repository's whole past.
const FORGET_AFTER: u64 = 400 * 24 * 3600;

impl Coverage {
    /// The records of `nodes`; what could not be read is a warning.
    pub(crate) fn load(nodes: &[SharedTarget]) -> (Coverage, Vec<String>) {
        let mut coverage = Coverage::default();
        let mut warnings = Vec::new();
        for node in nodes {
            let record = match read_record(node) {
                Ok(r) => r,
                Err(e) if e.kind() != ErrorKind::Integrity => {
                    warnings.push(format!(
                        "the verify coverage record of node {} cannot be read ({e}); its \
                         replicas count as never read, and the record is left as it is",
                        node.name()
                    ));
                    coverage.keep.push(node.name().to_owned());
                    Record::default()
                }
                Err(e) => {
                    warnings.push(format!(
                        "the verify coverage record of node {} cannot be used ({e}); its replicas \
                         count as never read",
                        node.name()
                    ));
                    Record::default()
                }
            };
            coverage.nodes.insert(node.name().to_owned(), record);
        }
        (coverage, warnings)
    }

    /// When `node`'s replica of `key` was last read whole, in seconds since the epoch.
    pub(crate) fn last_read(&self, node: &str, key: &str) -> Option<u64> {
        self.nodes.get(node)?.read.get(key).copied()
    }

    /// Notes that `node`'s replica of `key` was read whole at `when`.
    pub(crate) fn note(&mut self, node: &str, key: &str, when: u64) {
        let record = self.nodes.entry(node.to_owned()).or_default();
        record.node = node.to_owned();
        record.read.insert(key.to_owned(), when);
    }

    /// Forgets that `node`'s replica of `key` was ever read (it was just found damaged).
    pub(crate) fn forget(&mut self, node: &str, key: &str) {
        if let Some(record) = self.nodes.get_mut(node) {
            record.read.remove(key);
        }
    }

    /// Writes the records of `touched` nodes back; what could not be written is a warning.
    pub(crate) fn save(&self, repo: &Repository, touched: &[String]) -> Vec<String> {
        let mut warnings = Vec::new();
        let now = now_secs();
        for name in touched.iter().filter(|n| !self.keep.contains(n)) {
            let (Some(node), Some(record)) = (repo.replicator().node(name), self.nodes.get(name))
            else {
                continue;
            };
            let record = Record {
                node: record.node.clone(),
                read: record
                    .read
                    .iter()
                    .filter(|(_, &t)| now.saturating_sub(t) < FORGET_AFTER)
                    .map(|(k, t)| (k.clone(), *t))
                    .collect(),
            };
            let record = &record;
            let written =
                crate::util::to_json(record, "the verify coverage record").and_then(|body| {
                    node.put(
                        &ObjectKey::new(COVERAGE_KEY),
                        Payload::Bytes(&checked::wrap(FORMAT_VERSION, &body)),
                    )
                });
            if let Err(e) = written {
                warnings.push(format!(
                    "cannot write the verify coverage record of node {name}, so the next run \
                     may read these replicas again: {e}"
                ));
            }
        }
        warnings
    }
}

fn read_record(node: &SharedTarget) -> crate::Result<Record> {
    let bytes = match read_small(node.as_ref(), &ObjectKey::new(COVERAGE_KEY)) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Record::default()),
        Err(e) => return Err(e),
    };
    let opened = checked::open(&bytes, "the verify coverage record", FORMAT_VERSION)?;
    let record: Record = serde_json::from_slice(opened.body).map_err(|e| {
        crate::Error::integrity("the verify coverage record is malformed").with_source(e)
    })?;
    if record.node != node.name() {
        return Err(crate::Error::integrity(format!(
            "the verify coverage record is node {:?}'s",
            record.node
        )));
    }
    Ok(record)
}

/// Now, in seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
