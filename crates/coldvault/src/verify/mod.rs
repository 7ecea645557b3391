//! `verify`: checks every data file of a snapshot on every node its manifest names — presence and
//! size, and with `read_data` the BLAKE3 of every replica — and that every node holds the manifest.
//!
//! What is read can be a subset ([`Subset`]: the N-th of M groups, or a share of the bytes) and
//! time-boxed; every full read is recorded on the replica's node ([`coverage`]), subsets read the
//! replicas read longest ago first, and the report gives the coverage of the last 30 days.
//!
//! On a node with a `storage_class`, each replica's class is checked too, from the store's
//! metadata; a replica in an archive class that has not been retrieved is not read, even with
//! `read_data`: the report lists it under `unread`, with the reason.
//!
//! A replica found damaged (a wrong size, or a wrong checksum) is recorded as such on its node
//! ([`crate::store::DamageRecord`]), so that the next backup reads its task again from the source
//! and writes good copies over it. That is the only write verify makes; a record that cannot be
//! written is a warning, not a problem.

mod coverage;
mod select;

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

pub use coverage::COVERAGE_KEY;
pub use select::{DataReads, Subset};

use crate::catalog::Manifest;
use crate::error::ErrorKind;
use crate::repo::Repository;
use crate::stage::hash_stream;
use crate::store::{manifest_key, DamageRecord, FoundBy, Readiness, Receipt};
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
    /// Whether checksums were checked (of all replicas, or of a subset).
    pub read_data: bool,
    /// What has been read of the snapshot's readable replicas, this run and earlier ones; when
    /// data was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<CoverageReport>,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// What is odd but puts no data at risk (a node that holds no listed replica is unreachable,
    /// a replica in another storage class than its node's).
    pub warnings: Vec<String>,
    /// Replicas whose checksums were not checked though `read_data` asked for it, with why
    /// (archived and not retrieved).
    pub unread: Vec<Unread>,
    /// Damaged replicas (`size`, `corrupt`) recorded as such on their nodes: the next backup
    /// reads their tasks again from the source and replaces them.
    pub damage_recorded: u64,
}

/// How much of a snapshot's replicas `verify` has read lately, from the records on the nodes.
/// Replicas on nodes in an archive class are not counted: they are not read without retrieval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoverageReport {
    /// Readable replicas of the snapshot.
    pub replicas: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Replicas read whole in the last 30 days.
    pub read_30d_replicas: u64,
    /// Their bytes.
    pub read_30d_bytes: u64,
    /// Replicas never read by `verify`.
    pub never_read: u64,
    /// When the replica read longest ago was read (RFC 3339), among those read at all.
    pub oldest_read: Option<String>,
    /// Replicas this run chose but did not read because `max_duration` ran out.
    pub not_reached: u64,
}

/// A replica `verify --read-data` could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    /// The node.
    pub node: String,
    /// The object.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// What checking one replica found.
#[derive(Debug, Default)]
pub(crate) struct Inspection {
    /// Bytes read to check its checksum.
    pub bytes: u64,
    /// What is wrong with it.
    pub problem: Option<Problem>,
    /// Why it was not read, when it was to be and could not.
    pub unread: Option<String>,
    /// Its class differs from its node's `storage_class`.
    pub class: Option<String>,
}

impl Inspection {
    fn problem(p: Problem) -> Self {
        Inspection {
            problem: Some(p),
            ..Inspection::default()
        }
    }
}

impl Problem {
    /// True when the replica is there but its bytes are wrong: what a damage record is for.
    pub fn is_damage(&self) -> bool {
        matches!(self.problem, "size" | "corrupt")
    }
}

/// Checks one replica: presence, size, its class on a node with a `storage_class`, and with
/// `read_data` its checksum.
pub(crate) fn inspect_replica(
    repo: &Repository,
    node_name: &str,
    data: &Receipt,
    read_data: bool,
) -> Inspection {
    let problem = |kind: &'static str, detail: String| Problem {
        node: node_name.to_owned(),
        file: data.key.to_string(),
        problem: kind,
        detail,
    };
    let Some(node) = repo.replicator().node(node_name) else {
        return Inspection::problem(problem(
            "missing",
            "the node is no longer in the job".into(),
        ));
    };
    match node.stat(&data.key) {
        Ok(None) => return Inspection::problem(problem("missing", "no such object".into())),
        Ok(Some(s)) if s != data.size => {
            return Inspection::problem(problem(
                "size",
                format!("{s} bytes, expected {}", data.size),
            ))
        }
        Ok(Some(_)) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Inspection::problem(problem("missing", e.to_string()))
        }
        Err(e) => return Inspection::problem(problem("unreachable", e.to_string())),
    }
    let mut found = Inspection::default();
    if let Some(want) = node
        .storage_class()
        .filter(|_| crate::store::archived(data.key.as_str()))
    {
        match node.object_class(&data.key) {
            Ok(Some(c)) => {
                let class = c.class.unwrap_or_default();
                if class != want {
                    found.class = Some(format!(
                        "{} on node {node_name} is in storage class {class}, not the node's {want}",
                        data.key
                    ));
                }
                if read_data && c.readiness != Readiness::Readable {
                    found.unread = Some(format!(
                        "in the archive class {class}, {}",
                        match c.readiness {
                            Readiness::Retrieving => "its retrieval is not done yet",
                            _ => "not retrieved (restore --retrieval-only retrieves it)",
                        }
                    ));
                    return found;
                }
            }
            Ok(None) => return Inspection::problem(problem("missing", "no such object".into())),
            Err(e) => return Inspection::problem(problem("unreachable", e.to_string())),
        }
    }
    if !read_data {
        return found;
    }
    let hashed = node
        .get(&data.key)
        .map_err(|e| e.to_string())
        .and_then(|mut r| hash_stream(&mut r).map_err(|e| e.to_string()));
    match hashed {
        Ok((n, hash)) if n == data.size && hash == data.checksum => found.bytes = n,
        Ok((n, _)) => {
            found.bytes = n;
            found.problem = Some(problem("corrupt", "checksum mismatch".into()));
        }
        Err(e) => found.problem = Some(problem("unreachable", e)),
    }
    found
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

/// One replica to check, and whether to read it.
struct Check<'a> {
    data: &'a Receipt,
    node: &'a str,
    read: bool,
}

/// What checking one replica gave.
struct Checked {
    found: Inspection,
    recorded: Option<crate::Result<()>>,
    /// Read whole (its checksum compared), for the coverage record.
    read_whole: bool,
    /// Chosen for reading but not read: the time ran out.
    not_reached: bool,
}

/// Verifies `manifest`, whose manifest file is on `manifest_nodes`: every replica's presence and
/// size, and with `reads` the checksums of the replicas it selects.
pub fn verify(
    repo: &Repository,
    manifest: &Manifest,
    manifest_nodes: &[String],
    reads: Option<&DataReads>,
    parallel: usize,
) -> VerifyReport {
    let receipts = manifest.receipts();
    let replicas: Vec<(&Receipt, &str)> = receipts
        .iter()
        .flat_map(|r| r.nodes.iter().map(move |n| (*r, n.as_str())))
        .collect();
    let archive = |node: &str| {
        repo.replicator()
            .node(node)
            .is_some_and(|n| crate::retrieve::is_archive(n.as_ref()))
    };
    let (mut coverage, coverage_warnings) = match reads {
        Some(_) => coverage::Coverage::load(repo.nodes()),
        None => Default::default(),
    };
    // A share of the bytes is taken from nodes that answer: a node that is down would otherwise
    // hold the never-read replicas that come first, run after run.
    let down: HashSet<&str> = match reads {
        Some(DataReads {
            subset: Subset::Percent(_),
            ..
        }) => repo
            .nodes()
            .iter()
            .filter(|n| n.list(crate::store::SNAPSHOTS_PREFIX).is_err())
            .map(|n| n.name())
            .collect(),
        _ => HashSet::new(),
    };
    let readable = |node: &str| !archive(node) && !down.contains(node);
    let checks = plan_checks(&replicas, &coverage, reads, &readable);
    let started = Instant::now();
    let deadline = reads.and_then(|r| r.max_duration);
    let results = map_parallel(&checks, parallel, |c| {
        let in_time = deadline.is_none_or(|d| started.elapsed() < d);
        let read = c.read && in_time;
        let found = inspect_replica(repo, c.node, c.data, read);
        let recorded = found
            .problem
            .as_ref()
            .filter(|p| p.is_damage())
            .map(|p| record_damage(repo, c.data, p, FoundBy::Verify));
        // Only a replica whose checksum matched counts as covered: a damaged one is read again
        // next time, however its damage record fared.
        let read_whole = read && found.unread.is_none() && found.problem.is_none();
        Checked {
            found,
            recorded,
            read_whole,
            not_reached: c.read && !in_time,
        }
    });
    let mut report = VerifyReport {
        snapshot: manifest.id.to_string(),
        ok: true,
        data_files: receipts.len() as u64,
        replicas_checked: replicas.len() as u64,
        bytes_read: 0,
        read_data: reads.is_some(),
        coverage: None,
        problems: Vec::new(),
        warnings: coverage_warnings,
        unread: Vec::new(),
        damage_recorded: 0,
    };
    let now = coverage::now_secs();
    let mut touched = HashSet::new();
    let mut not_reached = 0;
    for (c, done) in checks.iter().zip(results) {
        let Checked {
            found,
            recorded,
            read_whole,
            not_reached: missed,
        } = done;
        if read_whole {
            coverage.note(c.node, c.data.key.as_str(), now);
            touched.insert(c.node.to_owned());
        } else if found.problem.as_ref().is_some_and(Problem::is_damage) {
            coverage.forget(c.node, c.data.key.as_str());
            touched.insert(c.node.to_owned());
        }
        not_reached += u64::from(missed);
        report.bytes_read += found.bytes;
        report.problems.extend(found.problem);
        report.warnings.extend(found.class);
        if let Some(reason) = found.unread {
            report.unread.push(Unread {
                node: c.node.to_owned(),
                file: c.data.key.to_string(),
                reason,
            });
        }
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
    if reads.is_some() {
        let mut touched: Vec<String> = touched.into_iter().collect();
        touched.sort();
        report.warnings.extend(coverage.save(repo, &touched));
        let readable: Vec<_> = replicas.iter().filter(|(_, n)| !archive(n)).collect();
        let mut cover = coverage_of(&readable, &coverage, now);
        cover.not_reached = not_reached;
        report.coverage = Some(cover);
    }
    report.ok = report.problems.is_empty();
    report
}

/// Every replica, those to read first in the order to read them. `--read-data` and `N/M` read
/// archive nodes' replicas too (they are reported as unread when archived); a share of the bytes
/// is taken from the replicas on `readable` nodes.
fn plan_checks<'a>(
    replicas: &[(&'a Receipt, &'a str)],
    coverage: &coverage::Coverage,
    reads: Option<&DataReads>,
    readable: &dyn Fn(&str) -> bool,
) -> Vec<Check<'a>> {
    let chosen = match reads {
        None => Vec::new(),
        Some(r) => {
            let candidates: Vec<(&Receipt, &str)> = match r.subset {
                Subset::Percent(_) => replicas
                    .iter()
                    .copied()
                    .filter(|(_, n)| readable(n))
                    .collect(),
                _ => replicas.to_vec(),
            };
            select::choose(&candidates, coverage, r.subset)
        }
    };
    let picked: HashSet<(&str, &str)> = chosen.iter().map(|(d, n)| (d.key.as_str(), *n)).collect();
    let mut checks: Vec<Check> = chosen
        .into_iter()
        .map(|(data, node)| Check {
            data,
            node,
            read: true,
        })
        .collect();
    checks.extend(
        replicas
            .iter()
            .filter(|(d, n)| !picked.contains(&(d.key.as_str(), *n)))
            .map(|(data, node)| Check {
                data,
                node,
                read: false,
            }),
    );
    checks
}

/// What the records say of `replicas` at `now`.
fn coverage_of(
    replicas: &[&(&Receipt, &str)],
    coverage: &coverage::Coverage,
    now: u64,
) -> CoverageReport {
    const MONTH: u64 = 30 * 24 * 3600;
    let mut r = CoverageReport::default();
    let mut oldest: Option<u64> = None;
    for (data, node) in replicas {
        r.replicas += 1;
        r.bytes += data.size;
        match coverage.last_read(node, data.key.as_str()) {
            None => r.never_read += 1,
            Some(t) => {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
                if now.saturating_sub(t) <= MONTH {
                    r.read_30d_replicas += 1;
                    r.read_30d_bytes += data.size;
                }
            }
        }
    }
    r.oldest_read = oldest.map(|t| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            .to_string()
    });
    r
}
