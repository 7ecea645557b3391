//! Sources: where a job's data comes from, and where a restore puts it back.
//!
//! One module per kind of source. Each plans the tasks of a selection (`plan`), reads one task as
//! a stream of encoded bytes into a writer (`read_*`), and restores from those bytes (in
//! [`crate::restore`]). The encodings are open formats: a tar (pax) stream for file trees, raw byte
//! ranges for the parts of large files, SQL statements in the form of the `sqlite3` shell's `.dump`
//! for SQLite tables, `COPY`'s text format for PostgreSQL and `LOAD DATA`'s for MySQL.

pub mod fs;
pub mod mysql;
pub mod mysql_snapshot;
pub mod postgres;
pub mod postgres_schema;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// `host:port/db` of a database URL, for messages (never the user or a secret).
pub fn where_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.rsplit('@').next().unwrap_or(rest).to_owned()
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
    /// Entries that cannot be stored (sockets, devices, FIFOs) and were left out.
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

/// Keeps the tables that `patterns` name (every table when there are none). A pattern that names
/// no table is an error naming the pattern and `place`, so a typo never backs up less than meant.
pub(crate) fn select_tables<T>(
    all: Vec<T>,
    patterns: &[String],
    place: &str,
    matches: impl Fn(&glob::Pattern, &T) -> bool,
) -> crate::Result<Vec<T>> {
    if patterns.is_empty() {
        return Ok(all);
    }
    let mut globs = Vec::with_capacity(patterns.len());
    for p in patterns {
        let g = glob::Pattern::new(p).map_err(|e| {
            crate::Error::config(format!(
                "[source] tables: {p:?} is not a valid pattern: {e}"
            ))
        })?;
        if !all.iter().any(|t| matches(&g, t)) {
            return Err(crate::Error::config(format!(
                "[source] tables: {p:?} matches no table in {place}"
            )));
        }
        globs.push(g);
    }
    Ok(all
        .into_iter()
        .filter(|t| globs.iter().any(|g| matches(g, t)))
        .collect())
}
