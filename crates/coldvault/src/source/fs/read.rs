//! Reading a file tree's tasks: a range of the walk order as a tar (pax) stream, and a part of a
//! large file as raw bytes.
//!
//! Invariant: a stored file's bytes are one complete read of it, and its length is what that read
//! gave, never padded or cut. A tar header states the size before the bytes, so a file is either
//! read whole first (files up to [`SMALL`], into memory; files seen changing before, into a spool
//! file in the staging directory) and stored when its version (size, times, inode) was the same
//! before and after the read, or streamed and checked after: a streamed file that ends early or
//! whose version moved fails the read with [`ErrorKind::Changed`](crate::ErrorKind::Changed), and
//! the task is read again with that file read whole first. A file that changes during every one of
//! [`SETTLE_READS`] reads is stored as its last complete read, with a warning.
//!
//! Besides contents, mode, owner and times, an entry carries its extended attributes and ACLs
//! ([`super::xattr`]); a streamed file with holes is stored without them ([`super::sparse`]); the
//! later paths of a hard-link group are `Link` entries, FIFOs and devices are node entries, and a
//! socket is left out with a warning ([`super::special`]).

use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::changes::{Compare, Record};
use super::notes::Notes;
use super::special::{self, Links, Proven};
use super::{read_err, sparse, xattr, Walk};
use crate::catalog::{FileMeta, FileVersion, PartTask, Problem, ReadStats, Warning};
use crate::error::{Error, Result};
use crate::path::RelPath;
use crate::source::LAST_ATTEMPT;

/// One read of one task: the walk (its selection and the warnings it gathers), the files of the
/// run found changing while streamed, and which attempt of the task this is.
pub(super) struct Reading<'a> {
    pub walk: Walk<'a>,
    pub careful: &'a Mutex<BTreeSet<RelPath>>,
    pub proven: &'a Proven,
    pub attempt: u32,
    pub spool_dir: &'a Path,
}

/// What a tar entry carries beyond its name, metadata and size.
#[derive(Default)]
pub(super) struct Extra {
    /// The target of a symlink or a hard link.
    pub link: Option<Vec<u8>>,
    /// A device's major and minor numbers.
    pub device: Option<(u32, u32)>,
    /// pax records: attributes, ACLs, a sparse file's layout.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Extra {
    /// The extended attributes and ACLs of the entry at `path`, as pax records.
    fn attrs_of(path: &Path, rel: &RelPath, notes: &mut Notes) -> Extra {
        Extra {
            pax: xattr::pax_records(&xattr::read(path, rel, notes)),
            ..Extra::default()
        }
    }
}

/// Appends a later path of a hard-link group: a `Link` entry naming the group's first path.
fn append_link<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &RelPath,
    meta: &Metadata,
    first: &RelPath,
) -> Result<()> {
    let extra = Extra {
        link: Some(first.as_bytes().to_vec()),
        ..Extra::default()
    };
    let kind = tar::EntryType::Link;
    append(builder, rel.as_bytes(), meta, kind, 0, io::empty(), &extra)
}

impl Reading<'_> {
    /// Writes the entries in `[start, end)` that `compare` says are new or changed since the
    /// parent (every entry, without a parent) as a tar (pax) stream, leaving out `split_files`;
    /// the others are counted, not read. The range's index goes into `compare`.
    pub(super) fn files(
        &mut self,
        start: Option<&RelPath>,
        end: Option<&RelPath>,
        split_files: &[RelPath],
        out: &mut dyn Write,
        compare: &mut Compare<'_>,
    ) -> Result<ReadStats> {
        let mut stats = ReadStats::default();
        let mut notes = Notes::default();
        let mut links = Links::default();
        let mut builder = tar::Builder::new(out);
        let root = self.walk.root;
        if start.is_none() {
            // The first task carries the root directory itself, as "./", for its mode and times.
            let meta = fs::symlink_metadata(root).map_err(|e| read_err("cannot stat", root, e))?;
            let rec = Record::of(&RelPath::root(), &meta, compare.since);
            if compare.must_store(&rec)? {
                let extra = Extra::attrs_of(root, &RelPath::root(), &mut notes);
                let dir = tar::EntryType::Directory;
                append(&mut builder, b"./", &meta, dir, 0, io::empty(), &extra)?;
            }
            compare.held(rec)?;
        }
        let mut files = FileReads {
            careful: self.careful,
            proven: self.proven,
            proven_bytes: 0,
            attempt: self.attempt,
            spool_dir: self.spool_dir,
            left: Vec::new(),
            unsettled: Vec::new(),
            buf: Vec::new(),
        };
        self.walk.run(start, end, &mut |rel, path, meta| {
            let ft = meta.file_type();
            let mut rec = Record::of(rel, meta, compare.since);
            if ft.is_file() && split_files.binary_search(rel).is_ok() {
                compare.must_store(&rec)?;
                return compare.not_held(rel);
            }
            if !compare.must_store(&rec)? {
                compare.tally.unchanged_bytes += count_unchanged(&mut stats, meta);
                return compare.held(rec);
            }
            let mut e = Emit {
                builder: &mut builder,
                stats: &mut stats,
                notes: &mut notes,
                links: &mut links,
                files: &mut files,
            };
            let unsettled = e.files.unsettled.len();
            let parent = super::changes::same_group(compare.parent_content(), meta);
            match e.entry(rel, path, meta, parent)? {
                Held::Left => return compare.not_held(rel),
                Held::Relink => {
                    compare.tally.read_whole = true;
                    return compare.not_held(rel);
                }
                Held::Stored(content) => {
                    rec.content = content.map(|c| super::changes::indexed(c, meta));
                }
                Held::Touched(content, touched, read) => {
                    rec.content = Some(super::changes::indexed(content, meta));
                    compare.tally.touched_bytes += read;
                    return compare.touched(rec, &touched);
                }
            }
            // Stored as a read during which it kept changing: its bytes may be of no version
            // its metadata names, so the next backup reads it again whatever its times say.
            if files.unsettled.len() != unsettled {
                rec.digest = super::changes::UNPROVEN.to_owned();
            }
            compare.held(rec)
        })?;
        for (rel, path, what, e) in std::mem::take(&mut files.left) {
            self.walk.left_out(&rel, &path, what, e)?;
        }
        compare.tally.proven_bytes = files.proven_bytes;
        self.walk.warnings.append(&mut files.changed());
        self.walk.warnings.extend(notes.into_warnings());
        builder
            .into_inner()
            .map_err(|e| Error::io("cannot finish the tar stream", e))?;
        Ok(stats)
    }

    /// Reads one part of a large file as raw bytes (the last part to the end of the file), with
    /// the version of the file it was read from. A file gone before the part is read gives no
    /// bytes and no metadata, and a warning.
    pub(super) fn part(
        &mut self,
        p: &PartTask,
        out: &mut dyn Write,
    ) -> Result<(ReadStats, Option<FileMeta>)> {
        let path = p.path.to_path(self.walk.root);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.walk.left_out(&p.path, &path, "cannot open", e)?;
                return Ok((ReadStats::default(), None));
            }
        };
        let before = file
            .metadata()
            .map_err(|e| read_err("cannot stat", &path, e))?;
        file.seek(SeekFrom::Start(p.offset))
            .map_err(|e| read_err("cannot seek in", &path, e))?;
        let last = p.part + 1 == p.parts;
        let limit = if last { u64::MAX } else { p.len };
        let copied = io::copy(&mut (&mut file).take(limit), out);
        let after = file.metadata();
        let settled = match (&copied, &after) {
            (Ok(_), Ok(a)) => FileVersion::of(a) == FileVersion::of(&before) && racy(a).is_none(),
            _ => false,
        };
        if !settled && self.attempt < LAST_ATTEMPT {
            // The next attempt reads it once a write in progress would have shown.
            if let Some(wait) = after.as_ref().ok().and_then(racy) {
                std::thread::sleep(wait);
            }
            return Err(Error::changed(format!(
                "{} changed while part {} of it was read",
                p.path,
                p.part + 1
            )));
        }
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                // Bytes of this part are already out: the file is left out as a whole (restore
                // skips a file any part of which was not read).
                self.walk.left_out(&p.path, &path, "cannot read", e)?;
                return Ok((ReadStats::default(), None));
            }
        };
        let mut meta = FileMeta::of(&before);
        if settled {
            meta.version = Some(FileVersion::of(&before));
        } else {
            self.walk.warnings.push(Warning::new(
                p.path.lossy(),
                Problem::Changed,
                format!("kept changing while part {} of it was read", p.part + 1),
            ));
        }
        let stats = ReadStats {
            files: 1,
            bytes_read: n,
            ..ReadStats::default()
        };
        Ok((stats, Some(meta)))
    }
}

/// Counts an entry the parent holds unchanged, its bytes not read but held by the snapshot;
/// returns them.
fn count_unchanged(stats: &mut ReadStats, meta: &Metadata) -> u64 {
    let ft = meta.file_type();
    if ft.is_file() {
        stats.files += 1;
        stats.bytes_read += meta.len();
        return meta.len();
    } else if ft.is_dir() {
        stats.dirs += 1;
    } else if ft.is_symlink() {
        stats.symlinks += 1;
    }
    0
}

/// What became of an entry the snapshot must hold anew.
enum Held {
    /// Left out (unreadable, or a socket).
    Left,
    /// A path of a hard-link group whose first path was only touched, but whose own content
    /// the parent does not give as the group's (it is new to the group, say): its link entry
    /// would name a path of an older layer. The range must be read whole.
    Relink,
    /// In the tar stream, with its content digest when it is a regular file stored whole.
    Stored(Option<String>),
    /// A regular file whose content (this digest) is the parent's: only its metadata is new.
    /// With the bytes read to learn it.
    Touched(String, FileMeta, u64),
}

/// Writes one entry of a range into its tar stream.
struct Emit<'e, 'f, W: Write> {
    builder: &'e mut tar::Builder<W>,
    stats: &'e mut ReadStats,
    notes: &'e mut Notes,
    links: &'e mut Links,
    files: &'e mut FileReads<'f>,
}

impl<W: Write> Emit<'_, '_, W> {
    /// Appends the entry at `rel`, unless it is a regular file whose content is still
    /// `parent_content`.
    fn entry(
        &mut self,
        rel: &RelPath,
        path: &Path,
        meta: &Metadata,
        parent_content: Option<&str>,
    ) -> Result<Held> {
        let ft = meta.file_type();
        let name = rel.as_bytes();
        let builder = &mut *self.builder;
        if ft.is_file() {
            if let Some(group) = self.links.earlier(meta) {
                self.stats.files += 1;
                let content = group.content.clone();
                if group.in_tar {
                    append_link(builder, rel, meta, &group.first)?;
                    return Ok(Held::Stored(content));
                }
                return Ok(match content {
                    Some(c) if parent_content == Some(c.as_str()) => {
                        Held::Touched(c, FileMeta::of(meta), 0)
                    }
                    _ => Held::Relink,
                });
            }
            let proven = parent_content.and_then(|p| {
                let c = self.files.proven.get(meta)?;
                (c == p).then_some(c)
            });
            if let Some(c) = proven {
                // Another range of this run read the group at this version.
                self.stats.files += 1;
                self.stats.bytes_read += meta.len();
                self.files.proven_bytes += meta.len();
                self.links.held(rel, meta, Some(&c), false);
                return Ok(Held::Touched(c, FileMeta::of(meta), meta.len()));
            }
        }
        let extra = Extra::attrs_of(path, rel, self.notes);
        if ft.is_dir() {
            self.stats.dirs += 1;
            let dir = tar::EntryType::Directory;
            append(builder, name, meta, dir, 0, io::empty(), &extra)?;
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) => {
                    let left = (rel.clone(), path.to_owned(), "cannot read link", e);
                    self.files.left.push(left);
                    return Ok(Held::Left);
                }
            };
            self.stats.symlinks += 1;
            let extra = Extra {
                link: Some(target.as_os_str().as_bytes().to_vec()),
                ..extra
            };
            let kind = tar::EntryType::Symlink;
            append(builder, name, meta, kind, 0, io::empty(), &extra)?;
        } else if ft.is_file() {
            let held = self
                .files
                .append(builder, rel, path, self.stats, extra, parent_content)?;
            match &held {
                Held::Stored(c) => self.links.held(rel, meta, c.as_deref(), true),
                Held::Touched(c, _, _) => self.links.held(rel, meta, Some(c), false),
                Held::Left | Held::Relink => {}
            }
            return Ok(held);
        } else if let Some((kind, device)) = special::node_of(meta) {
            let extra = Extra { device, ..extra };
            append(builder, name, meta, kind, 0, io::empty(), &extra)?;
        } else {
            special::leave_out(rel, meta, self.stats, self.notes);
            return Ok(Held::Left);
        }
        Ok(Held::Stored(None))
    }
}

/// Files up to this size are read whole into memory, then stored: a change while they are read
/// is seen before anything is written, and they are read again.
const SMALL: u64 = 64 << 10;

/// How often a file found changing is read again before its last complete read is stored.
const SETTLE_READS: u32 = 3;

/// The regular files of one tar stream.
struct FileReads<'a> {
    careful: &'a Mutex<BTreeSet<RelPath>>,
    /// Files with other links that the run read whole, and the bytes of those this task took
    /// from there.
    proven: &'a Proven,
    proven_bytes: u64,
    attempt: u32,
    spool_dir: &'a Path,
    /// Files that could not be opened or read: (path, where, what was being done, the cause).
    left: Vec<(RelPath, PathBuf, &'static str, io::Error)>,
    /// Files stored as their last complete read because every read of them saw a change.
    unsettled: Vec<(RelPath, u64)>,
    /// Memory small files are read into, kept from one to the next.
    buf: Vec<u8>,
}

impl FileReads<'_> {
    /// Appends the regular file at `path` with `extra` (its attributes): read whole first (small
    /// files, files seen changing before, every file on the last attempt, a file whose content
    /// may still be `parent_content`), or streamed (without its holes, when it has some) and
    /// checked after. A file read whole whose content is `parent_content` is not appended.
    fn append<W: Write>(
        &mut self,
        b: &mut tar::Builder<W>,
        rel: &RelPath,
        path: &Path,
        stats: &mut ReadStats,
        mut extra: Extra,
        parent_content: Option<&str>,
    ) -> Result<Held> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.left
                    .push((rel.clone(), path.to_owned(), "cannot open", e));
                return Ok(Held::Left);
            }
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.left
                    .push((rel.clone(), path.to_owned(), "cannot stat", e));
                return Ok(Held::Left);
            }
        };
        let settle = before.len() <= SMALL
            || parent_content.is_some()
            || self.attempt >= LAST_ATTEMPT
            || self.careful.lock().is_ok_and(|c| c.contains(rel));
        if settle {
            let settled = (rel, path, file, before);
            return self.append_settled(b, settled, stats, &extra, parent_content);
        }
        let mut content = Some(super::changes::content_hasher(&extra.pax));
        let regular = tar::EntryType::Regular;
        let holes = sparse::data_map(&file, &before)
            .map_err(|e| read_err("cannot find the holes of", path, e))?;
        let written = match holes {
            None => {
                let mut watched = Watched {
                    inner: &mut file,
                    left: before.len(),
                    content: content.as_mut(),
                };
                let size = before.len();
                let w = append(
                    b,
                    rel.as_bytes(),
                    &before,
                    regular,
                    size,
                    &mut watched,
                    &extra,
                );
                w.map_err(|e| (watched.left > 0, e))
            }
            Some(map) => {
                // Without its holes (PAX sparse 1.0); a region that shrank meanwhile shows in the
                // check below, and the task is read again.
                extra.pax.extend(sparse::pax_records(rel, before.len()));
                let name = sparse::placeholder_name(rel);
                let size = sparse::stored_size(&map);
                let twin = file
                    .try_clone()
                    .map_err(|e| read_err("cannot read", path, e))?;
                let data = sparse::SparseReader::new(twin, map);
                let w = append(b, &name, &before, regular, size, data, &extra);
                // Its content digest would be of the bytes without the holes: none is kept.
                content = None;
                w.map_err(|e| (true, e))
            }
        };
        match written {
            Ok(()) => {}
            Err((true, e)) => return Err(self.read_again(rel, e.to_string())),
            Err((false, e)) => return Err(e),
        }
        let after = file.metadata();
        let same = after
            .as_ref()
            .is_ok_and(|a| FileVersion::of(a) == FileVersion::of(&before));
        if !same {
            return Err(self.read_again(rel, "its size or times changed".into()));
        }
        if after.as_ref().ok().and_then(racy).is_some() {
            return Err(self.read_again(rel, "it changed just before it was read".into()));
        }
        stats.files += 1;
        stats.bytes_read += before.len();
        let content = content.map(|h| super::changes::content_digest(&h));
        Ok(Held::Stored(content))
    }

    /// Appends a file read whole first ([`settled_read`]), holes and all, unless its content is
    /// `parent_content` and the read settled.
    fn append_settled<W: Write>(
        &mut self,
        b: &mut tar::Builder<W>,
        (rel, path, mut file, before): (&RelPath, &Path, File, Metadata),
        stats: &mut ReadStats,
        extra: &Extra,
        parent_content: Option<&str>,
    ) -> Result<Held> {
        let buf = std::mem::take(&mut self.buf);
        let read = settled_read(&mut file, before, self.spool_dir, buf, &extra.pax);
        let read = match read {
            Ok(r) => r,
            // Staging's fault, not the file's: the task fails, the file is not left out.
            Err(e) if e.get_ref().is_some_and(|i| i.is::<SpoolFailed>()) => {
                return Err(Error::io(
                    format!(
                        "cannot write a staged file (the spool of {rel}) in the staging directory"
                    ),
                    e,
                ));
            }
            Err(e) => {
                self.left
                    .push((rel.clone(), path.to_owned(), "cannot read", e));
                return Ok(Held::Left);
            }
        };
        stats.files += 1;
        stats.bytes_read += read.len;
        let settled = read.reads <= SETTLE_READS;
        if settled {
            self.proven.note(&read.meta, &read.content);
        }
        if settled && parent_content == Some(read.content.as_str()) {
            if let Spool::Memory(v) = read.data {
                self.buf = v;
            }
            return Ok(Held::Touched(
                read.content,
                FileMeta::of(&read.meta),
                read.len,
            ));
        }
        if !settled {
            self.unsettled.push((rel.clone(), read.len));
        }
        let (meta, len, name) = (read.meta, read.len, rel.as_bytes());
        let regular = tar::EntryType::Regular;
        match read.data {
            Spool::Memory(v) => {
                let done = append(b, name, &meta, regular, len, &v[..], extra);
                self.buf = v;
                done?;
            }
            Spool::Disk(mut f) => {
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| read_err("cannot read the spool of", path, e))?;
                append(b, name, &meta, regular, len, f.take(len), extra)?;
            }
        }
        Ok(Held::Stored(Some(read.content)))
    }

    /// Notes that `rel` changed while streamed: the task is read again, `rel` read whole first.
    fn read_again(&self, rel: &RelPath, why: String) -> Error {
        if let Ok(mut c) = self.careful.lock() {
            c.insert(rel.clone());
        }
        Error::changed(format!("{rel} changed while it was read ({why})"))
    }

    /// Warnings for the files stored as a read during which they changed.
    fn changed(&mut self) -> Vec<Warning> {
        self.unsettled
            .drain(..)
            .map(|(rel, len)| {
                Warning::new(
                    rel.lossy(),
                    Problem::Changed,
                    format!(
                        "changed during each of {SETTLE_READS} reads: the snapshot holds the \
                         last complete one ({len} bytes)"
                    ),
                )
            })
            .collect()
    }
}

/// Passes at most `left` bytes of a streamed file through, and fails when the file ends first:
/// the tar header already gave its size, so a shorter file cannot be stored as it is. Feeds
/// `content` what it passes.
struct Watched<'a> {
    inner: &'a mut File,
    left: u64,
    content: Option<&'a mut blake3::Hasher>,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("it shrank: {} bytes fewer than when opened", self.left),
            ));
        }
        self.left -= n as u64;
        if let Some(h) = self.content.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A complete read of a file, taken before anything of it is written out.
struct Settled {
    data: Spool,
    len: u64,
    /// The metadata the bytes belong to (after the read).
    meta: Metadata,
    /// Reads made; more than [`SETTLE_READS`] means every one saw a change.
    reads: u32,
    /// The content digest of the attributes the read was given and of its bytes.
    content: String,
}

/// Where a settled read waits: memory for small files, a file in the staging directory else.
enum Spool {
    Memory(Vec<u8>),
    Disk(File),
}

/// How recent a change must be for a file's unchanged size and times not to prove that no
/// write was in progress while it was read.
/// (The kernel may pause a writer between pages for up to 200 ms to throttle dirty pages.)
/// Best effort: a writer stalled longer, or a file system whose times are coarser, is not seen.
const RACY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long until `m`'s last change is [`RACY`] old; `None` when it is already. A `write()` can
/// stall between pages with nothing more changing: the times are set once, when it starts, on the
/// clock's coarse tick. So a file changed that recently may be a write half done even when its
/// size and times are the same before and after a read, and it is read again after the wait
/// (git treats an index entry as "racily clean" the same way).
fn racy(m: &Metadata) -> Option<std::time::Duration> {
    racy_at(m, std::time::SystemTime::now())
}

/// [`racy`] at the time `now`.
pub(super) fn racy_at(m: &Metadata, now: std::time::SystemTime) -> Option<std::time::Duration> {
    use std::os::unix::fs::MetadataExt;
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            m.ctime().max(0) as u64,
            m.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    // A change time ahead of this clock (another machine's, on a network file system) proves
    // nothing: wait as for a change just now.
    let age = now.duration_since(changed).unwrap_or_default();
    RACY.checked_sub(age).filter(|w| !w.is_zero())
}

/// Reads `file` whole, again while its version changes during a read (up to [`SETTLE_READS`]
/// times); the last complete read stands. A file read into memory that grows past [`SMALL`]
/// moves to a spool file. `buf` is the memory to read into (kept from file to file); `pax` the
/// file's attributes, for its content digest.
fn settled_read(
    file: &mut File,
    mut before: Metadata,
    spool_dir: &Path,
    buf: Vec<u8>,
    pax: &[(String, Vec<u8>)],
) -> io::Result<Settled> {
    let mut spool = Spool::Memory(buf);
    let mut n = 1;
    loop {
        if n > 1 {
            file.seek(SeekFrom::Start(0))?;
        }
        let mut content = super::changes::content_hasher(pax);
        let mut hashing = Hashing {
            inner: &mut *file,
            content: &mut content,
        };
        let len = read_into(&mut hashing, &mut spool, spool_dir, before.len())?;
        let after = file.metadata()?;
        let mut same = FileVersion::of(&after) == FileVersion::of(&before) && len == after.len();
        if let Some(wait) = racy(&after).filter(|_| same && n < SETTLE_READS) {
            // Unproven: read it again once a write in progress would have shown.
            std::thread::sleep(wait);
            same = false;
        }
        if same || n == SETTLE_READS {
            return Ok(Settled {
                data: spool,
                len,
                meta: after,
                reads: if same { n } else { n + 1 },
                content: super::changes::content_digest(&content),
            });
        }
        before = after;
        n += 1;
    }
}

/// A reader that feeds `content` what it reads.
struct Hashing<'a, R> {
    inner: R,
    content: &'a mut blake3::Hasher,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.content.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads `file` (about `size` bytes) to its end into `spool` (emptied first); returns the bytes
/// read.
fn read_into(
    file: &mut impl Read,
    spool: &mut Spool,
    spool_dir: &Path,
    size: u64,
) -> io::Result<u64> {
    match spool {
        Spool::Memory(v) => {
            v.clear();
            // Room for the whole file and the read that finds its end: no small probing reads.
            v.reserve(usize::try_from(size.min(SMALL)).unwrap_or(0) + 1);
            let n = file.take(SMALL + 1).read_to_end(v)? as u64;
            if n <= SMALL {
                return Ok(n);
            }
            // A worker on another machine may lack the staging directory: then the system's.
            let mut disk = tempfile::tempfile_in(spool_dir)
                .or_else(|_| tempfile::tempfile())
                .map_err(spool_failed)?;
            Spooling(&mut disk).write_all(v)?;
            let rest = io::copy(file, &mut Spooling(&mut disk))?;
            *spool = Spool::Disk(disk);
            Ok(n + rest)
        }
        Spool::Disk(disk) => {
            disk.set_len(0).map_err(spool_failed)?;
            disk.seek(SeekFrom::Start(0)).map_err(spool_failed)?;
            io::copy(file, &mut Spooling(disk))
        }
    }
}

/// An error of the spool file (a full staging disk), told apart from a read error of the source.
#[derive(Debug)]
struct SpoolFailed(io::Error);

impl std::fmt::Display for SpoolFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the spool file: {}", self.0)
    }
}

impl std::error::Error for SpoolFailed {}

fn spool_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SpoolFailed(e))
}

/// The spool file, its write errors marked [`SpoolFailed`].
struct Spooling<'a>(&'a mut File);

impl Write for Spooling<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(spool_failed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(spool_failed)
    }
}
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    meta: &Metadata,
    kind: tar::EntryType,
    size: u64,
    data: impl Read,
    extra: &Extra,
) -> Result<()> {
    let fm = FileMeta::of(meta);
    let link = extra.link.as_deref();
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    if name.len() > 100 {
        pax.push(("path", name.to_vec()));
    }
    if let Some(l) = link.filter(|l| l.len() > 100) {
        pax.push(("linkpath", l.to_vec()));
    }
    if fm.mtime_nsec != 0 || fm.mtime < 0 {
        pax.push(("mtime", pax_time(fm.mtime, fm.mtime_nsec).into_bytes()));
    }
    if fm.uid > 0o7777777 {
        pax.push(("uid", fm.uid.to_string().into_bytes()));
    }
    if fm.gid > 0o7777777 {
        pax.push(("gid", fm.gid.to_string().into_bytes()));
    }
    if size > 0o77777777777 {
        pax.push(("size", size.to_string().into_bytes()));
    }
    let io_err = |e| {
        Error::io(
            format!("cannot write tar entry {:?}", String::from_utf8_lossy(name)),
            e,
        )
    };
    if !pax.is_empty() || !extra.pax.is_empty() {
        let records = pax.iter().map(|(k, v)| (*k, v.as_slice()));
        let records = records.chain(extra.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        builder.append_pax_extensions(records).map_err(io_err)?;
    }
    let mut header = tar::Header::new_ustar();
    if let Some(ustar) = header.as_ustar_mut() {
        let n = name.len().min(100);
        ustar.name[..n].copy_from_slice(&name[..n]);
        if let Some(l) = link {
            let n = l.len().min(100);
            ustar.linkname[..n].copy_from_slice(&l[..n]);
        }
    }
    header.set_entry_type(kind);
    header.set_mode(fm.mode);
    header.set_uid(u64::from(fm.uid.min(0o7777777)));
    header.set_gid(u64::from(fm.gid.min(0o7777777)));
    header.set_mtime(fm.mtime.max(0) as u64);
    header.set_size(size.min(0o77777777777));
    if let Some((major, minor)) = extra.device {
        header.set_device_major(major).map_err(io_err)?;
        header.set_device_minor(minor).map_err(io_err)?;
    }
    header.set_cksum();
    builder.append(&header, data).map_err(io_err)
}

pub(super) fn pax_time(secs: i64, nsec: u32) -> String {
    if secs < 0 && nsec > 0 {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
    } else {
        format!("{secs}.{nsec:09}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_just_now_is_unproven_until_racy_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"written").unwrap();
        let wait = racy(&fs::metadata(&path).unwrap()).expect("changed just now");
        assert!(wait <= RACY);
        std::thread::sleep(wait + std::time::Duration::from_millis(20));
        assert_eq!(racy(&fs::metadata(&path).unwrap()), None);
    }

    #[test]
    fn a_read_of_a_file_changed_just_now_waits_and_reads_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"written").unwrap();
        let mut file = File::open(&path).unwrap();
        let before = file.metadata().unwrap();
        let s = settled_read(&mut file, before, dir.path(), Vec::new(), &[]).unwrap();
        assert_eq!((s.len, s.reads), (7, 2), "read again after the wait");
    }
}
