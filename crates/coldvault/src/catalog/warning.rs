//! What a backup or restore could not keep as it was, naming the entry ([`Warning`]): stored in
//! manifests (a task's `warnings`, absent when empty, so older manifests read as before).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Something a backup or restore could not keep as it was, naming the entry: a socket left
/// out, an attribute a restore without privileges could not set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The entry, relative to the tree's root (lossy UTF-8 for other names).
    pub path: String,
    /// What was not kept, in a few words ("socket not stored").
    pub problem: String,
    /// Why, or what exactly.
    pub detail: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.problem, self.detail)
    }
}
