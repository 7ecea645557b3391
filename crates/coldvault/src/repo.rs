//! `Repository`: a job's nodes opened as targets, with the marker and the snapshot catalog on them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{Manifest, RepoMarker, FORMAT_VERSION};
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::store::{
    manifest_key, read_small, Backoff, ObjectKey, Payload, Replicator, RetryingTarget,
    SharedTarget, CONFIG_KEY, SNAPSHOTS_PREFIX,
};

/// A job's repository: its nodes, each wrapped in the retry layer.
#[derive(Debug, Clone)]
pub struct Repository {
    replicator: Replicator,
    job: String,
    encryption: Option<crate::job::Encryption>,
    crypt: Arc<std::sync::Mutex<Option<Arc<crate::crypt::Crypt>>>>,
}

/// What `init` did on each node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// The repository's id.
    pub repository_id: String,
    /// Nodes that got a marker now.
    pub created: Vec<String>,
    /// Nodes that already had it.
    pub existing: Vec<String>,
}

/// The snapshots found on the nodes.
#[derive(Debug, Default)]
pub struct Listing {
    /// Manifests, oldest first, each with the nodes holding it.
    pub snapshots: Vec<(Manifest, Vec<String>)>,
    /// Nodes that could not be listed or manifests that could not be read.
    pub warnings: Vec<Error>,
    /// Manifests found on some node but readable on none: snapshots lost to damage.
    pub unreadable: Vec<String>,
    /// Nodes that answered the listing.
    pub nodes_listed: usize,
}

impl Repository {
    /// Opens the job's nodes (no I/O; S3 credentials are read from the environment or files).
    pub fn open(job: &Job) -> Result<Repository> {
        let backoff = Backoff::new(job.run.retries, job.run.retry_delay);
        let nodes = job
            .repository
            .nodes
            .iter()
            .map(|n| {
                let inner = n.open(&job.repository.directory)?;
                Ok(Arc::new(RetryingTarget::new(inner, backoff)) as SharedTarget)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(
            Repository::with_nodes(&job.name, nodes, job.repository.replicas)
                .with_encryption(job.repository.encryption.clone()),
        )
    }

    /// A repository over given targets (tests use memory and faulty targets).
    pub fn with_nodes(job: &str, nodes: Vec<SharedTarget>, replicas: usize) -> Repository {
        Repository {
            replicator: Replicator::new(nodes, replicas),
            job: job.to_owned(),
            encryption: None,
            crypt: Arc::default(),
        }
    }

    /// The same repository, encrypted as `[repository.encryption]` says.
    pub fn with_encryption(mut self, encryption: Option<crate::job::Encryption>) -> Repository {
        self.encryption = encryption;
        self
    }

    /// The repository's keys when it is encrypted (read, in passphrase mode, from the nodes the
    /// first time they are needed).
    pub fn crypt(&self) -> Result<Option<Arc<crate::crypt::Crypt>>> {
        let Some(enc) = &self.encryption else {
            return Ok(None);
        };
        // One opening at a time: in passphrase mode the first one may create the key.
        let mut slot = self.crypt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(Some(c.clone()));
        }
        let c = crate::crypt::Crypt::open(enc, self.nodes())?;
        *slot = Some(c.clone());
        Ok(Some(c))
    }

    /// The replicator over the nodes.
    pub fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SharedTarget] {
        self.replicator.nodes()
    }

    /// Creates the repository on every node (creating local node directories); idempotent.
    /// Refuses nodes that hold a different repository.
    pub fn init(&self, job: &Job) -> Result<InitReport> {
        for n in &job.repository.nodes {
            n.create_root(&job.repository.directory)?;
        }
        self.ensure_marker(true)
    }

    /// Readies the repository for a backup and returns the repository of the nodes that answer,
    /// with a warning for each node that does not. Every node is checked first (concurrently); the
    /// roots of local nodes of a repository that no reachable node knows yet are created, and the
    /// backup then writes the marker under its lock ([`Repository::ensure_marker`]), so the first
    /// backup needs no `init`. When fewer nodes answer than `replicas` needs, the backup cannot
    /// run, and the error names each node and its cause.
    pub fn prepare_backup(&self, job: &Job) -> Result<(Repository, Vec<String>)> {
        let (mut usable, mut failed) = self.preflight(self.nodes());
        let key = ObjectKey::new(CONFIG_KEY);
        let known = usable.iter().any(|n| matches!(n.stat(&key), Ok(Some(_))));
        if !known {
            let retry: Vec<SharedTarget> = failed
                .iter()
                .filter_map(|(n, _)| {
                    let spec = job.repository.nodes.iter().find(|s| s.name == n.name())?;
                    spec.create_root(&job.repository.directory)
                        .ok()
                        .filter(|created| *created)
                        .map(|_| n.clone())
                })
                .collect();
            if !retry.is_empty() {
                failed.retain(|(n, _)| !retry.iter().any(|r| r.name() == n.name()));
                let (ok, still) = self.preflight(&retry);
                usable.extend(ok);
                failed.extend(still);
            }
        }
        let warnings: Vec<String> = failed.iter().map(|(_, e)| e.to_string()).collect();
        for (node, e) in &failed {
            crate::event::emit(
                "node_left_out",
                serde_json::json!({ "node": node.name(), "why": e.to_string() }),
            );
        }
        if usable.len() < self.replicator.replicas() {
            return Err(Error::target(format!(
                "only {} of the {} nodes needed for {} copies answer: {}",
                usable.len(),
                self.replicator.replicas(),
                self.replicator.replicas(),
                warnings.join("; ")
            )));
        }
        let usable_names: Vec<String> = usable.iter().map(|n| n.name().to_owned()).collect();
        let repo = Repository::with_nodes(
            &self.job,
            self.nodes()
                .iter()
                .filter(|n| usable_names.iter().any(|u| u == n.name()))
                .cloned()
                .collect(),
            self.replicator.replicas(),
        )
        .with_encryption(self.encryption.clone());
        Ok((repo, warnings))
    }

    /// Lists every node's snapshots concurrently: the nodes that answer, and those that do not.
    fn preflight(&self, nodes: &[SharedTarget]) -> (Vec<SharedTarget>, Vec<(SharedTarget, Error)>) {
        let results: Vec<(SharedTarget, Result<Vec<ObjectKey>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| s.spawn(move || (n.clone(), n.list(SNAPSHOTS_PREFIX))))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for (n, r) in results {
            match r {
                Ok(_) => ok.push(n),
                Err(e) => failed.push((n, e)),
            }
        }
        (ok, failed)
    }

    /// Writes the marker where it is missing; with `strict`, a node that cannot be read is an error,
    /// else it is skipped (a backup may still place its copies on the others).
    pub fn ensure_marker(&self, strict: bool) -> Result<InitReport> {
        let mut markers: Vec<(String, Option<RepoMarker>)> = Vec::new();
        let mut damaged = Vec::new();
        for node in self.nodes() {
            match read_marker(node.as_ref()) {
                Ok(m) => markers.push((node.name().to_owned(), Some(m))),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    markers.push((node.name().to_owned(), None))
                }
                // A damaged copy is outvoted by the good ones, never obeyed; `repair` rewrites it.
                Err(e) if e.kind() == ErrorKind::Integrity => damaged.push(e),
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, m) in &markers {
            if let Some(m) = m {
                ids.entry(&m.repository_id).or_default().push(name);
            }
        }
        if ids.len() > 1 {
            let parts: Vec<String> = ids
                .iter()
                .map(|(id, nodes)| format!("{} on {}", &id[..8.min(id.len())], nodes.join(",")))
                .collect();
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the nodes hold different repositories ({}); refusing to mix them",
                    parts.join("; ")
                ),
            ));
        }
        let marker_of = |repository_id: &str| {
            RepoMarker {
                format: FORMAT_VERSION,
                repository_id: repository_id.to_owned(),
                job: self.job.clone(),
            }
            .encode()
        };
        let key = ObjectKey::new(CONFIG_KEY);
        if ids.is_empty() {
            if let Some(e) = damaged.into_iter().next() {
                // Only damaged markers: the repository exists, but which one cannot be told.
                return Err(e);
            }
        }
        let mut report = InitReport {
            repository_id: String::new(),
            created: Vec::new(),
            existing: Vec::new(),
        };
        // A new repository's id is decided by one node, the first in the job that answers:
        // creating its marker is atomic (create-if-absent), so of several starters racing, one
        // creates it and the others adopt the id they find there.
        let mut arbiter = None;
        report.repository_id = match ids.keys().next() {
            Some(id) => id.to_string(),
            None => {
                let candidate = fresh_repository_id(&self.job);
                let bytes = marker_of(&candidate)?;
                let mut decided = None;
                for (name, _) in &markers {
                    let node = self.node_named(name)?;
                    match node.put_if_absent(&key, &bytes) {
                        Ok(true) => decided = Some(candidate.clone()),
                        Ok(false) => decided = Some(read_marker(node.as_ref())?.repository_id),
                        Err(e) if strict => return Err(e),
                        Err(_) => continue,
                    }
                    arbiter = Some(name.clone());
                    break;
                }
                decided.unwrap_or(candidate)
            }
        };
        let bytes = marker_of(&report.repository_id)?;
        for (name, m) in markers {
            if m.is_some() {
                report.existing.push(name);
                continue;
            }
            let node = self.node_named(&name)?;
            match node.put_if_absent(&key, &bytes) {
                Ok(true) => report.created.push(name),
                Ok(false) => {
                    let found = read_marker(node.as_ref())?;
                    if found.repository_id != report.repository_id {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "node {name} took repository {} while this run took {}; refusing to mix them",
                                &found.repository_id[..8.min(found.repository_id.len())],
                                &report.repository_id[..8.min(report.repository_id.len())]
                            ),
                        ));
                    }
                    // Made by this run as arbiter, or by a racer with the same id.
                    if arbiter.as_deref() == Some(name.as_str()) {
                        report.created.push(name);
                    } else {
                        report.existing.push(name);
                    }
                }
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        Ok(report)
    }

    fn node_named(&self, name: &str) -> Result<&SharedTarget> {
        self.replicator
            .node(name)
            .ok_or_else(|| Error::internal(format!("node {name} is not in the repository")))
    }

    /// Every snapshot of the repository, oldest first, with the nodes holding its manifest.
    ///
    /// Every node's copy of every manifest is read and its checksum checked. A damaged copy is
    /// a warning naming its node; of copies that check out but differ, the one most nodes hold
    /// wins (on a tie, the one on the node listed first in the job) and each outvoted copy is a
    /// warning naming its node. The nodes listed with a snapshot are those holding the winner.
    pub fn list(&self) -> Listing {
        let mut copies: BTreeMap<String, Vec<Copy>> = BTreeMap::new();
        let mut warnings = Vec::new();
        let mut nodes_listed = 0;
        for node in self.nodes() {
            let keys = match node.list(SNAPSHOTS_PREFIX) {
                Ok(k) => k,
                Err(e) => {
                    warnings.push(e);
                    continue;
                }
            };
            nodes_listed += 1;
            for key in keys.iter().filter(|k| k.as_str().ends_with(".json")) {
                let copy = self.read_manifest_copy(node.as_ref(), key);
                copies
                    .entry(key.as_str().to_owned())
                    .or_default()
                    .push((node.name().to_owned(), copy));
            }
        }
        let mut snapshots = Vec::new();
        let mut unreadable = Vec::new();
        for (key, all) in copies {
            match elect(all, &key, &mut warnings) {
                Some(won) => snapshots.push(won),
                None => unreadable.push(key),
            }
        }
        snapshots.sort_by(|a, b| a.0.time.cmp(&b.0.time).then(a.0.id.cmp(&b.0.id)));
        Listing {
            snapshots,
            warnings,
            unreadable,
            nodes_listed,
        }
    }

    /// `node`'s copy of the manifest at `key`, decrypted and checked, with its digest.
    pub(crate) fn read_manifest_copy(
        &self,
        node: &dyn crate::store::Target,
        key: &ObjectKey,
    ) -> Result<(Manifest, String)> {
        read_small(node, key)
            .and_then(|b| crate::crypt::unseal_opt(self.crypt()?.as_ref(), b))
            .and_then(|b| Manifest::decode_checked(&b))
            .map_err(|e| e.with_context("node", node.name()).with_context("key", key))
    }

    /// The snapshot named by `spec`: `latest`, a full id or a unique prefix of one.
    pub fn find(&self, spec: &str) -> Result<(Manifest, Vec<String>)> {
        let listing = self.list();
        if listing.snapshots.is_empty() {
            let mut e = Error::not_found(format!("job {:?} has no snapshots", self.job));
            if let Some(w) = listing.warnings.into_iter().next() {
                e = e.with_source(w);
            }
            return Err(e);
        }
        if spec == "latest" {
            return listing
                .snapshots
                .into_iter()
                .next_back()
                .ok_or_else(|| Error::not_found("no snapshots"));
        }
        let mut matches: Vec<_> = listing
            .snapshots
            .into_iter()
            .filter(|(m, _)| m.id.as_str().starts_with(spec))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::not_found(format!(
                "no snapshot {spec:?} in job {:?}",
                self.job
            ))),
            n => Err(Error::config(format!(
                "snapshot {spec:?} is ambiguous ({n} snapshots start with it)"
            ))),
        }
    }

    /// Writes `manifest` to every node; it must reach at least `replicas` of them.
    /// Returns the nodes that hold it and the failures.
    pub fn commit(&self, manifest: &Manifest) -> Result<(Vec<String>, Vec<Error>)> {
        let bytes = crate::crypt::seal_opt(self.crypt()?.as_ref(), manifest.encode()?)?;
        let key = manifest_key(manifest.id.as_str());
        let results: Vec<(String, Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes()
                .iter()
                .map(|n| {
                    let (key, bytes) = (&key, &bytes);
                    s.spawn(move || (n.name().to_owned(), n.put(key, Payload::Bytes(bytes))))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut written = Vec::new();
        let mut failed = Vec::new();
        for (name, r) in results {
            match r {
                Ok(()) => written.push(name),
                Err(e) => failed.push(e),
            }
        }
        if written.len() < self.replicator.replicas() {
            for n in &written {
                if let Some(node) = self.replicator.node(n) {
                    let _ = node.delete(&key);
                }
            }
            let causes: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
            return Err(Error::target(format!(
                "could not write the manifest of snapshot {} to {} nodes: {}",
                manifest.id,
                self.replicator.replicas(),
                causes.join("; ")
            )));
        }
        Ok((written, failed))
    }
}

/// One node's copy of a manifest: the node, and the manifest with its digest or why it is bad.
type Copy = (String, Result<(Manifest, String)>);

/// The copy of one manifest that readers use, from every node's copy (in the job's node order):
/// of those that check out, the one most nodes hold, on a tie the first node's. Damaged and
/// outvoted copies become warnings naming their node. `None` when no copy checks out.
fn elect(
    copies: Vec<Copy>,
    key: &str,
    warnings: &mut Vec<Error>,
) -> Option<(Manifest, Vec<String>)> {
    let mut groups: Vec<(String, Manifest, Vec<String>)> = Vec::new();
    for (node, copy) in copies {
        match copy {
            Err(e) => warnings.push(e),
            Ok((m, digest)) => match groups.iter_mut().find(|g| g.0 == digest) {
                Some(g) => g.2.push(node),
                None => groups.push((digest, m, vec![node])),
            },
        }
    }
    // Stable: among groups as large, the first formed (the earliest node's) stays first.
    groups.sort_by_key(|g| std::cmp::Reverse(g.2.len()));
    let mut groups = groups.into_iter();
    let (_, winner, holders) = groups.next()?;
    for (_, _, nodes) in groups {
        for node in nodes {
            warnings.push(
                Error::integrity(format!(
                    "node {node}'s copy of the manifest differs from the one {} hold ({}): \
                     outvoted, not used",
                    if holders.len() == 1 { "node" } else { "nodes" },
                    holders.join(", ")
                ))
                .with_context("node", node.clone())
                .with_context("key", key.to_owned()),
            );
        }
    }
    Some((winner, holders))
}

/// A fresh repository id for `job`.
fn fresh_repository_id(job: &str) -> String {
    blake3::hash(format!("{job}{}{}", crate::util::now_rfc3339(), fastrand::u64(..)).as_bytes())
        .to_hex()[..32]
        .to_string()
}

impl Repository {
    /// What is wrong with each node's repository marker, as (node, problem, detail): `missing`,
    /// `damaged` (its checksum fails), `disagrees` (another repository's id than most nodes'), and
    /// the marker most nodes hold, if any node holds a sound one.
    pub(crate) fn marker_problems(
        &self,
    ) -> (Option<RepoMarker>, Vec<(String, &'static str, String)>) {
        let mut sound: Vec<(String, RepoMarker)> = Vec::new();
        let mut problems = Vec::new();
        for node in self.nodes() {
            let name = node.name().to_owned();
            match read_marker(node.as_ref()) {
                Ok(m) => sound.push((name, m)),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    problems.push((name, "missing", "no repository marker".to_owned()))
                }
                Err(e) if e.kind() == ErrorKind::Integrity => {
                    problems.push((name, "damaged", e.to_string()))
                }
                Err(e) => problems.push((name, "unreachable", e.to_string())),
            }
        }
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, m) in &sound {
            *votes.entry(m.repository_id.as_str()).or_default() += 1;
        }
        // Most nodes win; on a tie, the first node's (the listing is in the job's order).
        let best = sound
            .iter()
            .max_by_key(|(n, m)| {
                let first = sound.iter().position(|(o, _)| o == n).unwrap_or(0);
                (votes[m.repository_id.as_str()], std::cmp::Reverse(first))
            })
            .map(|(_, m)| m.clone());
        if let Some(best) = &best {
            for (name, m) in &sound {
                if m.repository_id != best.repository_id {
                    problems.push((
                        name.clone(),
                        "disagrees",
                        format!(
                            "it names repository {}, most nodes {}",
                            &m.repository_id[..8.min(m.repository_id.len())],
                            &best.repository_id[..8.min(best.repository_id.len())]
                        ),
                    ));
                }
            }
        }
        (best, problems)
    }

    /// Rewrites the marker on every node whose copy is missing or damaged (never one that names
    /// another repository: that needs a person). Returns the nodes rewritten; a node that does
    /// not take it (gone for good) is left as it is.
    pub(crate) fn repair_markers(&self) -> Result<Vec<String>> {
        let (best, problems) = self.marker_problems();
        let Some(best) = best else {
            return Ok(Vec::new());
        };
        let bytes = best.encode()?;
        let mut done = Vec::new();
        for (name, problem, _) in problems {
            if !matches!(problem, "missing" | "damaged") {
                continue;
            }
            let written = self
                .node_named(&name)?
                .put(&ObjectKey::new(CONFIG_KEY), Payload::Bytes(&bytes));
            if written.is_ok() {
                done.push(name);
            }
        }
        Ok(done)
    }
}

/// The repository marker on `node`.
fn read_marker(node: &dyn crate::store::Target) -> Result<RepoMarker> {
    let bytes = read_small(node, &ObjectKey::new(CONFIG_KEY))?;
    RepoMarker::decode(&bytes).map_err(|e| {
        e.with_context("node", node.name())
            .with_context("key", CONFIG_KEY)
    })
}

/// A stored task of a run that did not finish: what a resumed run reuses.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunReceipt {
    /// When the run that stored it started (RFC 3339).
    pub run_started: String,
    /// The task as it would appear in the manifest.
    pub entry: crate::catalog::TaskEntry,
}

impl Repository {
    /// Writes a task's receipt to every node that takes it (at least one must).
    pub fn write_receipt(&self, receipt: &RunReceipt) -> Result<()> {
        let body = crate::util::to_json(receipt, "a receipt")?;
        let bytes = crate::crypt::seal_opt(
            self.crypt()?.as_ref(),
            crate::catalog::checked::wrap(FORMAT_VERSION, &body),
        )?;
        let key = crate::store::receipt_key(receipt.entry.id.as_str());
        crate::store::put_on_any(self.nodes(), &key, &bytes)
            .map_err(|e| e.with_context("receipt", key))
    }

    /// Whether every data file of `entry` is held ([`Repository::holds`]): what may be reused
    /// as is, or extended by a delta.
    pub fn holds_entry(&self, entry: &crate::catalog::TaskEntry) -> bool {
        entry.receipts().into_iter().all(|r| self.holds(r))
    }

    /// True when every node `data` names holds it with its size and no node whose damage records
    /// were listed ([`crate::store::DamageBook::load`]) records it damaged.
    pub fn holds(&self, data: &crate::store::Receipt) -> bool {
        !self.replicator.damage().recorded_anywhere(&data.key)
            && data.nodes.iter().all(|n| {
                self.replicator
                    .node(n)
                    .is_some_and(|t| matches!(t.stat(&data.key), Ok(Some(s)) if s == data.size))
            })
    }

    /// The receipts of the unfinished run, by task id: those stored after `newest` (the start of
    /// the newest committed snapshot, empty when there is none), whose data files are still on
    /// every node they name and recorded damaged on none ([`Repository::holds`]).
    pub fn unfinished_run(&self, newest: &str) -> BTreeMap<String, RunReceipt> {
        let mut out: BTreeMap<String, RunReceipt> = BTreeMap::new();
        for node in self.nodes() {
            let Ok(keys) = node.list(crate::store::RUNS_PREFIX) else {
                continue;
            };
            for key in keys {
                let Ok(r) = read_small(node.as_ref(), &key)
                    .and_then(|b| crate::crypt::unseal_opt(self.crypt()?.as_ref(), b))
                    .and_then(|b| {
                        let opened =
                            crate::catalog::checked::open(&b, "a receipt", FORMAT_VERSION)?;
                        serde_json::from_slice::<RunReceipt>(opened.body)
                            .map_err(|e| Error::integrity("malformed receipt").with_source(e))
                    })
                else {
                    continue;
                };
                if r.run_started.as_str() <= newest || out.contains_key(r.entry.id.as_str()) {
                    continue;
                }
                if self.holds_entry(&r.entry) {
                    out.insert(r.entry.id.to_string(), r);
                }
            }
        }
        out
    }

    /// Removes every receipt of the run (after its snapshot is committed).
    pub fn clear_receipts(&self) {
        for node in self.nodes() {
            if let Ok(keys) = node.list(crate::store::RUNS_PREFIX) {
                for k in keys {
                    let _ = node.delete(&k);
                }
            }
        }
    }
}
