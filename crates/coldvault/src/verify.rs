//! `verify`: checks every data file of a snapshot on every node its manifest names — presence and
//! size, and with `read_data` the BLAKE3 of every replica — and that every node holds the manifest.
//!
//! A replica found damaged (a wrong size, or a wrong checksum) is recorded as such on its node
//! ([`crate::store::DamageRecord`]), so that the next backup reads its task again from the source
//! and writes good copies over it. That is the only write verify makes; a record that cannot be
//! written is a warning, not a problem.

use serde::Serialize;

use crate::catalog::Manifest;
use crate::error::ErrorKind;
use crate::repo::Repository;
use crate::stage::hash_stream;
use crate::store::{manifest_key, DamageRecord, FoundBy, Receipt};
use crate::util::map_parallel;

/// One damaged or missing replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The node.
    pub node: String,
    /// The object, inside the job directory.
    pub file: String,
    /// `missing`, `size`, `corrupt`, `unreachable`, or `incomplete` (the manifest misses part of
    /// what it describes).
    pub problem: &'static str,
    /// What was found.
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The snapshot.
    pub snapshot: String,
    /// True when nothing is wrong.
    pub ok: bool,
    /// Data files checked.
    pub data_files: u64,
    /// Replicas checked.
    pub replicas_checked: u64,
    /// Bytes read to check checksums.
    pub bytes_read: u64,
    /// Whether checksums were checked.
    pub read_data: bool,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// What is odd but puts no data at risk (a node that holds no listed replica is unreachable).
    pub warnings: Vec<String>,
    /// Damaged replicas (`size`, `corrupt`) recorded as such on their nodes: the next backup
    /// reads their tasks again from the source and replaces them.
    pub damage_recorded: u64,
}

impl Problem {
    /// True when the replica is there but its bytes are wrong: what a damage record is for.
    pub fn is_damage(&self) -> bool {
        matches!(self.problem, "size" | "corrupt")
    }
}

/// Checks one replica; returns the bytes read and the problem, if any.
pub(crate) fn inspect_replica(
    repo: &Repository,
    node_name: &str,
    data: &Receipt,
    read_data: bool,
) -> (u64, Option<Problem>) {
    let problem = |kind: &'static str, detail: String| Problem {
        node: node_name.to_owned(),
        file: data.key.to_string(),
        problem: kind,
        detail,
    };
    let Some(node) = repo.replicator().node(node_name) else {
        return (
            0,
            Some(problem(
                "missing",
                "the node is no longer in the job".into(),
            )),
        );
    };
    match node.stat(&data.key) {
        Ok(None) => return (0, Some(problem("missing", "no such object".into()))),
        Ok(Some(s)) if s != data.size => {
            return (
                0,
                Some(problem(
                    "size",
                    format!("{s} bytes, expected {}", data.size),
                )),
            )
        }
        Ok(Some(_)) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return (0, Some(problem("missing", e.to_string())))
        }
        Err(e) => return (0, Some(problem("unreachable", e.to_string()))),
    }
    if !read_data {
        return (0, None);
    }
    let hashed = node
        .get(&data.key)
        .map_err(|e| e.to_string())
        .and_then(|mut r| hash_stream(&mut r).map_err(|e| e.to_string()));
    match hashed {
        Ok((n, hash)) if n == data.size && hash == data.checksum => (n, None),
        Ok((n, _)) => (n, Some(problem("corrupt", "checksum mismatch".into()))),
        Err(e) => (0, Some(problem("unreachable", e))),
    }
}

/// Writes the record of `problem` (a damaged replica of `data`) on its node.
pub(crate) fn record_damage(
    repo: &Repository,
    data: &Receipt,
    problem: &Problem,
    found_by: FoundBy,
) -> crate::Result<()> {
    let node = repo.replicator().node(&problem.node).ok_or_else(|| {
        crate::Error::internal(format!("node {} is not in the job", problem.node))
    })?;
    let detail = format!("{}: {}", problem.problem, problem.detail);
    let record = DamageRecord::new(data, &problem.node, found_by, &detail);
    repo.replicator().damage().record(node.as_ref(), &record)
}

/// Verifies `manifest`, whose manifest file is on `manifest_nodes`.
pub fn verify(
    repo: &Repository,
    manifest: &Manifest,
    manifest_nodes: &[String],
    read_data: bool,
    parallel: usize,
) -> VerifyReport {
    let receipts = manifest.receipts();
    let replicas: Vec<(&Receipt, &str)> = receipts
        .iter()
        .flat_map(|r| r.nodes.iter().map(move |n| (*r, n.as_str())))
        .collect();
    let results = map_parallel(&replicas, parallel, |(data, node)| {
        let (n, p) = inspect_replica(repo, node, data, read_data);
        let recorded = p
            .as_ref()
            .filter(|p| p.is_damage())
            .map(|p| record_damage(repo, data, p, FoundBy::Verify));
        (n, p, recorded)
    });
    let mut report = VerifyReport {
        snapshot: manifest.id.to_string(),
        ok: true,
        data_files: receipts.len() as u64,
        replicas_checked: replicas.len() as u64,
        bytes_read: 0,
        read_data,
        problems: Vec::new(),
        warnings: Vec::new(),
        damage_recorded: 0,
    };
    for (n, p, recorded) in results {
        report.bytes_read += n;
        report.problems.extend(p);
        match recorded {
            Some(Ok(())) => report.damage_recorded += 1,
            Some(Err(e)) => report.warnings.push(format!(
                "cannot record the damage, so the next backup will not heal it: {e}"
            )),
            None => {}
        }
    }
    for r in &receipts {
        if r.nodes.len() < manifest.replicas {
            report.problems.push(Problem {
                node: String::new(),
                file: r.key.to_string(),
                problem: "missing",
                detail: format!("{} of {} copies listed", r.nodes.len(), manifest.replicas),
            });
        }
    }
    let key = manifest_key(manifest.id.as_str());
    if let Ok(kind) = crate::source::kind_named(&manifest.source.kind) {
        for detail in kind.check_manifest(manifest) {
            report.problems.push(Problem {
                node: String::new(),
                file: key.to_string(),
                problem: "incomplete",
                detail,
            });
        }
    }
    for node in repo.nodes() {
        if manifest_nodes.iter().any(|n| n == node.name()) {
            continue;
        }
        let holds_data = receipts
            .iter()
            .any(|r| r.nodes.iter().any(|n| n == node.name()));
        if let (Err(e), false) = (node.list(crate::store::SNAPSHOTS_PREFIX), holds_data) {
            report.warnings.push(format!(
                "node {} is unreachable and holds no replica of this snapshot: {e}",
                node.name()
            ));
        } else {
            let (problem, detail) = match repo.read_manifest_copy(node.as_ref(), &key) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    ("missing", "the node does not hold the manifest".to_owned())
                }
                Err(e) => ("damaged", format!("its copy of the manifest: {e}")),
                Ok(_) => (
                    "disagrees",
                    format!(
                        "its copy of the manifest checks out but differs from the one {} hold: \
                         outvoted",
                        manifest_nodes.join(", ")
                    ),
                ),
            };
            report.problems.push(Problem {
                node: node.name().to_owned(),
                file: key.to_string(),
                problem,
                detail,
            });
        }
    }
    let (_, markers) = repo.marker_problems();
    let keys = match repo.crypt() {
        Ok(Some(crypt)) => crate::crypt::key_copy_problems(&crypt, repo.nodes()),
        _ => Vec::new(),
    };
    for (file, (node, problem, detail)) in markers
        .into_iter()
        .map(|p| (crate::store::CONFIG_KEY, p))
        .chain(keys.into_iter().map(|p| (crate::crypt::KEY_FILE, p)))
        // A node that does not answer (gone for good, unmounted) is reported above, by what it
        // holds of the snapshot; a copy missing there says nothing more.
        .filter(|(_, (node, problem, _))| match *problem {
            "unreachable" => false,
            "missing" => repo
                .replicator()
                .node(node)
                .is_some_and(|n| n.list(crate::store::SNAPSHOTS_PREFIX).is_ok()),
            _ => true,
        })
    {
        report.problems.push(Problem {
            node,
            file: file.to_owned(),
            problem,
            detail,
        });
    }
    report.ok = report.problems.is_empty();
    report
}
