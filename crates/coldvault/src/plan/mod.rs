//! The split module: a [`Job`](crate::Job) becomes a [`Plan`], a list of [`TaskSpec`]s.
//!
//! Plans are deterministic and serialisable: the same job over the same data plans the same tasks
//! with the same ids, and a task spec is all a worker (here or on a Spark executor) needs besides
//! the job. Invariant: the tasks of a plan cover every byte of every file and every row of every
//! table exactly once (file-tree ranges partition the whole walk order, table ranges the whole key
//! space, with unbounded first and last ranges so that nothing added later falls between them).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job::{Job, Source};
use crate::path::RelPath;

/// A task's id: derived from the job's name, its source and the task's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// The id of a task of `job` with `kind`.
    pub fn derive(job: &Job, kind: &TaskKind) -> TaskId {
        let mut h = blake3::Hasher::new();
        h.update(job.name.as_bytes());
        h.update(&[0]);
        h.update(job.source.type_name().as_bytes());
        h.update(&[0]);
        // A plain serialisation of the kind is stable: field order is fixed by the type.
        let kind_json = serde_json::to_vec(kind).unwrap_or_default();
        h.update(&kind_json);
        TaskId(h.finalize().to_hex()[..16].to_string())
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

/// What one map task reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// The entries of a file tree whose paths fall in `[start, end)` of the walk order, except the
    /// files in `split_files`, which are larger than `target_bytes` and go in `FilePart` tasks.
    Files {
        /// First path (inclusive); `None` is the start of the tree.
        start: Option<RelPath>,
        /// End path (exclusive); `None` is the end of the tree.
        end: Option<RelPath>,
        /// Large files in this range that other tasks store in parts.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        split_files: Vec<RelPath>,
    },
    /// Bytes `[offset, offset + len)` of one large file; the last part reads to the end of the file.
    FilePart {
        /// The file.
        path: RelPath,
        /// First byte.
        offset: u64,
        /// Bytes in this part (planned).
        len: u64,
        /// This part's number, from 0.
        part: u32,
        /// How many parts the file has.
        parts: u32,
    },
    /// Rows of a PostgreSQL table in `[start, end)` of its key or of its blocks.
    PgRange {
        /// `schema.table`.
        table: String,
        /// How the table is split.
        split: crate::source::postgres::PgSplit,
        /// First key or block (inclusive); `None` is unbounded.
        start: Option<i64>,
        /// End key or block (exclusive); `None` is unbounded.
        end: Option<i64>,
        /// Only these columns; every column when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<String>,
        /// The condition every row must meet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
    },
    /// Rows of a MySQL / MariaDB table in `[start, end)` of its key.
    MyRange {
        /// The table.
        table: String,
        /// How the table is split.
        split: crate::source::mysql::MySplit,
        /// First key (inclusive); `None` is unbounded.
        start: Option<i64>,
        /// End key (exclusive); `None` is unbounded.
        end: Option<i64>,
        /// The columns read, in the order of the data file.
        columns: Vec<crate::source::mysql::MyColumn>,
        /// The condition every row must meet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
    },
    /// Rows of a table whose rowid lies in `[start, end)`.
    Table {
        /// The table.
        table: String,
        /// First rowid (inclusive); `None` is unbounded.
        start: Option<i64>,
        /// End rowid (exclusive); `None` is unbounded.
        end: Option<i64>,
    },
}

impl TaskKind {
    /// A short name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Files { .. } => "files",
            TaskKind::FilePart { .. } => "file_part",
            TaskKind::Table { .. } => "table",
            TaskKind::PgRange { .. } => "pg_range",
            TaskKind::MyRange { .. } => "mysql_range",
        }
    }

    /// The data file's extension for this kind.
    pub fn data_ext(&self) -> &'static str {
        match self {
            TaskKind::Files { .. } => "tar.zst",
            TaskKind::FilePart { .. } => "part.zst",
            TaskKind::Table { .. } => "sql.zst",
            TaskKind::PgRange { .. } => "copy.zst",
            TaskKind::MyRange { .. } => "tsv.zst",
        }
    }
}

/// One map task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Deterministic id.
    pub id: TaskId,
    /// What it reads.
    #[serde(flatten)]
    pub kind: TaskKind,
    /// About how many bytes it reads.
    pub estimated_bytes: u64,
    /// About how many files or rows it reads.
    pub estimated_items: u64,
    /// The database snapshot every task of the run reads (not part of the task's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When the backup run started: a task that stores its data file writes a receipt under it,
    /// which a resumed run reuses (not part of the task's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started: Option<String>,
    /// A file-tree task's fingerprint of the metadata of what it reads (not part of its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The tasks of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The tasks, in the order they were planned.
    pub tasks: Vec<TaskSpec>,
}

impl Plan {
    /// Plans `job` by reading its source's structure (not its data).
    pub fn new(job: &Job) -> Result<Plan> {
        let mut prints = Vec::new();
        let kinds = match &job.source {
            Source::Fs { path } => {
                crate::source::fs::plan_fingerprinted(path, job.split.target_bytes)?
                    .into_iter()
                    .map(|(k, b, i, p)| {
                        prints.push(p);
                        (k, b, i)
                    })
                    .collect()
            }
            Source::Sqlite { path, tables } => {
                crate::source::sqlite::plan(path, tables, job.split.max_rows)?
            }
            Source::Postgres(db) => crate::source::postgres::plan(db, job.split.max_rows)?,
            Source::Mysql(db) => crate::source::mysql::plan(db, job.split.max_rows)?,
        };
        let mut prints = prints.into_iter();
        let tasks = kinds
            .into_iter()
            .map(|(kind, estimated_bytes, estimated_items)| TaskSpec {
                id: TaskId::derive(job, &kind),
                kind,
                estimated_bytes,
                estimated_items,
                snapshot: None,
                run_started: None,
                fingerprint: prints.next(),
            })
            .collect();
        Ok(Plan { tasks })
    }

    /// The sum of the tasks' estimated bytes.
    pub fn estimated_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.estimated_bytes).sum()
    }
}
