//! The parameters of every kind of task and what reading one found, as plans and manifests hold
//! them. These are stored formats: a field added here needs a serde default so that older
//! manifests still read. Only `source/` interprets them.

use serde::{Deserialize, Serialize};

use super::FileAttrs;
use crate::path::RelPath;

/// What one map task reads: one variant per kind of task, each wrapping its source's own
/// parameters. The JSON form is the variant's name under `kind` beside the parameters' fields, as
/// in every manifest so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// A range of a file tree's walk order.
    Files(FilesTask),
    /// A part of one large file.
    FilePart(PartTask),
    /// A key or block range of a PostgreSQL table.
    PgRange(PgRangeTask),
    /// A key range of a MySQL / MariaDB table.
    MyRange(MyRangeTask),
    /// A rowid range of a SQLite table.
    Table(TableTask),
}

/// The entries of a file tree whose paths fall in `[start, end)` of the walk order, except the
/// files in `split_files`, which are larger than `target_bytes` and go in [`PartTask`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesTask {
    /// First path (inclusive); `None` is the start of the tree.
    pub start: Option<RelPath>,
    /// End path (exclusive); `None` is the end of the tree.
    pub end: Option<RelPath>,
    /// Large files in this range that other tasks store in parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split_files: Vec<RelPath>,
}

/// Bytes `[offset, offset + len)` of one large file; the last part reads to the end of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartTask {
    /// The file.
    pub path: RelPath,
    /// First byte.
    pub offset: u64,
    /// Bytes in this part (planned).
    pub len: u64,
    /// This part's number, from 0.
    pub part: u32,
    /// How many parts the file has.
    pub parts: u32,
}

/// Rows of a table whose rowid lies in `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableTask {
    /// The table.
    pub table: String,
    /// First rowid (inclusive); `None` is unbounded.
    pub start: Option<i64>,
    /// End rowid (exclusive); `None` is unbounded.
    pub end: Option<i64>,
}

/// Rows of a PostgreSQL table in `[start, end)` of its key or of its blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgRangeTask {
    /// `schema.table`.
    pub table: String,
    /// How the table is split.
    pub split: PgSplit,
    /// First key or block (inclusive); `None` is unbounded.
    pub start: Option<i64>,
    /// End key or block (exclusive); `None` is unbounded.
    pub end: Option<i64>,
    /// Only these columns; every column when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The condition every row must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A table small enough to be read whole on a connection kept between tasks (one COPY,
    /// not a new client and a new backend per table).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub small: bool,
}

impl PgRangeTask {
    /// Whether this range holds every row of its table the snapshot read: a table read whole by
    /// blocks. (A table split by a `split_by` key has a second range, of its NULL keys.)
    pub fn whole_table(&self) -> bool {
        matches!(self.split, PgSplit::Ctid) && self.start.is_none() && self.end.is_none()
    }
}

/// How a table's rows are split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgSplit {
    /// By an integer key column: rows with `start <= key < end`.
    Key(String),
    /// By physical block: rows with `(start,0) <= ctid < (end,0)`.
    Ctid,
    /// The rows whose `split_by` column is NULL (one task; ranges never hold them).
    Null(String),
}

/// Rows of a MySQL / MariaDB table in `[start, end)` of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyRangeTask {
    /// The table.
    pub table: String,
    /// How the table is split.
    pub split: MySplit,
    /// First key (inclusive); `None` is unbounded.
    pub start: Option<i64>,
    /// End key (exclusive); `None` is unbounded.
    pub end: Option<i64>,
    /// The columns read, in the order of the data file.
    pub columns: Vec<MyColumn>,
    /// The condition every row must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// How a table's rows are split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MySplit {
    /// By an integer column: rows with `start <= key < end`.
    Key(String),
    /// The rows whose `split_by` column is NULL.
    Null(String),
    /// The whole table (no integer key).
    Whole,
}

/// A column as it is read and loaded back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyColumn {
    /// The column's name.
    pub name: String,
    /// How its values travel.
    #[serde(default, skip_serializing_if = "ColumnKind::is_plain")]
    pub kind: ColumnKind,
}

/// How a column's values travel in the data file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// The server's text, loaded as bytes.
    #[default]
    Plain,
    /// BIT: read as an integer, loaded through a variable.
    Bit,
    /// A type that parses text in a character set (MariaDB's UUID, INET4, INET6): loaded through
    /// a variable converted to utf8mb4.
    Text,
}

impl ColumnKind {
    pub(crate) fn is_plain(&self) -> bool {
        *self == ColumnKind::Plain
    }

    pub(crate) fn of(data_type: &str) -> ColumnKind {
        match data_type.to_ascii_lowercase().as_str() {
            "bit" => ColumnKind::Bit,
            "uuid" | "inet4" | "inet6" => ColumnKind::Text,
            _ => ColumnKind::Plain,
        }
    }
}
impl TaskKind {
    /// The group of tasks this one must be read with, in one run of the source: the block
    /// ranges of one PostgreSQL table. A row updated between two runs moves to another block,
    /// so ranges of one table read under two snapshots could hold it twice or not at all.
    pub fn read_together(&self) -> Option<&str> {
        match self {
            TaskKind::PgRange(r) if r.split == PgSplit::Ctid => Some(&r.table),
            _ => None,
        }
    }

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

/// In words, for people: `files from a to b`, `part 2/3 of f at 0, 10 bytes`,
/// `table t key id 1 .. 100`.
impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// `table T BY START .. END`, unbounded ends as -inf / +inf.
        fn range(table: &str, by: &str, start: Option<i64>, end: Option<i64>) -> String {
            format!(
                "table {table} {by} {} .. {}",
                start.map_or("-inf".into(), |s| s.to_string()),
                end.map_or("+inf".into(), |e| e.to_string())
            )
        }
        let text = match self {
            TaskKind::Files(t) => format!(
                "files from {} to {}{}",
                t.start
                    .as_ref()
                    .map_or("the start".into(), |s| s.to_string()),
                t.end.as_ref().map_or("the end".into(), |s| s.to_string()),
                if t.split_files.is_empty() {
                    String::new()
                } else {
                    format!(" (less {} large files)", t.split_files.len())
                }
            ),
            TaskKind::FilePart(p) => format!(
                "part {}/{} of {} at {}, {} bytes",
                p.part + 1,
                p.parts,
                p.path,
                p.offset,
                p.len
            ),
            TaskKind::PgRange(r) => {
                let by = match &r.split {
                    PgSplit::Key(k) => format!("key {k}"),
                    PgSplit::Ctid => "blocks".into(),
                    PgSplit::Null(k) => format!("{k} IS NULL"),
                };
                range(&r.table, &by, r.start, r.end)
            }
            TaskKind::MyRange(r) => {
                let by = match &r.split {
                    MySplit::Key(k) => format!("key {k}"),
                    MySplit::Whole => "whole".into(),
                    MySplit::Null(k) => format!("{k} IS NULL"),
                };
                range(&r.table, &by, r.start, r.end)
            }
            TaskKind::Table(t) => range(&t.table, "rowid", t.start, t.end),
        };
        f.write_str(&text)
    }
}

/// What reading one task found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Regular files (or file parts) read.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Rows of a table.
    pub rows: u64,
    /// Bytes of file contents or table data read.
    pub bytes_read: u64,
    /// Entries that cannot be stored (sockets) and were left out.
    pub skipped: u64,
}

impl ReadStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &ReadStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.rows += other.rows;
        self.bytes_read += other.bytes_read;
        self.skipped += other.skipped;
    }
}

/// The metadata of a file, as restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Size.
    pub size: u64,
    /// Which version of the file was read (file parts): every part of one file must have the
    /// same. Absent in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<FileVersion>,
    /// Extended attributes and ACLs.
    #[serde(default, skip_serializing_if = "FileAttrs::is_empty")]
    pub attrs: FileAttrs,
}

/// What tells two versions of a file apart: a file whose version is the same before and after a
/// read was not changed by anyone during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: i64,
    /// Change time (of contents or metadata), seconds since the epoch.
    pub ctime: i64,
    /// Nanoseconds of the change time.
    pub ctime_nsec: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}
