//! `Repository`: a job's nodes opened as targets, with the marker and the snapshot catalog on them.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use crate::catalog::{Manifest, RepoMarker, FORMAT_VERSION};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, NodeUrl};
use crate::store::{
    manifest_key, Backoff, FsTarget, ObjectKey, Payload, Replicator, RetryingTarget, SharedTarget,
    CONFIG_KEY, SNAPSHOTS_PREFIX,
};

/// A job's repository: its nodes, each wrapped in the retry layer.
#[derive(Debug, Clone)]
pub struct Repository {
    replicator: Replicator,
    job: String,
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
}

impl Repository {
    /// Opens the job's nodes (no I/O).
    pub fn open(job: &Job) -> Repository {
        let backoff = Backoff::new(job.run.retries, job.run.retry_delay);
        let nodes = job
            .repository
            .nodes
            .iter()
            .map(|n| {
                let inner: SharedTarget = match &n.url {
                    NodeUrl::File { path } => {
                        Arc::new(FsTarget::new(&n.name, path, &job.repository.directory))
                    }
                };
                Arc::new(RetryingTarget::new(inner, backoff)) as SharedTarget
            })
            .collect();
        Repository::with_nodes(&job.name, nodes, job.repository.replicas)
    }

    /// A repository over given targets (tests use memory and faulty targets).
    pub fn with_nodes(job: &str, nodes: Vec<SharedTarget>, replicas: usize) -> Repository {
        Repository {
            replicator: Replicator::new(nodes, replicas),
            job: job.to_owned(),
        }
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
            create_node_root(job, n)?;
        }
        self.ensure_marker(true)
    }

    /// Readies the repository for a backup. A repository that no node knows yet is created as
    /// `init` would (so the first backup needs no `init`); in an existing one, a node whose root is
    /// missing stays missing (an unmounted disk) and the backup places its copies elsewhere.
    pub fn prepare_backup(&self, job: &Job) -> Result<()> {
        let key = ObjectKey::new(CONFIG_KEY);
        let known = self
            .nodes()
            .iter()
            .any(|n| matches!(n.stat(&key), Ok(Some(_))));
        if !known {
            for n in &job.repository.nodes {
                // A node that cannot be created now is reported by the stores that need it.
                let _ = create_node_root(job, n);
            }
        }
        self.ensure_marker(false).map(|_| ())
    }

    /// Writes the marker where it is missing; with `strict`, a node that cannot be read is an error,
    /// else it is skipped (a backup may still place its copies on the others).
    pub fn ensure_marker(&self, strict: bool) -> Result<InitReport> {
        let mut markers: Vec<(String, Option<RepoMarker>)> = Vec::new();
        for node in self.nodes() {
            match read_small(node.as_ref(), &ObjectKey::new(CONFIG_KEY)) {
                Ok(bytes) => markers.push((
                    node.name().to_owned(),
                    Some(RepoMarker::decode(&bytes).map_err(|e| {
                        e.with_context("node", node.name())
                            .with_context("key", CONFIG_KEY)
                    })?),
                )),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    markers.push((node.name().to_owned(), None))
                }
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
        let repository_id = match ids.keys().next() {
            Some(id) => id.to_string(),
            None => blake3::hash(
                format!(
                    "{}{}{}",
                    self.job,
                    crate::catalog::now_rfc3339(),
                    fastrand::u64(..)
                )
                .as_bytes(),
            )
            .to_hex()[..32]
                .to_string(),
        };
        let marker = RepoMarker {
            format: FORMAT_VERSION,
            repository_id: repository_id.clone(),
            job: self.job.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        let mut report = InitReport {
            repository_id,
            created: Vec::new(),
            existing: Vec::new(),
        };
        for (name, m) in markers {
            if m.is_some() {
                report.existing.push(name);
                continue;
            }
            let node = self
                .replicator
                .node(&name)
                .ok_or_else(|| Error::not_found(name.clone()))?;
            match node.put(&ObjectKey::new(CONFIG_KEY), Payload::Bytes(&bytes)) {
                Ok(()) => report.created.push(name),
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        Ok(report)
    }

    /// Every snapshot of the repository, oldest first, with the nodes holding its manifest.
    pub fn list(&self) -> Listing {
        let mut by_id: BTreeMap<String, (Manifest, Vec<String>)> = BTreeMap::new();
        let mut warnings = Vec::new();
        for node in self.nodes() {
            let keys = match node.list(SNAPSHOTS_PREFIX) {
                Ok(k) => k,
                Err(e) => {
                    warnings.push(e);
                    continue;
                }
            };
            for key in keys.iter().filter(|k| k.as_str().ends_with(".json")) {
                if let Some((_, nodes)) = by_id.get_mut(key.as_str()) {
                    if node.stat(key).ok().flatten().is_some() {
                        nodes.push(node.name().to_owned());
                    }
                    continue;
                }
                match read_small(node.as_ref(), key).and_then(|b| Manifest::decode(&b)) {
                    Ok(m) => {
                        by_id.insert(key.as_str().to_owned(), (m, vec![node.name().to_owned()]));
                    }
                    Err(e) => {
                        warnings.push(e.with_context("node", node.name()).with_context("key", key))
                    }
                }
            }
        }
        let mut snapshots: Vec<_> = by_id.into_values().collect();
        snapshots.sort_by(|a, b| a.0.time.cmp(&b.0.time).then(a.0.id.cmp(&b.0.id)));
        Listing {
            snapshots,
            warnings,
        }
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
        let bytes = manifest.encode();
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

fn create_node_root(job: &Job, node: &crate::job::NodeSpec) -> Result<()> {
    match &node.url {
        NodeUrl::File { path } => {
            FsTarget::new(&node.name, path, &job.repository.directory).create_root()
        }
    }
}

/// Reads a small object (a marker, a manifest) into memory.
pub(crate) fn read_small(node: &dyn crate::store::Target, key: &ObjectKey) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    node.get(key)?.read_to_end(&mut buf).map_err(|e| {
        Error::target(format!("cannot read {key}"))
            .with_context("node", node.name())
            .with_source(e)
    })?;
    Ok(buf)
}
