//! Where things live inside a node's job directory.
//!
//! ```text
//! <node>/<directory>/config.json                  repository marker: format version, repository id
//! <node>/<directory>/data/<hh>/<blake3>.<ext>     data files, named by the BLAKE3 of their bytes
//! <node>/<directory>/snapshots/<id>.json          snapshot manifests, written last
//! <node>/<directory>/runs/<task id>.json          receipts of the unfinished run's stored tasks
//! <node>/<directory>/locks/<kind>-<id>.json       who is backing up or pruning
//! <node>/<directory>/damaged/<data key>.json      damage found on this node's copy of a data file
//! ```
//!
//! Data files are content-addressed, so a task run twice (a retry, a Spark speculation) stores the
//! same key, and an unchanged share of a tree stores nothing new.

use super::ObjectKey;

/// The repository marker.
pub const CONFIG_KEY: &str = "config.json";
/// Where data files live.
pub const DATA_PREFIX: &str = "data/";
/// Where manifests live.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Where the receipts of an unfinished run live.
pub const RUNS_PREFIX: &str = "runs/";

/// The key of a task's receipt in the unfinished run.
pub fn receipt_key(task: &str) -> ObjectKey {
    ObjectKey::new(format!("{RUNS_PREFIX}{task}.json"))
}

/// The extension of a file-tree range's index: a data file that backups read, kept out of an
/// archive class (see [`archived`]).
pub const INDEX_EXT: &str = "index.zst";

/// Whether a node with an archive storage class writes `key` in that class: every data file but
/// the indexes, which the next backup reads without asking for a retrieval.
pub fn archived(key: &str) -> bool {
    key.starts_with(DATA_PREFIX) && !key.ends_with(INDEX_EXT)
}

/// The key of a data file with BLAKE3 `checksum` (hex) and extension `ext`.
pub fn data_key(checksum: &str, ext: &str) -> ObjectKey {
    ObjectKey::new(format!("{DATA_PREFIX}{}/{checksum}.{ext}", &checksum[..2]))
}

/// The key of a snapshot's manifest.
pub fn manifest_key(snapshot: &str) -> ObjectKey {
    ObjectKey::new(format!("{SNAPSHOTS_PREFIX}{snapshot}.json"))
}
