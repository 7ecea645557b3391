//! What changed in a range since the parent snapshot, at the grain of one entry.
//!
//! Every range's read writes an index of the entries the snapshot holds of it, in walk order:
//! one record per entry, `<digest>[:<content>] <type> <path>\0`, where the digest is 32 hex
//! digits of the BLAKE3 of the entry's path and metadata (mode, owner, size, modification and
//! change times, inode, device: what [`super::plan`] fingerprints), the content (regular files
//! read whole or streamed without holes) 32 hex digits of the BLAKE3 of the file's extended
//! attributes and ACLs and its bytes as stored ([`content_hasher`]), the type one of `f` (a
//! regular file), `h` (a regular file with other links), `d`, `l` (a symlink) or `o` (anything
//! else), and the path relative to the root (`.` for the root itself). An entry changed too recently before the read
//! began for its times to prove the next change gets the digest [`UNPROVEN`], which matches
//! nothing: the next backup reads it again (git's "racily clean"). The read's start, not each
//! entry's visit, is the reference: the paths of one hard-link group share their times, so they
//! are unproven, changed or unchanged together.
//!
//! Hard links: a layer's link entry names a path stored in the same layer, and the paths of a
//! group change together, so a group is stored whole in a delta, or touched whole (every path's
//! content digest still the group's), or neither. A path of a group leaving the index while the
//! others stay (deleted, or removed from the selection) leaves link entries in older layers
//! naming a path no longer restored: restore gives the first of them that path's bytes (see
//! [`super::restore`]), as `tar` applying the layers in order, then the deleted lists, would. A
//! path joining a group whose first path is only touched is what parts them: its link entry
//! would name a path of an older layer. The read notes it ([`ChangeTally::read_whole`]) and the
//! range is read whole instead.
//!
//! A read against the parent's index walks both in step (the walk and the index share one
//! order), so memory does not grow with the range: an entry whose digest is the parent's is
//! neither read nor stored; one that is new or changed is; a parent's path that the walk no
//! longer has (or now has as another type, or cannot read) is written to the deleted list, one
//! path per record, NUL-terminated, as `find -print0` writes them.
//!
//! A regular file whose metadata changed but whose content is the parent's (`touch`, `chmod`,
//! `chown`) is read, to learn that, but its bytes are not stored again: its path and new
//! metadata go to the touched list, two NUL-terminated fields per file, the path and
//! `<mode in octal> <uid> <gid> <mtime as seconds.nanoseconds>`, applied after the older
//! layer's bytes are restored. Invariant: the parent's entries, minus the deleted paths, plus
//! the entries stored or listed with new metadata, are exactly the snapshot's index. A delta
//! writes that difference alone, as a patch of the parent's index ([`ParentIndex`]), until its
//! chain has [`crate::source::MAX_PATCHES`] of them; then the whole index again.

use std::fs::Metadata;
use std::io::{BufRead, Write};

use crate::catalog::FileMeta;
use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::source::{ChangeTally, ParentIndex};

/// The digest of an entry whose times cannot prove it unchanged next time.
pub(super) const UNPROVEN: &str = "00000000000000000000000000000000";

/// The type of a patch's record of a path gone ([`ParentIndex`]).
const GONE: u8 = b'-';

/// An index record: the digest and type of one path, and its content's digest when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub path: RelPath,
    pub digest: String,
    pub kind: u8,
    pub content: Option<String>,
}

/// The hasher of a regular file's content digest, fed its attributes (pax records) already: a
/// file's bytes follow. Two files with the same digest restore the same attributes and bytes.
pub(super) fn content_hasher(pax: &[(String, Vec<u8>)]) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    for (k, v) in pax {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.update(&u64::MAX.to_le_bytes());
    h
}

/// A content digest as the index records it: for a file with other links, followed by `@` and
/// its inode, so that the next backup can tell a path that stayed in its group from one that
/// moved to another group of the same bytes (a copy linked anew, `ln -f` onto another group).
pub(super) fn indexed(content: String, meta: &Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() > 1 {
        format!("{content}@{}", meta.ino())
    } else {
        content
    }
}

/// The parent's content digest of a file now at `meta`, to compare with its content now: for a
/// file with other links, only when the parent recorded it in the same inode (else `None`: its
/// group may have split or merged, which metadata alone cannot restore, so it is stored again;
/// so is, once, a file of an index written before inodes were recorded).
pub(super) fn same_group<'a>(parent: Option<&'a str>, meta: &Metadata) -> Option<&'a str> {
    use std::os::unix::fs::MetadataExt;
    let parent = parent?;
    if meta.nlink() <= 1 {
        return Some(parent);
    }
    let (content, ino) = parent.split_once('@')?;
    (ino.parse::<u64>().ok()? == meta.ino()).then_some(content)
}

/// The content digest `h` gives, as an index holds it.
pub(super) fn content_digest(h: &blake3::Hasher) -> String {
    h.finalize().to_hex()[..32].to_owned()
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
            content: None,
        }
    }

    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.digest.as_bytes())?;
        if let Some(c) = &self.content {
            out.write_all(b":")?;
            out.write_all(c.as_bytes())?;
        }
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

/// The records of a [`ParentIndex`], merged in walk order.
struct ParentView<'a> {
    /// The full index, then each patch, oldest first; each with its next record.
    streams: Vec<(IndexReader<'a>, Option<Record>)>,
}

impl<'a> ParentView<'a> {
    fn new(index: ParentIndex<'a>) -> Result<Self> {
        let mut streams = Vec::with_capacity(1 + index.patches.len());
        for r in std::iter::once(index.full).chain(index.patches) {
            let mut r = IndexReader::new(r);
            let next = r.next_record()?;
            streams.push((r, next));
        }
        Ok(ParentView { streams })
    }

    /// The next path's record in the snapshot's index: the newest stream's that has the path,
    /// unless that says it is gone; `None` at the end.
    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            let first = self
                .streams
                .iter()
                .filter_map(|(_, n)| n.as_ref())
                .min_by(|a, b| a.path.cmp(&b.path));
            let Some(path) = first.map(|r| r.path.clone()) else {
                return Ok(None);
            };
            let mut newest = None;
            for (reader, next) in &mut self.streams {
                while let Some(r) = next.take_if(|r| r.path == path) {
                    *next = reader.next_record()?;
                    if next.as_ref().is_some_and(|n| n.path < r.path) {
                        return Err(Error::integrity(
                            "the index of a file-tree range is out of order",
                        ));
                    }
                    newest = Some(r);
                }
            }
            if let Some(r) = newest.filter(|r| r.kind != GONE) {
                return Ok(Some(r));
            }
        }
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
        let hex = |b: &[u8]| {
            let s = std::str::from_utf8(b).ok()?;
            s.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| s.to_owned())
        };
        let (mut content, mut rest) = match rec.get(32) {
            Some(b' ') => (None, &rec[32..]),
            // Written since format 4: the content's digest too.
            Some(b':') if rec.len() > 65 => (Some(hex(&rec[33..65]).ok_or_else(bad)?), &rec[65..]),
            _ => return Err(bad()),
        };
        // Since format 6, a file with other links: `@` and its inode after the content digest.
        if let (Some(c), Some(digits)) = (content.as_mut(), rest.strip_prefix(b"@")) {
            let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            let ino = std::str::from_utf8(&digits[..n])
                .ok()
                .filter(|d| !d.is_empty());
            c.push('@');
            c.push_str(ino.ok_or_else(bad)?);
            rest = &digits[n..];
        }
        if rest.len() < 4 || rest[0] != b' ' || rest[2] != b' ' {
            return Err(bad());
        }
        Ok(Some(Record {
            path: RelPath::from_untrusted(&rest[3..])?,
            digest: hex(&rec[..32]).ok_or_else(bad)?,
            kind: rest[1],
            content,
        }))
    }
}

/// A range read against the parent's index (or none: then every entry is new), writing this
/// snapshot's index and the paths gone.
pub(super) struct Compare<'a> {
    parent: Option<ParentView<'a>>,
    /// The parent's next record not yet passed by the walk.
    next: Option<Record>,
    index: &'a mut dyn Write,
    /// Whether `index` takes only the records that differ from the parent's (a patch).
    patch: bool,
    deleted: &'a mut dyn Write,
    touched: &'a mut dyn Write,
    /// Whether the entry being decided was in the parent's index.
    in_parent: bool,
    /// The content digest the parent's index gives the entry being decided, when both are
    /// regular files of the same type.
    parent_content: Option<String>,
    /// When the read began: what "changed too recently" is measured against.
    pub since: std::time::SystemTime,
    /// Whether the entry being decided is to be stored.
    storing: bool,
    /// What the read found so far.
    pub tally: ChangeTally,
}

impl<'a> Compare<'a> {
    /// A compare against `parent`, writing `index` whole, or as a patch of the parent's when
    /// `patch`.
    pub(super) fn new(
        parent: Option<ParentIndex<'a>>,
        index: &'a mut dyn Write,
        patch: bool,
        deleted: &'a mut dyn Write,
        touched: &'a mut dyn Write,
    ) -> Result<Self> {
        let mut parent = parent.map(ParentView::new).transpose()?;
        let next = match parent.as_mut() {
            Some(p) => p.next_record()?,
            None => None,
        };
        Ok(Compare {
            patch: patch && parent.is_some(),
            parent,
            next,
            index,
            deleted,
            touched,
            in_parent: false,
            parent_content: None,
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
        self.parent_content = None;
        let Some(next) = self.next.take() else {
            return Ok(true);
        };
        if next.path != rec.path {
            self.next = Some(next);
            return Ok(true);
        }
        self.advance()?;
        self.in_parent = true;
        if next.kind != rec.kind {
            self.gone(&rec.path)?;
            self.in_parent = false;
            return Ok(true);
        }
        self.parent_content = next.content;
        Ok(next.digest != rec.digest || rec.digest == UNPROVEN)
    }

    /// The content digest the parent holds for the entry just decided to be stored, when it is
    /// a regular file there and now (of the same type: with other links or without): if its
    /// content is still that, only its new metadata need be kept ([`Compare::touched`]).
    pub(super) fn parent_content(&self) -> Option<&str> {
        self.parent_content.as_deref().filter(|_| self.storing)
    }

    /// Records the entry just decided as held by the snapshot: stored (with the content digest
    /// `rec` has, if any), or unchanged (with the parent's).
    pub(super) fn held(&mut self, mut rec: Record) -> Result<()> {
        if std::mem::take(&mut self.storing) {
            self.tally.changed += 1;
        } else if self.patch {
            // The parent's record, as it is.
            return Ok(());
        } else if rec.content.is_none() {
            rec.content = self.parent_content.take();
        }
        rec.write(self.index).map_err(index_err)
    }

    /// Records the entry just decided as held with the parent's content (its digest in `rec`)
    /// and the metadata `meta`, which go to the touched list.
    pub(super) fn touched(&mut self, rec: Record, meta: &FileMeta) -> Result<()> {
        self.storing = false;
        self.tally.touched += 1;
        write_path(self.touched, &rec.path)
            .and_then(|()| {
                let mtime = super::read::pax_time(meta.mtime, meta.mtime_nsec);
                let (mode, uid, gid) = (meta.mode, meta.uid, meta.gid);
                write!(self.touched, "{mode:o} {uid} {gid} {mtime}\0")
            })
            .map_err(index_err)?;
        rec.write(self.index).map_err(index_err)
    }

    /// Records the entry just decided as not held (it could not be read, or another task
    /// stores it): when the parent held it, it is gone from the range.
    pub(super) fn not_held(&mut self, rel: &RelPath) -> Result<()> {
        self.storing = false;
        if std::mem::take(&mut self.in_parent) {
            self.gone(rel)?;
        }
        Ok(())
    }

    /// Writes the parent's paths after the walk's last entry as gone; returns what the read
    /// found.
    pub(super) fn finish(mut self) -> Result<ChangeTally> {
        while let Some(next) = self.next.take() {
            self.gone(&next.path)?;
            self.advance()?;
        }
        Ok(self.tally)
    }

    /// Writes the parent's paths before `rel` as gone.
    fn pass(&mut self, rel: &RelPath) -> Result<()> {
        while let Some(n) = self.next.take_if(|n| n.path < *rel) {
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
        write_path(self.deleted, rel).map_err(index_err)?;
        if self.patch {
            let rec = Record {
                path: rel.clone(),
                digest: UNPROVEN.to_owned(),
                kind: GONE,
                content: None,
            };
            rec.write(self.index).map_err(index_err)?;
        }
        Ok(())
    }
}

fn index_err(e: std::io::Error) -> Error {
    Error::io("cannot write the index of a file-tree range", e)
}

/// Reads a deleted list: its paths, in order.
pub(crate) fn read_deleted(r: &mut dyn BufRead) -> Result<Vec<RelPath>> {
    let mut out = Vec::new();
    while let Some(path) = next_field(r, "deleted list")? {
        out.push(RelPath::from_untrusted(&path)?);
    }
    Ok(out)
}

/// Reads a touched list: each path with its mode, owner, group and modification time.
pub(crate) fn read_touched(r: &mut dyn BufRead) -> Result<Vec<(RelPath, FileMeta)>> {
    let what = "touched list";
    let mut out = Vec::new();
    while let Some(path) = next_field(r, what)? {
        let bad = || Error::integrity(format!("malformed {what}: the metadata of a path"));
        let meta = next_field(r, what)?.ok_or_else(bad)?;
        let meta = String::from_utf8(meta).map_err(|_| bad())?;
        let f: Vec<&str> = meta.split(' ').collect();
        let [mode, uid, gid, mtime] = f[..] else {
            return Err(bad());
        };
        let (mtime, mtime_nsec) = super::entry::parse_pax_time(mtime).ok_or_else(bad)?;
        let meta = FileMeta {
            mode: u32::from_str_radix(mode, 8).map_err(|_| bad())?,
            uid: uid.parse().map_err(|_| bad())?,
            gid: gid.parse().map_err(|_| bad())?,
            mtime,
            mtime_nsec,
            size: 0,
            version: None,
            attrs: Default::default(),
        };
        out.push((RelPath::from_untrusted(&path)?, meta));
    }
    Ok(out)
}

/// The next NUL-terminated field of a list; `None` at its end.
fn next_field(r: &mut dyn BufRead, what: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = r
        .read_until(0, &mut buf)
        .map_err(|e| Error::integrity(format!("cannot read a {what}")).with_source(e))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.pop() != Some(0) {
        return Err(Error::integrity(format!(
            "malformed {what}: a field without its NUL"
        )));
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, digest: char, kind: u8) -> Record {
        Record {
            path: RelPath::from_untrusted(path.as_bytes()).unwrap(),
            digest: std::iter::repeat_n(digest, 32).collect(),
            kind,
            content: None,
        }
    }

    fn index_of(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.write(&mut out).unwrap();
        }
        out
    }

    /// A parent's index that is one full index.
    fn whole(index: &[u8]) -> ParentIndex<'_> {
        ParentIndex {
            full: Box::new(index),
            patches: Vec::new(),
        }
    }

    /// The records of `full` with `patches` applied.
    fn view(full: &[u8], patches: &[&[u8]]) -> Result<Vec<Record>> {
        let mut v = ParentView::new(ParentIndex {
            full: Box::new(full),
            patches: patches
                .iter()
                .map(|p| Box::new(*p) as Box<dyn BufRead>)
                .collect(),
        })?;
        let mut out = Vec::new();
        while let Some(r) = v.next_record()? {
            out.push(r);
        }
        Ok(out)
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
        compare_into(whole(&index_of(parent)), walk, false)
    }

    /// Runs a compare of `walk` against `parent`, every entry held, writing the index whole or
    /// as a patch.
    fn compare_into(parent: ParentIndex<'_>, walk: &[Record], patch: bool) -> Compared {
        let (mut index, mut deleted, mut touched) = (Vec::new(), Vec::new(), Vec::new());
        let mut stored = Vec::new();
        let mut c =
            Compare::new(Some(parent), &mut index, patch, &mut deleted, &mut touched).unwrap();
        for r in walk {
            if c.must_store(r).unwrap() {
                stored.push(r.path.lossy());
            }
            c.held(r.clone()).unwrap();
        }
        let tally = c.finish().unwrap();
        Compared {
            stored,
            index,
            deleted,
            tally,
        }
    }

    /// A parent's index and a walk of the same range after a change: `b` edited, `bb` added, `c`
    /// turned from a directory into a file (`c/x` gone with it), `z` deleted.
    fn a_change() -> (Vec<Record>, Vec<Record>) {
        let parent = vec![
            rec(".", 'a', b'd'),
            rec("a", 'a', b'f'),
            with_content(rec("b", 'b', b'f'), 'b'),
            rec("c", 'c', b'd'),
            rec("c/x", 'c', b'f'),
            rec("d", 'd', b'f'),
            rec("z", 'f', b'f'),
        ];
        let walk = vec![
            rec(".", 'a', b'd'),
            rec("a", 'a', b'f'),
            with_content(rec("b", 'e', b'f'), 'e'),
            rec("bb", 'b', b'f'),
            rec("c", 'c', b'f'),
            rec("d", 'd', b'f'),
        ];
        (parent, walk)
    }

    /// The records of an index or a patch.
    fn records(index: &[u8]) -> Vec<Record> {
        let mut r = IndexReader::new(Box::new(index));
        std::iter::from_fn(|| r.next_record().unwrap()).collect()
    }

    #[test]
    fn only_new_and_changed_entries_are_stored_and_passed_paths_are_gone() {
        let (parent, walk) = a_change();
        let c = compare(&parent, &walk);
        assert_eq!(c.stored, ["b", "bb", "c"]);
        assert_eq!(c.index, index_of(&walk));
        let gone = read_deleted(&mut &c.deleted[..]).unwrap();
        let gone: Vec<String> = gone.iter().map(|p| p.lossy()).collect();
        assert_eq!(gone, ["c", "c/x", "z"], "a type change is gone too");
    }

    #[test]
    fn a_patch_applied_to_the_parents_index_is_the_index_written_whole() {
        let (parent, walk) = a_change();
        let parent = index_of(&parent);
        let patch = compare_into(whole(&parent), &walk, true);
        let whole = compare_into(whole(&parent), &walk, false);
        assert_eq!(patch.stored, whole.stored);
        assert_eq!(patch.deleted, whole.deleted);
        let expected = records(&whole.index);
        assert_eq!(view(&parent, &[&patch.index]).unwrap(), expected);
        let in_patch: Vec<(String, char)> = records(&patch.index)
            .iter()
            .map(|r| (r.path.lossy(), char::from(r.kind)))
            .collect();
        let want = [
            ("b", 'f'),
            ("bb", 'f'),
            ("c", '-'),
            ("c", 'f'),
            ("c/x", '-'),
            ("z", '-'),
        ];
        let want: Vec<(String, char)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(in_patch, want, "what changed, and no unchanged entry");
        // A second delta against that view: `c` becomes a directory again, `bb` is gone.
        let walk2 = [
            rec(".", 'a', b'd'),
            rec("a", 'a', b'f'),
            with_content(rec("b", 'e', b'f'), 'e'),
            rec("c", 'c', b'd'),
            rec("d", 'd', b'f'),
        ];
        let parent2 = ParentIndex {
            full: Box::new(&parent[..]),
            patches: vec![Box::new(&patch.index[..])],
        };
        let second = compare_into(parent2, &walk2, true);
        assert_eq!(second.stored, ["c"]);
        let gone = read_deleted(&mut &second.deleted[..]).unwrap();
        assert_eq!(
            gone.iter().map(|p| p.lossy()).collect::<Vec<_>>(),
            ["bb", "c"]
        );
        let index2 = &second.index;
        assert_eq!(view(&parent, &[&patch.index, index2]).unwrap(), walk2);
    }

    #[test]
    fn a_path_gone_in_one_patch_and_back_in_a_later_one_is_in_the_view() {
        let full = index_of(&[rec("a", 'a', b'f'), rec("b", 'b', b'f')]);
        let gone = |p: &str| Record {
            digest: UNPROVEN.to_owned(),
            ..rec(p, '0', GONE)
        };
        let p1 = index_of(&[gone("a"), rec("c", 'c', b'f')]);
        let p2 = index_of(&[rec("a", 'd', b'd'), gone("c")]);
        assert_eq!(
            view(&full, &[&p1]).unwrap(),
            [rec("b", 'b', b'f'), rec("c", 'c', b'f')]
        );
        assert_eq!(
            view(&full, &[&p1, &p2]).unwrap(),
            [rec("a", 'd', b'd'), rec("b", 'b', b'f')]
        );
        let disordered = index_of(&[rec("c", 'c', b'f'), rec("a", 'c', b'f')]);
        let e = view(&full, &[&disordered]).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
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
        let (mut index, mut deleted, mut touched) = (Vec::new(), Vec::new(), Vec::new());
        let mut c = Compare::new(
            Some(whole(&parent)),
            &mut index,
            false,
            &mut deleted,
            &mut touched,
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
    fn a_linked_path_leaving_the_range_is_a_deleted_path_and_the_range_is_not_read_whole() {
        let parent = [
            rec("a", 'a', b'h'),
            rec("b", 'a', b'h'),
            rec("c", 'c', b'h'),
        ];
        // `c` lost its last other link: it is there, a plain file now, stored again.
        let walk = [
            rec("a", 'a', b'h'),
            rec("b", 'a', b'h'),
            rec("c", 'd', b'f'),
        ];
        assert!(!compare(&parent, &walk).tally.read_whole);
        // `a` left the range while `b`, linked to it in older layers, stays: restore gives `b`
        // the bytes of `a` from those layers.
        let c = compare(&parent, &[rec("b", 'a', b'h'), rec("c", 'c', b'h')]);
        assert_eq!((c.tally.read_whole, c.tally.gone), (false, 1));
    }

    fn with_content(mut r: Record, c: char) -> Record {
        r.content = Some(std::iter::repeat_n(c, 32).collect());
        r
    }

    #[test]
    fn a_file_whose_content_is_the_parents_goes_to_the_touched_list_with_its_new_metadata() {
        let parent = index_of(&[
            with_content(rec("a", 'a', b'f'), 'c'),
            with_content(rec("b", 'b', b'f'), 'd'),
            with_content(rec("h", 'e', b'h'), 'e'),
        ]);
        let (mut index, mut deleted, mut touched) = (Vec::new(), Vec::new(), Vec::new());
        let mut c = Compare::new(
            Some(whole(&parent)),
            &mut index,
            false,
            &mut deleted,
            &mut touched,
        )
        .unwrap();
        // `a` is unchanged: its record keeps the parent's content digest.
        let a = rec("a", 'a', b'f');
        assert!(!c.must_store(&a).unwrap());
        assert_eq!(c.parent_content(), None, "only asked of an entry to store");
        c.held(a).unwrap();
        // `b` was touched: read, its content found the parent's.
        let b = rec("b", 'f', b'f');
        assert!(c.must_store(&b).unwrap());
        assert_eq!(c.parent_content(), Some("d".repeat(32).as_str()));
        let meta = FileMeta {
            mode: 0o640,
            uid: 7,
            gid: 8,
            mtime: -2,
            mtime_nsec: 250_000_000,
            size: 0,
            version: None,
            attrs: Default::default(),
        };
        c.touched(with_content(b, 'd'), &meta).unwrap();
        // A file with other links too (the read decides for its group).
        let h = rec("h", 'f', b'h');
        assert!(c.must_store(&h).unwrap());
        assert_eq!(c.parent_content(), Some("e".repeat(32).as_str()));
        c.held(h).unwrap();
        let tally = c.finish().unwrap();
        assert_eq!((tally.changed, tally.touched, tally.gone), (1, 1, 0));
        let expected = [
            with_content(rec("a", 'a', b'f'), 'c'),
            with_content(rec("b", 'f', b'f'), 'd'),
            rec("h", 'f', b'h'),
        ];
        assert_eq!(index, index_of(&expected));
        assert_eq!(touched, b"b\x00640 7 8 -1.750000000\x00");
        let list = read_touched(&mut &touched[..]).unwrap();
        assert_eq!(list, [(RelPath::from_untrusted(b"b").unwrap(), meta)]);
    }

    #[test]
    fn records_with_and_without_a_content_digest_read_back_as_written() {
        let records = [
            with_content(rec("a b", 'a', b'f'), 'c'),
            rec("- x", 'b', b'f'),
            rec("d", 'c', b'd'),
        ];
        let bytes = index_of(&records);
        let mut r = IndexReader::new(Box::new(&bytes[..]));
        for want in &records {
            assert_eq!(r.next_record().unwrap().as_ref(), Some(want));
        }
        assert_eq!(r.next_record().unwrap(), None);
        let bad = format!("{}:{} f a\0", "a".repeat(32), "z".repeat(32));
        let mut r = IndexReader::new(Box::new(bad.as_bytes()));
        assert!(r.next_record().is_err(), "a content digest that is not hex");
    }

    #[test]
    fn a_damaged_index_is_an_integrity_error() {
        let mut r = IndexReader::new(Box::new(&b"xyz\0"[..]));
        let e = r.next_record().unwrap_err();
        assert!(e.to_string().contains("malformed index"), "{e}");
    }
}
