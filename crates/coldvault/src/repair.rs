//! `repair`: brings every data file of a snapshot back to `replicas` good copies.
//!
//! Every listed replica is read and checked. A missing or damaged one is replaced from a healthy
//! replica (copied through staging, checked on the way): in place when its node takes it, else on
//! the next node in rendezvous order. The manifest then lists the nodes that really hold each file
//! and is written again to every node.
//!
//! Damage records ([`crate::store::DamageRecord`]): a damaged replica replaced in place has its
//! record removed (after the new copy is checked); one that stays damaged (no healthy replica,
//! a put that failed, or enough copies elsewhere) is recorded, so that the next backup heals it
//! from the source. Repair never deletes a copy.

use serde::Serialize;

use crate::catalog::Manifest;
use crate::error::Result;
use crate::repo::Repository;
use crate::stage::Staging;
use crate::store::{FoundBy, Payload, Receipt};
use crate::util::map_parallel;
use crate::verify::{inspect_replica, record_damage, Problem};

/// One copy made.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// The object.
    pub file: String,
    /// The healthy node it came from.
    pub from: String,
    /// The node it went to.
    pub to: String,
}

/// What `repair` did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The snapshot.
    pub snapshot: String,
    /// Copies made.
    pub copied: Vec<Copied>,
    /// Whether the manifest was written again (to every node: over missing, damaged and outvoted
    /// copies too).
    pub manifest_rewritten: bool,
    /// Nodes whose repository marker was missing or damaged and was written again.
    pub markers_rewritten: Vec<String>,
    /// Nodes whose copy of the repository key (passphrase mode) was missing or damaged and was
    /// written again.
    pub key_copies_rewritten: Vec<String>,
    /// What could not be repaired.
    pub unrepairable: Vec<String>,
    /// Damage records that could not be written or removed.
    pub warnings: Vec<String>,
}

struct Outcome {
    data: Receipt,
    copied: Vec<Copied>,
    unrepairable: Option<String>,
    warnings: Vec<String>,
}

/// Repairs `manifest`, whose manifest file is on `manifest_nodes`.
pub fn repair(
    repo: &Repository,
    mut manifest: Manifest,
    manifest_nodes: &[String],
    staging: &Staging,
    parallel: usize,
) -> Result<RepairReport> {
    let replicas = manifest.replicas;
    // Every data file of every task: a range's deltas, deleted and touched lists and index too.
    let receipts: Vec<&Receipt> = manifest.tasks.iter().flat_map(|t| t.receipts()).collect();
    let outcomes = map_parallel(&receipts, parallel, |data| {
        repair_one(repo, data, replicas, staging)
    });
    let mut report = RepairReport {
        snapshot: manifest.id.to_string(),
        copied: Vec::new(),
        manifest_rewritten: false,
        markers_rewritten: Vec::new(),
        key_copies_rewritten: Vec::new(),
        unrepairable: Vec::new(),
        warnings: Vec::new(),
    };
    let mut changed = false;
    let slots = manifest.tasks.iter_mut().flat_map(|t| t.receipts_mut());
    for (slot, o) in slots.zip(outcomes) {
        changed |= slot.nodes != o.data.nodes;
        *slot = o.data;
        report.copied.extend(o.copied);
        report.unrepairable.extend(o.unrepairable);
        report.warnings.extend(o.warnings);
    }
    report.markers_rewritten = repo.repair_markers()?;
    if let Some(crypt) = repo.crypt()? {
        for (name, _, _) in crate::crypt::key_copy_problems(&crypt, repo.nodes()) {
            let node = repo.replicator().node(&name);
            if node.is_some_and(|n| crate::crypt::rewrite_key_copy(&crypt, n).is_ok()) {
                report.key_copies_rewritten.push(name);
            }
        }
    }
    // Nodes whose copy of the manifest is missing, damaged or outvoted get the elected one.
    let everywhere = repo
        .nodes()
        .iter()
        .all(|n| manifest_nodes.iter().any(|m| m == n.name()));
    if changed || !everywhere {
        repo.commit(&manifest)?;
        report.manifest_rewritten = true;
    }
    Ok(report)
}

fn repair_one(repo: &Repository, data: &Receipt, replicas: usize, staging: &Staging) -> Outcome {
    let mut good: Vec<String> = Vec::new();
    let mut found: Vec<Problem> = Vec::new();
    for n in &data.nodes {
        match inspect_replica(repo, n, data, true).problem {
            None => good.push(n.clone()),
            Some(p) => found.push(p),
        }
    }
    let bad: Vec<String> = found.iter().map(|p| p.node.clone()).collect();
    let mut out = copy_from_healthy(repo, data, replicas, staging, good, &bad);
    out.warnings = settle_records(repo, data, &found, &out.copied);
    out
}

/// Removes the records of the damaged replicas that were replaced, and records those that were
/// not; returns what could not be done.
fn settle_records(
    repo: &Repository,
    data: &Receipt,
    found: &[Problem],
    copied: &[Copied],
) -> Vec<String> {
    let mut warnings = Vec::new();
    for p in found.iter().filter(|p| p.is_damage()) {
        let result = if copied.iter().any(|c| c.to == p.node) {
            repo.replicator().node(&p.node).map_or(Ok(()), |n| {
                repo.replicator()
                    .damage()
                    .clear(n.as_ref(), &data.key, true)
            })
        } else {
            record_damage(repo, data, p, FoundBy::Repair)
        };
        if let Err(e) = result {
            warnings.push(format!(
                "damage record of {} on node {}: {e}",
                data.key, p.node
            ));
        }
    }
    warnings
}

/// Copies a healthy replica (one of `good`) to the `bad` nodes first, then to the next nodes in
/// rank, until `replicas` nodes hold it.
fn copy_from_healthy(
    repo: &Repository,
    data: &Receipt,
    replicas: usize,
    staging: &Staging,
    mut good: Vec<String>,
    bad: &[String],
) -> Outcome {
    let mut out = Outcome {
        data: data.clone(),
        copied: Vec::new(),
        unrepairable: None,
        warnings: Vec::new(),
    };
    if good.is_empty() {
        out.unrepairable = Some(format!("{}: no healthy replica left", data.key));
        return out;
    }
    if bad.is_empty() && good.len() >= replicas {
        return out;
    }
    let order: Vec<String> = repo
        .replicator()
        .order(&data.key)
        .into_iter()
        .map(|i| repo.nodes()[i].name().to_owned())
        .collect();
    if good.len() < replicas {
        let source = good[0].clone();
        let fetched = repo
            .replicator()
            .node(&source)
            .ok_or_else(|| crate::Error::not_found(source.clone()))
            .and_then(|node| {
                let mut r = node.get(&data.key)?;
                staging.fetch(&data.checksum[..16], &mut r, data.size, &data.checksum)
            });
        let staged = match fetched {
            Ok(s) => s,
            Err(e) => {
                out.unrepairable = Some(format!("{}: cannot read {source}: {e}", data.key));
                return out;
            }
        };
        let candidates = bad
            .iter()
            .chain(order.iter().filter(|n| !bad.contains(n)))
            .filter(|n| !good.contains(n))
            .cloned()
            .collect::<Vec<_>>();
        for to in candidates {
            if good.len() >= replicas {
                break;
            }
            let Some(node) = repo.replicator().node(&to) else {
                continue;
            };
            if node.put(&data.key, Payload::File(staged.path())).is_ok()
                && inspect_replica(repo, &to, data, true).problem.is_none()
            {
                out.copied.push(Copied {
                    file: data.key.to_string(),
                    from: source.clone(),
                    to: to.clone(),
                });
                good.push(to);
            }
        }
    }
    if good.len() < replicas {
        out.unrepairable = Some(format!(
            "{}: only {} of {replicas} copies could be made",
            data.key,
            good.len()
        ));
    }
    good.sort_by_key(|n| order.iter().position(|o| o == n));
    out.data.nodes = good;
    out
}
