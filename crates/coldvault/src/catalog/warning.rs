//! What a read left out or found changing, as data: each warning names the entry (a path inside
//! the source), the problem and the cause. Warnings travel with the task that met them (in its
//! receipt and its manifest entry), so a snapshot says by itself what it does not hold.

use serde::{Deserialize, Serialize};

/// One entry a backup could not store as it found it, or one repository problem a run met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The entry's path relative to the source's root (`""` for a warning about the run itself).
    pub path: String,
    /// What happened.
    pub problem: Problem,
    /// The cause, in words.
    pub detail: String,
}

/// The kinds of [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// It changed while it was read, every time: the snapshot holds its last complete read, whose
    /// length is what was read (never padded or cut).
    Changed,
    /// A file stored in parts whose parts never came from one version of it: left out.
    KeptChanging,
    /// It was removed between planning and reading: not in the snapshot (it no longer existed).
    Vanished,
    /// It could not be read (permission denied, an I/O error): left out.
    Unreadable,
    /// A kind of entry no archive holds (a socket): left out.
    NotStored,
    /// Metadata that could not be read or written (an extended attribute, an ACL).
    Metadata,
    /// Not about an entry: a node left out, a stale lock broken, a manifest that missed a node.
    Repository,
}

impl Problem {
    /// Whether an entry with this problem is missing from a snapshot that should hold it: such a
    /// snapshot is incomplete, and the backup exits 3.
    pub fn left_out(self) -> bool {
        matches!(self, Problem::Unreadable | Problem::KeptChanging)
    }

    /// The name used in JSON and in the human summary.
    pub fn name(self) -> &'static str {
        match self {
            Problem::Changed => "changed",
            Problem::KeptChanging => "kept_changing",
            Problem::Vanished => "vanished",
            Problem::Unreadable => "unreadable",
            Problem::NotStored => "not_stored",
            Problem::Metadata => "metadata",
            Problem::Repository => "repository",
        }
    }
}

impl Warning {
    /// A warning about `path`.
    pub fn new(path: impl Into<String>, problem: Problem, detail: impl Into<String>) -> Self {
        Warning {
            path: path.into(),
            problem,
            detail: detail.into(),
        }
    }

    /// A warning about the run itself, not an entry.
    pub fn repository(detail: impl Into<String>) -> Self {
        Warning::new("", Problem::Repository, detail)
    }
}

/// `warnings` once per entry and problem, in order: every part of a vanished file says so, a
/// snapshot and a report say it once.
pub fn once_each<'a>(warnings: impl IntoIterator<Item = &'a Warning>) -> Vec<&'a Warning> {
    let mut seen = std::collections::BTreeSet::new();
    warnings
        .into_iter()
        .filter(|w| seen.insert((&w.path, w.problem)))
        .collect()
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}: {}", self.path, self.problem.name(), self.detail)
        }
    }
}
