//! Damage records: a stored copy that `verify`, a restore or `repair` found damaged, written down
//! on the node that holds it, so that the next backup neither takes that copy as stored nor the
//! task that made it as unchanged, and heals it from the source.
//!
//! A record is a small JSON object ([`DamageRecord`]) at `damaged/<data key>.json` — for
//! `data/4e/4e07….tar.zst`, `damaged/data/4e/4e07….tar.zst.json` — on the node whose copy is
//! damaged. The name is the data key below `damaged/`, so one LIST of `damaged/` per node gives
//! every recorded key without reading a record, and the key comes back from the name without
//! escaping. [`DamageBook`] holds what this process listed: a backup lists every node once at its
//! start; elsewhere (a Spark executor) a node is listed the first time a copy there is in question.
//!
//! Invariants:
//! - a record never removes data: it only makes a backup read a task again and write its copy
//!   again, atomically over the damaged one (a put replaces; a failed put leaves the old copy);
//! - a record is removed only after a put of the key's bytes succeeded on its node (by the
//!   replicator or by `repair`), never because a copy was merely found present;
//! - a record that outlives its damage (a verify racing a backup, a delete that failed) costs a
//!   task read and one copy written again, nothing else;
//! - records are never encrypted: they hold a key, a checksum, a node name and what was found,
//!   nothing of the source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ObjectKey, Payload, SharedTarget, Target};
use crate::error::{Error, Result};

/// Where damage records live.
pub const DAMAGED_PREFIX: &str = "damaged/";

/// The format version of a record.
const RECORD_FORMAT: u32 = 1;

/// The key of the record of damage to the copy of `data` on the node that holds it.
pub fn damage_key(data: &ObjectKey) -> ObjectKey {
    ObjectKey::new(format!("{DAMAGED_PREFIX}{data}.json"))
}

/// The data key a record's key names; `None` for anything else under `damaged/`.
pub fn damaged_data_key(record: &ObjectKey) -> Option<ObjectKey> {
    let inner = record
        .as_str()
        .strip_prefix(DAMAGED_PREFIX)?
        .strip_suffix(".json")?;
    ObjectKey::from_untrusted(inner).ok()
}

/// Who found the damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// `verify` (a wrong size, or with `--read-data` a wrong checksum).
    Verify,
    /// A restore that read the copy and found its checksum or size wrong.
    Restore,
    /// `repair`, for a copy it could not replace.
    Repair,
}

/// What was found wrong with one copy of a data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageRecord {
    /// The record's format version, 1.
    pub format: u32,
    /// The data file's key.
    pub key: ObjectKey,
    /// The node holding the damaged copy (the node the record is on).
    pub node: String,
    /// The BLAKE3 (hex) the copy should have: the checksum in the data file's receipt.
    pub checksum: String,
    /// The size in bytes the copy should have.
    pub size: u64,
    /// Who found it.
    pub found_by: FoundBy,
    /// When (RFC 3339 UTC).
    pub time: String,
    /// What was found, in words.
    pub detail: String,
}

impl DamageRecord {
    /// A record, made now, of damage to the copy of `data` on `node`.
    pub fn new(data: &super::Receipt, node: &str, found_by: FoundBy, detail: &str) -> Self {
        DamageRecord {
            format: RECORD_FORMAT,
            key: data.key.clone(),
            node: node.to_owned(),
            checksum: data.checksum.clone(),
            size: data.size,
            found_by,
            time: crate::util::now_rfc3339(),
            detail: detail.to_owned(),
        }
    }
}

/// What a listing of one node's `damaged/` gave.
#[derive(Debug, Clone)]
enum Listed {
    /// The data keys recorded damaged there.
    Keys(BTreeSet<ObjectKey>),
    /// The listing failed: nothing there is known, so no copy there is trusted unchecked.
    Failed,
}

/// The damage records of the nodes, as far as this process has listed them, by node name.
#[derive(Debug, Default)]
pub struct DamageBook {
    nodes: Mutex<BTreeMap<String, Listed>>,
}

impl DamageBook {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Listed>) -> T) -> T {
        f(&mut self.nodes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Lists `damaged/` on every node not listed yet, concurrently (one LIST each); returns the
    /// errors of the nodes that could not be listed.
    pub fn load(&self, nodes: &[SharedTarget]) -> Vec<Error> {
        let todo: Vec<&SharedTarget> = nodes
            .iter()
            .filter(|n| !self.with(|m| m.contains_key(n.name())))
            .collect();
        let results: Vec<(String, Result<Vec<ObjectKey>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = todo
                .iter()
                .map(|n| s.spawn(move || (n.name().to_owned(), n.list(DAMAGED_PREFIX))))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut errors = Vec::new();
        for (name, r) in results {
            let listed = match r {
                Ok(keys) => Listed::Keys(keys.iter().filter_map(damaged_data_key).collect()),
                Err(e) => {
                    errors.push(e.with_context("node", &name));
                    Listed::Failed
                }
            };
            self.with(|m| m.insert(name, listed));
        }
        errors
    }

    /// What is known of `node`, listing it first when it has not been.
    fn listed(&self, node: &dyn Target) -> Listed {
        if let Some(l) = self.with(|m| m.get(node.name()).cloned()) {
            return l;
        }
        let listed = match node.list(DAMAGED_PREFIX) {
            Ok(keys) => Listed::Keys(keys.iter().filter_map(damaged_data_key).collect()),
            Err(_) => Listed::Failed,
        };
        self.with(|m| m.entry(node.name().to_owned()).or_insert(listed).clone())
    }

    /// True when a node whose records were listed records `key` damaged. Nodes that could not
    /// be listed do not count here (a backup warns about them).
    pub fn recorded_anywhere(&self, key: &ObjectKey) -> bool {
        self.with(|m| {
            m.values()
                .any(|l| matches!(l, Listed::Keys(k) if k.contains(key)))
        })
    }

    /// True when `node`'s records, as listed already, name `key` (no listing is made here).
    pub fn recorded_on(&self, node: &str, key: &ObjectKey) -> bool {
        self.with(|m| matches!(m.get(node), Some(Listed::Keys(k)) if k.contains(key)))
    }

    /// Whether a copy of `key` found on `node` with the right size may count as stored: only when
    /// `node`'s records were listed and none names `key`.
    pub fn trusted_on(&self, node: &dyn Target, key: &ObjectKey) -> bool {
        matches!(self.listed(node), Listed::Keys(k) if !k.contains(key))
    }

    /// Writes `record` on `node` (the node holding the damaged copy) and notes it.
    pub fn record(&self, node: &dyn Target, record: &DamageRecord) -> Result<()> {
        let bytes = crate::util::to_json(record, "a damage record")?;
        let key = damage_key(&record.key);
        node.put(&key, Payload::Bytes(&bytes)).map_err(|e| {
            e.with_context("node", node.name())
                .with_context("key", &key)
        })?;
        self.with(|m| {
            if let Some(Listed::Keys(k)) = m.get_mut(node.name()) {
                k.insert(record.key.clone());
            }
        });
        Ok(())
    }

    /// Removes the record of `key` on `node`, once a good copy has been put there: when one is
    /// noted, or when `always` or the node's records could not be listed. Never touches data.
    pub fn clear(&self, node: &dyn Target, key: &ObjectKey, always: bool) -> Result<()> {
        let noted = self.with(|m| match m.get_mut(node.name()) {
            Some(Listed::Keys(k)) => k.remove(key),
            Some(Listed::Failed) => true,
            None => false,
        });
        if !(noted || always) {
            return Ok(());
        }
        let record = damage_key(key);
        node.delete(&record).map_err(|e| {
            e.with_context("node", node.name())
                .with_context("key", &record)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_key_names_its_data_key_and_gives_it_back() {
        let data = ObjectKey::new("data/4e/4e07c1.tar.zst");
        let rec = damage_key(&data);
        assert_eq!(rec.as_str(), "damaged/data/4e/4e07c1.tar.zst.json");
        assert_eq!(damaged_data_key(&rec), Some(data));
    }

    #[test]
    fn only_record_keys_give_a_data_key() {
        for k in [
            "damaged/data/4e/x.tar.zst",
            "runs/x.json",
            "damaged/.json",
            "damaged/../config.json",
            "damaged//x.json",
        ] {
            assert_eq!(damaged_data_key(&ObjectKey::new(k)), None, "{k}");
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let data = crate::store::Receipt {
            key: ObjectKey::new("data/ab/abcd.part.zst"),
            size: 42,
            checksum: "ab".repeat(32),
            nodes: vec!["n1".into()],
        };
        let r = DamageRecord::new(&data, "n1", FoundBy::Restore, "checksum mismatch");
        let text = String::from_utf8(crate::util::to_json(&r, "r").unwrap()).unwrap();
        assert!(text.contains(r#""found_by":"restore""#), "{text}");
        assert!(text.contains(r#""format":1"#), "{text}");
        let back: DamageRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
