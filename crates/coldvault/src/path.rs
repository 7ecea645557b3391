//! `RelPath`: a path inside a backed-up tree, as raw bytes.
//!
//! Names on Unix are bytes, not text: a `RelPath` keeps them exactly (non-UTF-8 names and names with
//! newlines included). Components are joined with `/`; there is no leading `/`, no `.` and no `..`
//! component, and the empty path is the root of the tree.
//!
//! The order of `RelPath`s is the order of a depth-first walk that visits each directory's entries
//! sorted by name: components are compared one after another, byte-wise. A directory sorts right
//! before everything inside it, so every subtree is one contiguous range; the planner cuts the walk
//! into ranges of that order and the reader prunes whole subtrees outside its range.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A relative path inside a tree, as bytes. See the module docs for its order.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The root of the tree.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Parses untrusted bytes (from a tar entry or a manifest): refuses absolute paths and `..`,
    /// drops `.` and empty components.
    pub fn from_untrusted(bytes: &[u8]) -> Result<Self> {
        if bytes.first() == Some(&b'/') {
            return Err(Error::integrity(format!(
                "refusing absolute path {}",
                RelPath(bytes.to_vec())
            )));
        }
        let mut out = RelPath::root();
        for comp in bytes.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    return Err(Error::integrity(format!(
                        "refusing path {} that leaves the target with '..'",
                        RelPath(bytes.to_vec())
                    )))
                }
                name => out = out.join(name),
            }
        }
        Ok(out)
    }

    /// This path with `name` appended. `name` must be one component.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// The path as text for people, bytes that are not UTF-8 replaced.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/').filter(|c| !c.is_empty())
    }

    /// The parent, `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => Some(RelPath(self.0[..i].to_vec())),
            None => Some(RelPath::root()),
        }
    }

    /// True when `self` is strictly inside `dir`.
    pub fn is_inside(&self, dir: &RelPath) -> bool {
        if dir.is_root() {
            return !self.is_root();
        }
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// This path below `base` on the local file system.
    pub fn to_path(&self, base: &Path) -> PathBuf {
        if self.0.is_empty() {
            base.to_path_buf()
        } else {
            base.join(OsStr::from_bytes(&self.0))
        }
    }
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.components().cmp(other.components())
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// JSON form: a string when the bytes are UTF-8, else `{"hex": "..."}`, so nothing is lost.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RelPathRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => RelPathRepr::Text(text.to_owned()),
            Err(_) => RelPathRepr::Bytes {
                hex: hex_encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = match RelPathRepr::deserialize(d)? {
            RelPathRepr::Text(t) => t.into_bytes(),
            RelPathRepr::Bytes { hex } => hex_decode(&hex).map_err(serde::de::Error::custom)?,
        };
        RelPath::from_untrusted(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Decodes hex written by [`hex_encode`].
pub(crate) fn hex_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(format!("odd-length hex string {s:?}"));
    }
    b.chunks(2)
        .map(|p| match (nibble(p[0]), nibble(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("not a hex string: {s:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> RelPath {
        RelPath::from_untrusted(s.as_bytes()).unwrap()
    }

    #[test]
    fn order_is_depth_first_by_component() {
        let mut v = vec![p("a.b"), p("a/b"), p("a"), p("b"), p("a/b/c"), p("a-")];
        v.sort();
        assert_eq!(
            v,
            vec![p("a"), p("a/b"), p("a/b/c"), p("a-"), p("a.b"), p("b")]
        );
    }

    #[test]
    fn untrusted_paths_cannot_escape() {
        assert!(RelPath::from_untrusted(b"/etc/passwd").is_err());
        assert!(RelPath::from_untrusted(b"a/../../x").is_err());
        assert_eq!(p("./a//b/"), p("a/b"));
    }

    #[test]
    fn inside_and_parent() {
        assert!(p("a/b").is_inside(&p("a")));
        assert!(!p("ab").is_inside(&p("a")));
        assert!(p("a").is_inside(&RelPath::root()));
        assert_eq!(p("a/b").parent(), Some(p("a")));
        assert_eq!(p("a").parent(), Some(RelPath::root()));
    }

    proptest! {
        #[test]
        fn json_round_trip(comps in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no slash or nul", |b| *b != b'/' && *b != 0), 1..6)
                .prop_filter("not a dot name", |c| c != b"." && c != b".."), 1..4)) {
            let mut path = RelPath::root();
            for c in &comps { path = path.join(c); }
            let json = serde_json::to_string(&path).unwrap();
            let back: RelPath = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, path);
        }

        #[test]
        fn hex_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        }
    }
}
