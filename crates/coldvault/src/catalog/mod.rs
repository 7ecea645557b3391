//! The catalog: snapshot manifests and the repository marker, their ids and their encoding.
//!
//! A manifest is JSON with a `format` version. It lists every task of the snapshot with its
//! parameters, what it read and the [`Receipt`] of its data file (key, size, BLAKE3, nodes). It is
//! written to every node only after every task has a receipt, under a temporary name and renamed,
//! so a snapshot is listed whole or not at all. A reader refuses a format newer than it knows.

use serde::{Deserialize, Serialize};

mod attrs;
pub(crate) mod checked;
mod schema;
mod task;
mod warning;

pub use attrs::{FileAttrs, XattrValue};
pub use schema::{MyRoutine, MySequence, MySession};

pub use schema::{MyObject, MysqlSchema, PostgresSchema, Schema, SchemaObject, SqliteSchema};
pub use task::{
    ColumnKind, FileMeta, FileVersion, FilesTask, MyColumn, MyRangeTask, MySplit, PartTask,
    PgRangeTask, PgSplit, ReadStats, TableTask, TaskKind,
};
pub use warning::{once_each, Problem, Warning};

use crate::error::{Error, Result};
use crate::job::Job;
use crate::store::Receipt;

/// The manifest and marker format this build writes and the newest it reads: 6 records the inode
/// of a file with other links in indexes (a reader of 5 would take them for damaged indexes); 5
/// writes a delta's index as a patch; 4 may hold deltas
/// with a touched list (files whose metadata alone changed, which a reader of 3 would restore
/// with their old metadata); 3 may hold ranges stored as deltas (which a reader of 2 would
/// restore as their first data file alone: it must refuse them); 2 stores each document in a
/// self-checking envelope ([`checked`]); 1 (read still) had none.
pub const FORMAT_VERSION: u32 = 6;

/// A snapshot's id: 16 hex digits; a unique prefix names it too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A fresh id for a snapshot of `job` taken at `time`.
    pub fn generate(job: &str, time: &str) -> SnapshotId {
        let mut h = blake3::Hasher::new();
        h.update(job.as_bytes());
        h.update(time.as_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&fastrand::u64(..).to_le_bytes());
        SnapshotId(h.finalize().to_hex()[..16].to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..8.min(self.0.len())]
    }

    fn parse(s: &str) -> Result<SnapshotId> {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(Error::integrity(format!("{s:?} is not a snapshot id")))
        }
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id: derived from the job's name, its source and the task's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// The id of a task of `job` with `kind`.
    pub fn derive(job: &Job, kind: &TaskKind) -> Result<TaskId> {
        let mut h = blake3::Hasher::new();
        h.update(job.name.as_bytes());
        h.update(&[0]);
        h.update(job.source.type_name().as_bytes());
        h.update(&[0]);
        // A plain serialisation of the kind is stable: field order is fixed by the type.
        h.update(&crate::util::to_json(kind, "a task")?);
        Ok(TaskId(h.finalize().to_hex()[..16].to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One task of a committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// The task's id.
    pub id: TaskId,
    /// What it read.
    #[serde(flatten)]
    pub kind: TaskKind,
    /// Its data file.
    pub data: Receipt,
    /// What reading found.
    pub stats: ReadStats,
    /// For a file part: the file's metadata, to restore once every part is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileMeta>,
    /// The fingerprint of the metadata of what the task read (file trees): the next backup
    /// reuses this entry when the fingerprint is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// What the task left out, found changing, or could not keep (a socket), naming each entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// A file-tree range: the index of its entries (each path with a digest of its metadata),
    /// which the next backup compares the tree with to store only what changed; as the snapshot
    /// holds them once the patches of the deltas after the first `indexed_deltas` are applied.
    /// Not needed to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Receipt>,
    /// How many of the deltas `index` includes; absent, all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_deltas: Option<usize>,
    /// A file-tree range stored as changes: `data` holds the range as a backup read it whole,
    /// and each delta, oldest first, what changed in a later backup. Restoring applies them in
    /// order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
    /// A file-tree range with deltas: the bytes of the files its layers hold that this snapshot
    /// no longer has (deleted, or replaced by a newer version), as they were read. A restore
    /// reads them for nothing; the next backup reads the range whole when they pass
    /// `rewrite_percent` of the range.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What changed in a file-tree range since the snapshot before: the entries added or changed (a
/// tar data file of them alone), the paths no longer there, and the files whose metadata alone
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The entries added or changed, as a tar data file.
    pub data: Receipt,
    /// The paths of the range that are gone (NUL-terminated, in walk order); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Receipt>,
    /// The regular files whose content is still what an older layer holds, with their new mode,
    /// owner, group and modification time (NUL-terminated fields); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched: Option<Receipt>,
    /// The patch of the range's index: the records of what the delta stored or touched, and of
    /// the paths gone; absent when the delta wrote the entry's index whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Receipt>,
}

impl TaskEntry {
    /// Every data file the entry names: what a restore reads ([`TaskEntry::layers`]), its index
    /// and the deltas' patches of it.
    pub fn receipts(&self) -> Vec<&Receipt> {
        let mut all = self.layers();
        all.extend(&self.index);
        all.extend(self.deltas.iter().filter_map(|d| d.index.as_ref()));
        all
    }

    /// The deltas whose index patches apply after `index`.
    pub fn index_patches(&self) -> &[Delta] {
        let n = self.indexed_deltas.unwrap_or(self.deltas.len());
        self.deltas.get(n..).unwrap_or_default()
    }

    /// The data files a restore of the entry reads: its data file, then each delta's data file,
    /// deleted list and touched list, oldest first.
    pub fn layers(&self) -> Vec<&Receipt> {
        let mut all = vec![&self.data];
        for d in &self.deltas {
            all.push(&d.data);
            all.extend(&d.deleted);
            all.extend(&d.touched);
        }
        all
    }

    /// [`TaskEntry::receipts`], to change (a repair's new node lists).
    pub fn receipts_mut(&mut self) -> Vec<&mut Receipt> {
        let mut all = vec![&mut self.data];
        for d in &mut self.deltas {
            all.push(&mut d.data);
            all.extend(&mut d.deleted);
            all.extend(&mut d.touched);
            all.extend(&mut d.index);
        }
        all.extend(&mut self.index);
        all
    }
}

/// Totals over the tasks of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Tasks.
    pub tasks: u64,
    /// What the tasks read, added up.
    #[serde(flatten)]
    pub read: ReadStats,
    /// Bytes of data files (one copy each).
    pub bytes_stored: u64,
}

/// Where a snapshot's data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `fs`, `sqlite`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The path or address (never a secret).
    pub location: String,
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format version.
    pub format: u32,
    /// The snapshot's id.
    pub id: SnapshotId,
    /// The job's name.
    pub job: String,
    /// When the backup started, RFC 3339 UTC with nanoseconds (sorts as text).
    pub time: String,
    /// Where the data came from.
    pub source: SourceInfo,
    /// Copies per data file.
    pub replicas: usize,
    /// Totals.
    pub totals: Totals,
    /// The tasks.
    pub tasks: Vec<TaskEntry>,
    /// A SQLite source's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteSchema>,
    /// A PostgreSQL source's schema and sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSchema>,
    /// A MySQL / MariaDB source's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MysqlSchema>,
}

impl Manifest {
    /// Records a source's schema in the field of its kind.
    pub(crate) fn set_schema(&mut self, schema: Schema) {
        match schema {
            Schema::Sqlite(s) => self.sqlite = Some(s),
            Schema::Postgres(s) => self.postgres = Some(*s),
            Schema::Mysql(s) => self.mysql = Some(s),
        }
    }
}

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

impl Manifest {
    /// Encodes as stored: JSON in its self-checking envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        // Compact: a manifest names every data file of every task's chain, and one is written
        // per snapshot to every node (`jq .` shows it indented).
        let body = crate::util::to_json(self, "a manifest")?;
        Ok(checked::wrap(FORMAT_VERSION, &body))
    }

    /// Decodes a manifest written by any version up to [`FORMAT_VERSION`], its checksum checked.
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        Self::decode_checked(bytes).map(|(m, _)| m)
    }

    /// Decodes as [`Manifest::decode`] does, with the digest of its body: copies on two nodes
    /// with the same digest are the same manifest.
    pub fn decode_checked(bytes: &[u8]) -> Result<(Manifest, String)> {
        let opened = checked::open(bytes, "the manifest", FORMAT_VERSION)?;
        let format = serde_json::from_slice::<FormatOnly>(opened.body)
            .map_err(|e| Error::integrity("not a coldvault manifest").with_source(e))?
            .format;
        if format > FORMAT_VERSION {
            return Err(Error::integrity(format!(
                "manifest format {format} is newer than this coldvault reads ({FORMAT_VERSION}); upgrade coldvault"
            )));
        }
        let m: Manifest = serde_json::from_slice(opened.body)
            .map_err(|e| Error::integrity("malformed manifest").with_source(e))?;
        SnapshotId::parse(m.id.as_str())?;
        // A checksum names spool files and data keys: 64 hex digits, nothing else.
        if let Some(bad) = m
            .receipts()
            .into_iter()
            .find(|r| r.checksum.len() != 64 || !r.checksum.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Error::integrity(format!(
                "malformed manifest: the checksum of data file {} is not 64 hex digits",
                bad.key
            )));
        }
        Ok((m, opened.digest))
    }

    /// Every data file the snapshot needs: the tasks' and the schema's.
    pub fn receipts(&self) -> Vec<&Receipt> {
        let mut all: Vec<&Receipt> = self.tasks.iter().flat_map(|t| t.receipts()).collect();
        if let Some(pg) = &self.postgres {
            all.extend([&pg.pre_data, &pg.post_data]);
            all.extend(pg.drops.iter().chain(&pg.large_objects));
        }
        all
    }

    /// What the snapshot's tasks left out or found changing, once per entry and problem (every
    /// part of a vanished file says so).
    pub fn warnings(&self) -> Vec<&Warning> {
        warning::once_each(self.tasks.iter().flat_map(|t| &t.warnings))
    }

    /// How many entries the snapshot should hold but does not (unreadable, kept changing): a
    /// snapshot with any is incomplete.
    pub fn left_out(&self) -> usize {
        self.warnings()
            .into_iter()
            .filter(|w| w.problem.left_out())
            .count()
    }

    /// The sum of the tasks' stats.
    pub fn totals_of(tasks: &[TaskEntry]) -> Totals {
        let mut t = Totals {
            tasks: tasks.len() as u64,
            ..Totals::default()
        };
        for task in tasks {
            t.read.add(&task.stats);
            t.bytes_stored += task.receipts().iter().map(|r| r.size).sum::<u64>();
        }
        t
    }
}

/// The repository marker on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoMarker {
    /// The format version.
    pub format: u32,
    /// Random id shared by every node of one repository.
    pub repository_id: String,
    /// The job that created it.
    pub job: String,
}

impl RepoMarker {
    /// Encodes as stored: JSON in its self-checking envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = crate::util::to_json_pretty(self, "the repository marker")?;
        Ok(checked::wrap(FORMAT_VERSION, &body))
    }

    /// Decodes a marker, its checksum checked, refusing newer formats.
    pub fn decode(bytes: &[u8]) -> Result<RepoMarker> {
        let opened = checked::open(bytes, "the repository marker", FORMAT_VERSION)?;
        let m: RepoMarker = serde_json::from_slice(opened.body)
            .map_err(|e| Error::integrity("malformed repository marker").with_source(e))?;
        if m.format > FORMAT_VERSION {
            return Err(Error::integrity(format!(
                "repository format {} is newer than this coldvault reads ({FORMAT_VERSION})",
                m.format
            )));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::now_rfc3339;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            id: SnapshotId::generate("j", "t"),
            job: "j".into(),
            time: now_rfc3339(),
            source: SourceInfo {
                kind: "fs".into(),
                location: "/x".into(),
            },
            replicas: 2,
            totals: Totals::default(),
            tasks: vec![],
            sqlite: None,
            postgres: None,
            mysql: None,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn newer_format_is_refused_clearly() {
        let mut m = sample();
        m.format = FORMAT_VERSION + 1;
        let e = Manifest::decode(&m.encode().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer than this coldvault"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"{", b"[]", b"{\"format\":1}", b"\xff\xfe"] {
            assert!(Manifest::decode(bad).is_err());
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::util::now_rfc3339;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Arbitrary bytes are a manifest or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Manifest::decode(&bytes);
            let _ = RepoMarker::decode(&bytes);
        }

        /// A real manifest with one byte changed or a piece cut out decodes or errs, never panics.
        #[test]
        fn damaged_manifests_never_panic(at in 0usize..2000, byte in any::<u8>(), cut in 0usize..50) {
            let m = Manifest {
                format: FORMAT_VERSION,
                id: SnapshotId::generate("j", "t"),
                job: "j".into(),
                time: now_rfc3339(),
                source: SourceInfo { kind: "fs".into(), location: "/x".into() },
                replicas: 2,
                totals: Totals::default(),
                tasks: vec![],
                sqlite: None,
                postgres: None,
                mysql: None,
            };
            let mut bytes = m.encode().unwrap();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = Manifest::decode(&bytes);
            let end = (i + cut).min(bytes.len());
            bytes.drain(i..end);
            let _ = Manifest::decode(&bytes);
        }
    }
}
