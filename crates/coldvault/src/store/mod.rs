//! The distributed storage module: where staged data files go.
//!
//! [`Target`] is the one seam to a storage node: a small synchronous object API (put, get, stat,
//! list, delete). Around it, one layer each, outermost first:
//!
//! ```text
//! Replicator      per data file: pick nodes, write to each, succeed at `replicas` copies
//!  RetryingTarget whole-object re-put from the payload; only temporary errors; backoff + jitter
//!   FsTarget      a local directory (temporary name, fsync, rename, fsync the directory)
//!   OpenDalTarget an S3 bucket, Azure Blob container or SFTP directory through OpenDAL
//! ```
//!
//! Invariants: an object is never visible under its final key before it is complete; putting an
//! object that is already present is harmless (keys are content-addressed, so it is the same bytes).
//! A copy already present counts as stored only as far as a cheap check allows: its size, and no
//! damage record on its node ([`DamageBook`]); a copy recorded damaged is written again over it.

mod damage;
mod fs;
mod layout;
mod limit;
pub(crate) mod node;
mod opendal;
mod replicate;
mod retry;
mod s3_archive;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Result;

pub use self::opendal::{AzblobOptions, KnownHosts, OpenDalTarget, S3Options, SftpOptions};
pub use damage::{damage_key, damaged_data_key, DamageBook, DamageRecord, FoundBy, DAMAGED_PREFIX};
pub use fs::FsTarget;
pub use layout::{
    archived, data_key, manifest_key, receipt_key, CONFIG_KEY, DATA_PREFIX, INDEX_EXT, RUNS_PREFIX,
    SNAPSHOTS_PREFIX,
};
pub use limit::{LimitedTarget, Paced, RateLimiter};
pub use node::NodeUrl;
pub use replicate::{rendezvous_order, Receipt, Replicator};
pub use retry::{Backoff, RetryingTarget};
pub use s3_archive::{RetrievalAnswer, ARCHIVE_CLASSES};

/// A key inside a node's job directory, `/`-separated, never starting with `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// A key from trusted text (built by [`layout`] or read from a listing).
    pub fn new(key: impl Into<String>) -> Self {
        ObjectKey(key.into())
    }

    /// A key from untrusted text (a manifest): refuses absolute keys and `..`.
    pub fn from_untrusted(key: &str) -> Result<Self> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(crate::Error::integrity(format!(
                "refusing object key {key:?}"
            )));
        }
        Ok(ObjectKey(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The bytes of a put: a staged file (read again on every attempt) or a small buffer.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A file in staging.
    File(&'a Path),
    /// Bytes in memory (manifests, markers).
    Bytes(&'a [u8]),
    /// Another payload, read at a node's `max_rate`.
    Paced(&'a Payload<'a>, &'a RateLimiter),
}

impl Payload<'_> {
    /// Opens the payload for one attempt.
    pub fn open(&self) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Payload::File(p) => Ok(Box::new(std::fs::File::open(p)?)),
            Payload::Bytes(b) => Ok(Box::new(*b)),
            Payload::Paced(p, limiter) => Ok(Box::new(Paced::new(p.open()?, limiter))),
        }
    }

    /// The payload's length.
    pub fn len(&self) -> std::io::Result<u64> {
        match self {
            Payload::File(p) => Ok(std::fs::metadata(p)?.len()),
            Payload::Bytes(b) => Ok(b.len() as u64),
            Payload::Paced(p, _) => p.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Whether an object can be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// It can be read.
    Readable,
    /// It is in an archive class and no retrieval was asked for (or the last one expired).
    Archived,
    /// A retrieval is under way.
    Retrieving,
}

/// An object's storage class and whether it can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectClass {
    /// The class the store reports; `None` where the store has no classes.
    pub class: Option<String>,
    /// Whether it can be read now.
    pub readiness: Readiness,
    /// Its size in bytes.
    pub size: u64,
}

impl ObjectClass {
    /// An object of `size` bytes in a store without classes: always readable.
    pub fn readable(size: u64) -> Self {
        ObjectClass {
            class: None,
            readiness: Readiness::Readable,
            size,
        }
    }
}

/// How fast (and at what price) an archived object is made readable, in S3's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalTier {
    /// The cheapest: within 12 hours (Flexible Retrieval), 48 hours (Deep Archive).
    Bulk,
    /// 3–5 hours (Flexible Retrieval), 12 hours (Deep Archive).
    Standard,
    /// 1–5 minutes, Flexible Retrieval only.
    Expedited,
}

impl RetrievalTier {
    /// The name S3 uses.
    pub fn as_s3(self) -> &'static str {
        match self {
            RetrievalTier::Bulk => "Bulk",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Expedited => "Expedited",
        }
    }
}

/// One storage node, rooted at the job's directory on that node.
///
/// Contract: `put` is atomic (the object appears whole or not at all) and replaces an existing
/// object; `get` of a missing key and `stat` of a missing key are `NotFound` / `None`; `list` returns
/// the complete keys under a prefix, never temporary objects. Errors carry the node's name and say
/// whether they are temporary.
pub trait Target: Send + Sync + fmt::Debug {
    /// The node's name.
    fn name(&self) -> &str;
    /// Stores `payload` under `key`, atomically.
    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()>;
    /// Reads an object.
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>>;
    /// The size of an object, `None` when it does not exist.
    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>>;
    /// The keys under `prefix` (which ends with `/`), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<()>;
    /// Stores `bytes` under `key` only when no object is there: `Ok(true)` when this call made
    /// it, `Ok(false)` when one was there already (left as it was). Atomic where the store can
    /// say so (`O_EXCL`-like on a directory, `If-None-Match: *` on S3); this default checks first
    /// and so races.
    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        if self.stat(key)?.is_some() {
            return Ok(false);
        }
        self.put(key, Payload::Bytes(bytes)).map(|()| true)
    }
    /// A local path to the object when the node is a local directory, so readers can skip a copy.
    fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
        None
    }
    /// Removes temporary objects that writers which died left behind; returns how many.
    fn remove_temporaries(&self) -> Result<usize> {
        Ok(0)
    }
    /// How many requests were sent again so far (by a retrying layer), for the run's metrics.
    fn retries(&self) -> u64 {
        0
    }
    /// The storage class the node writes data files in (`storage_class` in its entry); `None`
    /// for the store's default.
    fn storage_class(&self) -> Option<&str> {
        None
    }
    /// An object's class and whether it can be read now; `None` when it does not exist. A store
    /// without classes answers with [`ObjectClass::readable`].
    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        Ok(self.stat(key)?.map(ObjectClass::readable))
    }
    /// Asks for a readable copy of an archived object, kept `days` days.
    fn request_retrieval(
        &self,
        _key: &ObjectKey,
        _tier: RetrievalTier,
        _days: u32,
    ) -> Result<RetrievalAnswer> {
        Err(crate::Error::config(format!(
            "node {} keeps no archive class: nothing to retrieve",
            self.name()
        )))
    }
}

/// Reads a small object (a marker, a manifest) into memory.
pub(crate) fn read_small(node: &dyn Target, key: &ObjectKey) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    node.get(key)?.read_to_end(&mut buf).map_err(|e| {
        crate::Error::target(format!("cannot read {key}"))
            .with_context("node", node.name())
            .with_source(e)
    })?;
    Ok(buf)
}

/// A node shared by the threads of a run.
pub type SharedTarget = std::sync::Arc<dyn Target>;

/// Puts `bytes` under `key` on every node that takes it; an error (the last node's) only when
/// none does. For small objects that any one node can answer for: locks, receipts, keys.
pub fn put_on_any(nodes: &[SharedTarget], key: &ObjectKey, bytes: &[u8]) -> Result<()> {
    let mut last = None;
    let mut written = 0;
    for n in nodes {
        match n.put(key, Payload::Bytes(bytes)) {
            Ok(()) => written += 1,
            Err(e) => last = Some(e),
        }
    }
    match (written, last) {
        (0, Some(e)) => Err(e),
        _ => Ok(()),
    }
}
