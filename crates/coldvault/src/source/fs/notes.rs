//! What a file-tree backup or restore could not keep as it was, one [`Warning`] per case, each
//! naming the entry: a socket left out, an attribute, ACL, device node or hard link a restore
//! could not make. Reading a task and restoring a data file each collect theirs in a [`Notes`]
//! and hand them back beside their stats; nothing of the kind is dropped without one.

use crate::catalog::{Problem, Warning};
use crate::path::RelPath;

/// The warnings of one task read or one restore.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Warning>);

impl Notes {
    /// Notes that `what` (a few words: "socket not stored"), a problem of `kind`, happened to
    /// `path` (the tree's root is `.`).
    pub(crate) fn note(
        &mut self,
        path: &RelPath,
        kind: Problem,
        what: &str,
        detail: impl Into<String>,
    ) {
        let path = match path.is_root() {
            true => ".".to_owned(),
            false => String::from_utf8_lossy(path.as_bytes()).into_owned(),
        };
        self.0.push(Warning::new(
            path,
            kind,
            format!("{what}: {}", detail.into()),
        ));
    }

    /// The warnings, in the order they were noted.
    /// Adds what `other` noted.
    pub(crate) fn extend(&mut self, other: Notes) {
        self.0.extend(other.0);
    }

    pub(crate) fn into_warnings(self) -> Vec<Warning> {
        self.0
    }

    /// The warnings as lines: `path: problem (detail)`.
    pub(crate) fn into_lines(self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Why an operation needing privileges failed, in words: "Operation not permitted (needs root)".
pub(crate) fn cause(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!("{e} (needs root)"),
        _ => e.to_string(),
    }
}
