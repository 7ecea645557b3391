//! Entries that are neither directories, symlinks nor regular files: sockets, FIFOs and device
//! nodes. They are not stored: each is left out with a warning naming it.

use std::fs::Metadata;
use std::os::unix::fs::FileTypeExt;

use super::notes::Notes;
use crate::catalog::ReadStats;
use crate::path::RelPath;

/// Notes an entry that is not stored (a socket, a FIFO, a device node).
pub(super) fn leave_out(rel: &RelPath, meta: &Metadata, stats: &mut ReadStats, notes: &mut Notes) {
    stats.skipped += 1;
    let (problem, detail) = if meta.file_type().is_socket() {
        (
            "socket not stored",
            "a socket cannot be archived; the program that listens on it makes it again",
        )
    } else {
        (
            "entry not stored",
            "a FIFO or device node: coldvault stores files, directories and symlinks only",
        )
    };
    notes.note(rel, problem, detail);
}
