//! What changed in a range since the parent snapshot, at the grain of one entry.
//!
//! Every range's read writes an index of the entries the snapshot holds of it, in walk order:
//! one record per entry, `<digest> <type> <path>\0`, where the digest is 32 hex digits of the
//! BLAKE3 of the entry's path and metadata (mode, owner, size, modification and change times,
//! inode, device: what [`super::plan`] fingerprints), the type one of `f` (a regular file), `h`
//! (a regular file with other links), `d`, `l` (a symlink) or `o` (anything else), and the path
//! relative to the root (`.` for the root itself). An entry changed too recently before the read
//! began for its times to prove the next change gets the digest [`UNPROVEN`], which matches
//! nothing: the next backup reads it again (git's "racily clean"). The read's start, not each
//! entry's visit, is the reference: the paths of one hard-link group share their times, so they
//! are unproven, changed or unchanged together.
//!
//! Hard links: a layer's link entry names a path stored in the same layer, and the paths of a
//! group change together, so a group is stored whole in a delta or not at all. One thing parts
//! them: a path of a group leaving the index while the others stay (removed from the selection,
//! say) — their link entries in older layers name a path no longer restored. The read notes it
//! ([`ChangeTally::linked_gone`]) and the range is read whole instead.
//!
//! A read against the parent's index walks both in step (the walk and the index share one
//! order), so memory does not grow with the range: an entry whose digest is the parent's is
//! neither read nor stored; one that is new or changed is; a parent's path that the walk no
//! longer has (or now has as another type, or cannot read) is written to the deleted list, one
//! path per record, NUL-terminated, as `find -print0` writes them. Invariant: the parent's
//! entries, minus the deleted paths, plus the entries stored, are exactly the index written.

use std::fs::Metadata;
use std::io::{BufRead, Write};

use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::source::ChangeTally;

/// The digest of an entry whose times cannot prove it unchanged next time.
pub(super) const UNPROVEN: &str = "00000000000000000000000000000000";

/// An index record: the digest and type of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub path: RelPath,
    pub digest: String,
    pub kind: u8,
}

impl Record {
    /// The record of the entry at `rel` as `meta` shows it, in a read begun at `since`.
    pub(super) fn of(rel: &RelPath, meta: &Metadata, since: std::time::SystemTime) -> Record {
        let digest = if super::read::racy_at(meta, since).is_some() {
            UNPROVEN.to_owned()
        } else {
            let mut h = blake3::Hasher::new();
            super::plan::fingerprint(&mut h, rel, meta);
            h.finalize().to_hex()[..32].to_owned()
        };
        let ft = meta.file_type();
        let kind = if ft.is_file() && std::os::unix::fs::MetadataExt::nlink(meta) > 1 {
            b'h'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_dir() {
            b'd'
        } else if ft.is_symlink() {
            b'l'
        } else {
            b'o'
        };
        Record {
            path: rel.clone(),
            digest,
            kind,
        }
    }

    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.digest.as_bytes())?;
        out.write_all(&[b' ', self.kind, b' '])?;
        write_path(out, &self.path)
    }
}

/// Writes `rel` as a NUL-terminated path relative to the root (`.` for the root).
fn write_path(out: &mut dyn Write, rel: &RelPath) -> std::io::Result<()> {
    if rel.is_root() {
        out.write_all(b".\0")
    } else {
        out.write_all(rel.as_bytes())?;
        out.write_all(b"\0")
    }
}

/// Reads NUL-terminated records from an index.
pub(super) struct IndexReader<'a> {
    inner: Box<dyn BufRead + 'a>,
    buf: Vec<u8>,
}

impl<'a> IndexReader<'a> {
    pub(super) fn new(inner: Box<dyn BufRead + 'a>) -> Self {
        IndexReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next record; `None` at the end.
    pub(super) fn next_record(&mut self) -> Result<Option<Record>> {
        self.buf.clear();
        let n = self
            .inner
            .read_until(0, &mut self.buf)
            .map_err(|e| Error::integrity("cannot read the parent's index").with_source(e))?;
        if n == 0 {
            return Ok(None);
        }
        let bad = || Error::integrity("malformed index of a file-tree range");
        let rec = self.buf.strip_suffix(b"\0").ok_or_else(bad)?;
        if rec.len() < 36 || rec[32] != b' ' || rec[34] != b' ' {
            return Err(bad());
        }
        let digest = std::str::from_utf8(&rec[..32]).map_err(|_| bad())?;
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Some(Record {
            path: RelPath::from_untrusted(&rec[35..])?,
            digest: digest.to_owned(),
            kind: rec[33],
        }))
    }
}

/// A range read against the parent's index (or none: then every entry is new), writing this
/// snapshot's index and the paths gone.
pub(super) struct Compare<'a> {
    parent: Option<IndexReader<'a>>,
    /// The parent's next record not yet passed by the walk.
    next: Option<Record>,
    index: &'a mut dyn Write,
    deleted: &'a mut dyn Write,
    /// Whether the entry being decided was in the parent's index, and there a file with links.
    in_parent: bool,
    parent_linked: bool,
    /// When the read began: what "changed too recently" is measured against.
    pub since: std::time::SystemTime,
    /// Whether the entry being decided is to be stored.
    storing: bool,
    /// What the read found so far.
    pub tally: ChangeTally,
}

impl<'a> Compare<'a> {
    pub(super) fn new(
        parent: Option<Box<dyn BufRead + 'a>>,
        index: &'a mut dyn Write,
        deleted: &'a mut dyn Write,
    ) -> Result<Self> {
        let mut parent = parent.map(IndexReader::new);
        let next = match parent.as_mut() {
            Some(p) => p.next_record()?,
            None => None,
        };
        Ok(Compare {
            parent,
            next,
            index,
            deleted,
            in_parent: false,
            parent_linked: false,
            since: std::time::SystemTime::now(),
            storing: false,
            tally: ChangeTally::default(),
        })
    }

    /// Whether the entry of `rec` must be stored: new, or changed since the parent. The
    /// parent's paths the walk has passed are written as gone; one that changed its type too.
    pub(super) fn must_store(&mut self, rec: &Record) -> Result<bool> {
        let store = self.decide(rec)?;
        self.storing = store;
        Ok(store)
    }

    fn decide(&mut self, rec: &Record) -> Result<bool> {
        self.pass(&rec.path)?;
        self.in_parent = false;
        let Some(next) = self.next.take() else {
            return Ok(true);
        };
        if next.path != rec.path {
            self.next = Some(next);
            return Ok(true);
        }
        self.advance()?;
        self.in_parent = true;
        self.parent_linked = next.kind == b'h';
        if next.kind != rec.kind {
            self.gone(&rec.path)?;
            self.in_parent = false;
            return Ok(true);
        }
        Ok(next.digest != rec.digest || rec.digest == UNPROVEN)
    }

    /// Records the entry just decided as held by the snapshot (stored, or unchanged).
    pub(super) fn held(&mut self, rec: &Record) -> Result<()> {
        self.tally.changed += u64::from(std::mem::take(&mut self.storing));
        rec.write(self.index).map_err(index_err)
    }

    /// Records the entry just decided as not held (it could not be read, or another task
    /// stores it): when the parent held it, it is gone from the range.
    pub(super) fn not_held(&mut self, rel: &RelPath) -> Result<()> {
        self.storing = false;
        if std::mem::take(&mut self.in_parent) {
            self.tally.linked_gone |= self.parent_linked;
            self.gone(rel)?;
        }
        Ok(())
    }

    /// Writes the parent's paths after the walk's last entry as gone; returns what the read
    /// found.
    pub(super) fn finish(mut self) -> Result<ChangeTally> {
        while let Some(next) = self.next.take() {
            self.tally.linked_gone |= next.kind == b'h';
            self.gone(&next.path)?;
            self.advance()?;
        }
        Ok(self.tally)
    }

    /// Writes the parent's paths before `rel` as gone.
    fn pass(&mut self, rel: &RelPath) -> Result<()> {
        while let Some(n) = self.next.take_if(|n| n.path < *rel) {
            self.tally.linked_gone |= n.kind == b'h';
            self.gone(&n.path)?;
            self.advance()?;
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        self.next = match self.parent.as_mut() {
            Some(p) => p.next_record()?,
            None => None,
        };
        Ok(())
    }

    fn gone(&mut self, rel: &RelPath) -> Result<()> {
        self.tally.gone += 1;
        write_path(self.deleted, rel).map_err(index_err)
    }
}

fn index_err(e: std::io::Error) -> Error {
    Error::io("cannot write the index of a file-tree range", e)
}

/// Reads a deleted list: its paths, in order.
pub(crate) fn read_deleted(r: &mut dyn BufRead) -> Result<Vec<RelPath>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r
            .read_until(0, &mut buf)
            .map_err(|e| Error::integrity("cannot read a deleted list").with_source(e))?;
        if n == 0 {
            return Ok(out);
        }
        let path = buf
            .strip_suffix(b"\0")
            .ok_or_else(|| Error::integrity("malformed deleted list: a path without its NUL"))?;
        out.push(RelPath::from_untrusted(path)?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, digest: char, kind: u8) -> Record {
        Record {
            path: RelPath::from_untrusted(path.as_bytes()).unwrap(),
            digest: std::iter::repeat_n(digest, 32).collect(),
            kind,
        }
    }

    fn index_of(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.write(&mut out).unwrap();
        }
        out
    }

    /// What a compare of a walk against a parent's index did.
    struct Compared {
        stored: Vec<String>,
        index: Vec<u8>,
        deleted: Vec<u8>,
        tally: ChangeTally,
    }

    /// Runs a compare of `walk` against `parent`, every entry held.
    fn compare(parent: &[Record], walk: &[Record]) -> Compared {
        let parent = index_of(parent);
        let (mut index, mut deleted) = (Vec::new(), Vec::new());
        let mut stored = Vec::new();
        let mut c = Compare::new(
            Some(Box::new(&parent[..]) as Box<dyn BufRead>),
            &mut index,
            &mut deleted,
        )
        .unwrap();
        for r in walk {
            if c.must_store(r).unwrap() {
                stored.push(r.path.lossy());
            }
            c.held(r).unwrap();
        }
        let tally = c.finish().unwrap();
        Compared {
            stored,
            index,
            deleted,
            tally,
        }
    }

    #[test]
    fn only_new_and_changed_entries_are_stored_and_passed_paths_are_gone() {
        let parent = [
            rec(".", 'a', b'd'),
            rec("a", 'a', b'f'),
            rec("b", 'b', b'f'),
            rec("c", 'c', b'd'),
            rec("c/x", 'c', b'f'),
            rec("d", 'd', b'f'),
            rec("z", 'f', b'f'),
        ];
        let walk = [
            rec(".", 'a', b'd'),
            rec("a", 'a', b'f'),
            rec("b", 'e', b'f'),
            rec("bb", 'b', b'f'),
            rec("c", 'c', b'f'),
            rec("d", 'd', b'f'),
        ];
        let c = compare(&parent, &walk);
        assert_eq!(c.stored, ["b", "bb", "c"]);
        assert_eq!(c.index, index_of(&walk));
        let gone = read_deleted(&mut &c.deleted[..]).unwrap();
        let gone: Vec<String> = gone.iter().map(|p| p.lossy()).collect();
        assert_eq!(gone, ["c", "c/x", "z"], "a type change is gone too");
    }

    #[test]
    fn an_unproven_entry_is_stored_again_even_with_the_same_digest() {
        let mut r = rec("f", '0', b'f');
        r.digest = UNPROVEN.to_owned();
        let c = compare(std::slice::from_ref(&r), std::slice::from_ref(&r));
        assert_eq!(c.stored, ["f"]);
    }

    #[test]
    fn an_entry_not_held_any_more_is_gone_only_when_the_parent_held_it() {
        let parent = index_of(&[rec("a", 'a', b'f')]);
        let (mut index, mut deleted) = (Vec::new(), Vec::new());
        let mut c = Compare::new(
            Some(Box::new(&parent[..]) as Box<dyn BufRead>),
            &mut index,
            &mut deleted,
        )
        .unwrap();
        for (p, d) in [("a", 'b'), ("b", 'b')] {
            let r = rec(p, d, b'f');
            assert!(c.must_store(&r).unwrap());
            c.not_held(&r.path).unwrap();
        }
        assert_eq!(c.finish().unwrap().gone, 1);
        assert_eq!(deleted, b"a\0");
        assert!(index.is_empty());
    }

    #[test]
    fn a_linked_path_leaving_the_range_is_noted_and_a_linked_path_staying_is_not() {
        let parent = [
            rec("a", 'a', b'h'),
            rec("b", 'a', b'h'),
            rec("c", 'c', b'h'),
        ];
        let linked_gone = |walk: &[Record]| compare(&parent, walk).tally.linked_gone;
        // `c` lost its last other link: it is there, a plain file now, stored again.
        let walk = [
            rec("a", 'a', b'h'),
            rec("b", 'a', b'h'),
            rec("c", 'd', b'f'),
        ];
        assert!(!linked_gone(&walk));
        // `a` left the range while `b`, linked to it in older layers, stays.
        assert!(linked_gone(&[rec("b", 'a', b'h'), rec("c", 'c', b'h')]));
    }

    #[test]
    fn a_damaged_index_is_an_integrity_error() {
        let mut r = IndexReader::new(Box::new(&b"xyz\0"[..]));
        let e = r.next_record().unwrap_err();
        assert!(e.to_string().contains("malformed index"), "{e}");
    }
}
