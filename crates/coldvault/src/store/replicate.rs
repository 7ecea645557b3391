//! `Replicator`: places each data file on `replicas` of the job's nodes.
//!
//! Nodes are ranked per key by rendezvous hashing (highest BLAKE3 of node name and key first), so
//! the same key prefers the same nodes on every run and adding a node moves only its share.
//!
//! A copy already present counts as stored, and is not written again, when it passes the cheap
//! check: the same size, and no damage record for the key on its node ([`DamageBook`], one LIST of
//! `damaged/` per node per process). Its bytes are not read: hashing every copy a run finds
//! present would read back as much as the run would write. A copy recorded damaged is written
//! again first, even when enough good copies are elsewhere (older snapshots name it), over the
//! damaged one (a put is atomic and replaces), and its record is removed once that put succeeded.
//!
//! The top-ranked missing nodes are written concurrently; a node that fails (after its own
//! retries) is replaced by the next in rank, and is not tried again for the rest of the run (one
//! node that stays down costs its retries once, not once per data file). The answer is a
//! [`Receipt`] naming the nodes that hold the file, or an error naming every node that failed and
//! why.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{DamageBook, ObjectKey, Payload, SharedTarget};
use crate::error::{Error, Result, Status};

/// The storage layer's answer to a store request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Where the data file is, inside each node's job directory.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes, hex.
    pub checksum: String,
    /// The nodes that hold a checked copy, in preference order.
    pub nodes: Vec<String>,
}

/// Writes data files to `replicas` nodes.
#[derive(Debug, Clone)]
pub struct Replicator {
    nodes: Vec<SharedTarget>,
    replicas: usize,
    /// Nodes that kept failing earlier in this run, with the last cause: later data files go
    /// elsewhere at once instead of waiting through the same retries again.
    down: Arc<Mutex<Vec<(usize, String)>>>,
    /// The nodes' damage records, as far as listed in this process.
    damage: Arc<DamageBook>,
}

/// The failures of the nodes given up earlier in the run, as a put's failures.
fn gave_up_earlier(down: &[(usize, String)]) -> Vec<(usize, Error)> {
    down.iter()
        .map(|(i, cause)| {
            let e = Error::target(format!("gave up on this node earlier in this run: {cause}"))
                .with_status(Status::Persistent);
            (*i, e)
        })
        .collect()
}

/// Node indexes ranked for `key`, best first.
pub fn rendezvous_order(names: &[&str], key: &str) -> Vec<usize> {
    let mut scored: Vec<(blake3::Hash, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut h = blake3::Hasher::new();
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(key.as_bytes());
            (h.finalize(), i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
    scored.into_iter().map(|(_, i)| i).collect()
}

impl Replicator {
    /// A replicator over `nodes` (each already wrapped in its retry layer).
    pub fn new(nodes: Vec<SharedTarget>, replicas: usize) -> Self {
        Replicator {
            nodes,
            replicas,
            down: Arc::default(),
            damage: Arc::default(),
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SharedTarget] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&SharedTarget> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// The nodes' damage records known to this process.
    pub fn damage(&self) -> &DamageBook {
        &self.damage
    }

    /// The number of copies each data file needs.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Node indexes ranked for `key`.
    pub fn order(&self, key: &ObjectKey) -> Vec<usize> {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name()).collect();
        rendezvous_order(&names, key.as_str())
    }

    /// Stores `payload` (of `size` bytes, BLAKE3 `checksum`) under `key` on `replicas` nodes, and
    /// over every copy of it recorded damaged.
    pub fn put(
        &self,
        key: &ObjectKey,
        payload: Payload<'_>,
        size: u64,
        checksum: &str,
    ) -> Result<Receipt> {
        let order = self.order(key);
        let down: Vec<(usize, String)> = self.down.lock().map(|d| d.clone()).unwrap_or_default();
        let is_down = |i: usize| down.iter().any(|(d, _)| *d == i);
        let up: Vec<usize> = order.iter().copied().filter(|&i| !is_down(i)).collect();
        let (mut stored, mut suspect) = self.present(&up, key, size);
        let mut failures = gave_up_earlier(&down);
        let rest: Vec<usize> = up
            .iter()
            .copied()
            .filter(|i| !stored.contains(i) && !suspect.contains(i))
            .collect();
        let mut candidates = rest.into_iter();
        while stored.len() < self.replicas || !suspect.is_empty() {
            // Copies recorded damaged first, all of them; then as many as still needed.
            let need = self.replicas.saturating_sub(stored.len() + suspect.len());
            let batch: Vec<usize> = suspect
                .drain(..)
                .chain(candidates.by_ref().take(need))
                .collect();
            if batch.is_empty() {
                break;
            }
            let results = self.put_many(&batch, key, payload);
            for (i, r) in batch.into_iter().zip(results) {
                match r {
                    Ok(()) => stored.push(self.stored_on(i, key)),
                    Err(e) => {
                        self.give_up(i, &e);
                        failures.push((i, e))
                    }
                }
            }
        }
        if stored.len() >= self.replicas {
            stored.sort_by_key(|i| order.iter().position(|o| o == i));
            return Ok(Receipt {
                key: key.clone(),
                size,
                checksum: checksum.to_owned(),
                nodes: stored
                    .iter()
                    .map(|&i| self.nodes[i].name().to_owned())
                    .collect(),
            });
        }
        Err(self.shortfall(key, stored.len(), failures))
    }

    /// Of the nodes `up`: those holding a trusted copy of `key` of `size` bytes, and those to heal
    /// first — a copy of that size that is recorded damaged or could not be checked, or any
    /// recorded copy (one of the wrong size). Only a node holding a copy of the right size is
    /// listed for its records if this process has not listed it yet.
    fn present(&self, up: &[usize], key: &ObjectKey, size: u64) -> (Vec<usize>, Vec<usize>) {
        let mut trusted = Vec::new();
        let mut heal = Vec::new();
        for &i in up {
            let node = self.nodes[i].as_ref();
            if matches!(node.stat(key), Ok(Some(s)) if s == size) {
                if self.damage.trusted_on(node, key) {
                    trusted.push(i)
                } else {
                    heal.push(i)
                }
            } else if self.damage.recorded_on(node.name(), key) {
                heal.push(i);
            }
        }
        (trusted, heal)
    }

    /// Node `i` now holds a good copy of `key`: its damage record, if any, goes. A record left
    /// behind (the delete failed) costs the next run a task read, never data.
    fn stored_on(&self, i: usize, key: &ObjectKey) -> usize {
        let _ = self.damage.clear(self.nodes[i].as_ref(), key, false);
        i
    }

    /// Remembers node `i` as down for the rest of the run.
    fn give_up(&self, i: usize, e: &Error) {
        if let Ok(mut d) = self.down.lock() {
            if !d.iter().any(|(x, _)| *x == i) {
                d.push((i, e.to_string()));
            }
        }
    }

    fn put_many(&self, batch: &[usize], key: &ObjectKey, payload: Payload<'_>) -> Vec<Result<()>> {
        if batch.len() == 1 {
            return vec![self.nodes[batch[0]].put(key, payload)];
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&i| {
                    s.spawn(move || {
                        let r = self.nodes[i].put(key, payload);
                        if r.is_ok() {
                            crate::failpoint::hit("stored-some");
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::target("a store thread panicked")))
                })
                .collect()
        })
    }

    fn shortfall(&self, key: &ObjectKey, stored: usize, failures: Vec<(usize, Error)>) -> Error {
        let names: Vec<&str> = failures
            .iter()
            .map(|(i, _)| self.nodes[*i].name())
            .collect();
        let causes: Vec<String> = failures
            .iter()
            .map(|(i, e)| format!("node {}: {e}", self.nodes[*i].name()))
            .collect();
        let status = if failures
            .iter()
            .any(|(_, e)| e.status() != Status::Permanent)
        {
            Status::Persistent
        } else {
            Status::Permanent
        };
        Error::target(format!(
            "stored {stored} of {} copies of {key}; failed: {}",
            self.replicas,
            causes.join("; ")
        ))
        .with_status(status)
        .with_context("nodes", names.join(","))
    }
}
