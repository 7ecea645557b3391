//! Restoring a file tree: tar streams and file parts into a target directory.
//!
//! Safety: every path is parsed with [`RelPath::from_untrusted`] (no absolute paths, no `..`); every
//! ancestor of a path is checked to be a real directory, never a symlink, before anything is created
//! in it; files are created with `O_CREAT|O_EXCL` (or `O_NOFOLLOW` for parts), so no write follows a
//! symlink. Directory and large-file metadata is applied at the end, once everything inside exists.
//! Hard links are made only to files the same data file created ([`special::link`]); FIFOs and
//! device nodes are never opened.
//!
//! Metadata is set in this order: owner, mode, times, then extended attributes and ACLs (a
//! `chown` would clear a file capability). What a restore cannot set as it was (attributes and
//! device nodes that need root) is a warning naming the entry, never silence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::entry::{self, EntryInfo};
use super::notes::Notes;
use super::sparse::{self, HoleWriter};
use super::special::{self, Created};
use super::untar::{Head, Untar};
use super::xattr::{self, On};
use crate::catalog::{FileAttrs, FileMeta, Problem, ReadStats, TaskEntry, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::path::RelPath;
use crate::source::{EntryRestored, EntryWork, RestoreRun, RestoreTarget, Restored};

pub(super) fn restore(r: &RestoreRun<'_>) -> Result<Restored> {
    // Complete before written: a manifest that misses part of a file restores nothing.
    let gaps = super::check::incomplete_files(r.manifest);
    if !gaps.is_empty() {
        return Err(Error::integrity(format!(
            "the manifest of snapshot {} is incomplete: {}",
            r.manifest.id,
            gaps.join("; ")
        )));
    }
    let target = r.to.path("file-tree")?;
    prepare_target(target, r.opts.force)?;
    // Absolute: executors of a Spark cluster write into it from other working directories.
    let target = std::path::absolute(target)
        .map_err(|e| Error::io(format!("cannot resolve {}", target.display()), e))?;
    let include = Include::new(&r.opts.include)?;
    // Files the snapshot says it does not hold (its warnings name them) are left out.
    let not_held = super::check::not_held(r.manifest);
    let entries: Vec<&TaskEntry> = r
        .manifest
        .tasks
        .iter()
        .filter(|t| wanted(&include, &t.kind))
        .filter(|t| !matches!(&t.kind, TaskKind::FilePart(p) if not_held.contains(&p.path)))
        .collect();
    let all = r.each_entry(&entries, &RestoreTarget::Path(target.clone()))?;
    let mut warnings = all.warnings;
    warnings.extend(apply_deferred(&target, all.deferred)?.into_lines());
    Ok(Restored {
        stats: all.stats,
        problems: all.problems,
        warnings,
        ..Restored::default()
    })
}

/// Restores one data file into the directory of `work` (a worker's share of a restore).
pub(super) fn restore_entry(ctx: &Fetcher<'_>, work: &EntryWork) -> Result<EntryRestored> {
    let include = Include::new(&work.include)?;
    let r = Restorer::new(work.to.path("file-tree")?, &include, work.force);
    let (stats, problems, notes) = r.restore_entry(ctx, &work.entry)?;
    Ok(EntryRestored {
        stats,
        problems,
        warnings: notes.into_lines(),
        deferred: r.into_deferred(),
    })
}

/// Whether a task has anything `include` wants.
pub(crate) fn wanted(include: &Include, k: &TaskKind) -> bool {
    match k {
        TaskKind::FilePart(p) => include.matches(&p.path),
        _ => true,
    }
}

/// Metadata applied once every data file is restored: directories (their times and modes change
/// while their contents are written) and large files written in parts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Deferred {
    dirs: Vec<(RelPath, FileMeta)>,
    /// Large files: their metadata (its size is the one every part agrees on).
    parts: Vec<(RelPath, FileMeta)>,
}

impl Deferred {
    /// Adds what another worker deferred.
    pub fn merge(&mut self, other: Deferred) {
        self.dirs.extend(other.dirs);
        self.parts.extend(other.parts);
    }
}

pub(crate) fn prepare_target(target: &Path, force: bool) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let non_empty = fs::read_dir(target)
                .map_err(|e| Error::io(format!("cannot read {}", target.display()), e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(Error::config(format!(
                    "restore target {} is not empty (use --force to restore into it)",
                    target.display()
                )));
            }
            Ok(())
        }
        Ok(_) => Err(Error::config(format!(
            "restore target {} exists and is not a directory",
            target.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(target)
            .map_err(|e| Error::io(format!("cannot create {}", target.display()), e)),
        Err(e) => Err(Error::io(format!("cannot stat {}", target.display()), e)),
    }
}

/// Restores data files of a file tree into one target; shared by the threads of one process.
pub(crate) struct Restorer<'a> {
    root: &'a Path,
    include: &'a Include,
    force: bool,
    dirs: Mutex<Vec<(RelPath, FileMeta)>>,
    /// Large files written in parts, with their metadata.
    parts: Mutex<BTreeMap<RelPath, FileMeta>>,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

impl<'a> Restorer<'a> {
    pub(crate) fn new(root: &'a Path, include: &'a Include, force: bool) -> Self {
        Restorer {
            root,
            include,
            force,
            dirs: Mutex::new(Vec::new()),
            parts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Restores one data file: its checksum is checked first, then it is decoded into the target.
    /// Returns what it wrote, the replicas it skipped and what it could not restore as it was.
    pub(crate) fn restore_entry(
        &self,
        ctx: &Fetcher<'_>,
        t: &TaskEntry,
    ) -> Result<(ReadStats, Vec<String>, Notes)> {
        if !t.deltas.is_empty() {
            return self.restore_chain(ctx, t);
        }
        let (data, problems) = ctx.fetch(&t.data)?;
        let (stats, notes) = match &t.kind {
            TaskKind::Files { .. } => self.extract(&|| data.open(), ctx, None)?,
            TaskKind::FilePart(p) => {
                let mut reader = data.open()?;
                let (path, offset) = (&p.path, &p.offset);
                let meta = t.file.clone().ok_or_else(|| {
                    Error::integrity(format!("file part of {path} has no file metadata"))
                })?;
                let stats = self.write_part(path, *offset, &meta, &mut reader, ctx)?;
                (stats, Notes::default())
            }
            TaskKind::Table(_) | TaskKind::PgRange(_) | TaskKind::MyRange(_) => {
                return Err(Error::integrity("a table in a file-tree snapshot"));
            }
        };
        Ok((stats, problems, notes))
    }

    /// What is left to apply once every data file is restored.
    pub(crate) fn into_deferred(self) -> Deferred {
        Deferred {
            dirs: self.dirs.into_inner().unwrap_or_default(),
            parts: self
                .parts
                .into_inner()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    /// Makes sure every ancestor of `rel` is a real directory inside the root, creating missing
    /// ones. `checked` is the directory the caller checked last, whose ancestors need no check
    /// again: a restore never turns a directory into anything else (it only creates, and `force`
    /// replaces non-directories alone).
    fn ensure_parents(&self, rel: &RelPath, checked: &mut Option<RelPath>) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if checked.as_ref() == Some(&parent) {
            return Ok(());
        }
        let mut cur = self.root.to_path_buf();
        for comp in parent.components() {
            cur.push(std::ffi::OsStr::from_bytes(comp));
            self.ensure_dir(&cur, rel)?;
        }
        *checked = Some(parent);
        Ok(())
    }

    fn ensure_dir(&self, path: &Path, for_rel: &RelPath) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::integrity(format!(
                "refusing to write {for_rel}: {} is not a directory (a symlink or a file)",
                path.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.ensure_dir(path, for_rel)
                }
                Err(e) => Err(io_err("cannot create", path, e)),
            },
            Err(e) => Err(io_err("cannot stat", path, e)),
        }
    }

    /// With `force`, removes a non-directory at `path` so it can be created again.
    fn clear(&self, path: &Path) -> Result<()> {
        if !self.force {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Ok(m) if !m.is_dir() => {
                fs::remove_file(path).map_err(|e| io_err("cannot replace", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Restores a range stored as a data file and deltas: the newest delta first, then each
    /// older one and the data file, each leaving out the paths a newer layer holds or deleted.
    /// Every path is written once, from the layer that holds its version in the snapshot, with
    /// the metadata of the newest layer's touched list that names it, if any.
    fn restore_chain(
        &self,
        ctx: &Fetcher<'_>,
        t: &TaskEntry,
    ) -> Result<(ReadStats, Vec<String>, Notes)> {
        let (mut shadow, mut touched) = (HashSet::new(), HashMap::new());
        let (mut stats, mut problems, mut notes) =
            (ReadStats::default(), Vec::new(), Notes::default());
        let newest_first = t
            .deltas
            .iter()
            .rev()
            .map(|d| (&d.data, [&d.deleted, &d.touched]));
        for (data, [deleted, touched_list]) in newest_first.chain([(&t.data, [&None, &None])]) {
            let (verified, p) = ctx.fetch(data)?;
            problems.extend(p);
            let mut layer = Layer {
                shadow: &shadow,
                touched: &touched,
                written: Vec::new(),
            };
            let (s, n) = self.extract(&|| verified.open(), ctx, Some(&mut layer))?;
            stats.add(&s);
            notes.extend(n);
            shadow.extend(layer.written);
            if let Some(deleted) = deleted {
                let (verified, p) = ctx.fetch(deleted)?;
                problems.extend(p);
                let mut r = io::BufReader::new(verified.open()?);
                shadow.extend(super::changes::read_deleted(&mut r)?);
            }
            if let Some(list) = touched_list {
                let (verified, p) = ctx.fetch(list)?;
                problems.extend(p);
                let mut r = io::BufReader::new(verified.open()?);
                for (rel, meta) in super::changes::read_touched(&mut r)? {
                    if !shadow.contains(&rel) {
                        touched.entry(rel).or_insert(meta);
                    }
                }
            }
        }
        Ok((stats, problems, notes))
    }

    /// Extracts one tar data file, which `open` reads from its start; returns what it wrote and
    /// what it could not restore as it was. With `layer` (a delta or the data file under deltas),
    /// leaves out the paths the newer layers shadow, gives a file a newer layer touched that
    /// layer's metadata, and lists the paths this one holds.
    ///
    /// A link entry whose first path was left out (a newer layer deleted or replaced it, or
    /// `--include` does not want it) gets that path's bytes: the data file is read a second
    /// time, for those entries alone ([`Self::relink`]).
    fn extract<'r>(
        &self,
        open: &dyn Fn() -> Result<Box<dyn Read + Send + 'r>>,
        ctx: &Fetcher<'_>,
        mut layer: Option<&mut Layer<'_>>,
    ) -> Result<(ReadStats, Notes)> {
        let mut x = Extraction::default();
        let mut tar = Untar::new(open()?);
        // The regular files of this data file left out (as hashes of their paths: 8 bytes each,
        // however many; one that collides only sends a link to the second read, which matches
        // by path), and the link entries naming them.
        let (mut left_out, mut relinks) = (HashSet::new(), Relinks::new());
        while let Some(head) = tar.next()? {
            let mut info = entry::info(&head)?;
            let kind = tar::EntryType::new(head.kind);
            let regular = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
            if let Some(layer) = layer.as_mut() {
                if layer.shadow.contains(&info.rel) {
                    if regular {
                        left_out.insert(path_hash(&info.rel));
                    }
                    continue;
                }
                if let Some(m) = layer.touched.get(&info.rel) {
                    let meta = &mut info.meta;
                    (meta.mode, meta.uid, meta.gid) = (m.mode, m.uid, m.gid);
                    (meta.mtime, meta.mtime_nsec) = (m.mtime, m.mtime_nsec);
                }
                layer.written.push(info.rel.clone());
            }
            if info.rel.is_root() {
                // The tree's root ("./"): only its directory metadata, for the target itself.
                if kind == tar::EntryType::Directory {
                    if let Ok(mut d) = self.dirs.lock() {
                        d.push((info.rel, info.meta));
                    }
                }
                continue;
            }
            if !self.include.matches(&info.rel) {
                if regular {
                    left_out.insert(path_hash(&info.rel));
                }
                continue;
            }
            if kind == tar::EntryType::Link && !left_out.is_empty() {
                let target = RelPath::from_untrusted(&head.link)?;
                if left_out.contains(&path_hash(&target)) {
                    // The bytes' attributes come from the target on the second read: a link
                    // entry's own (up to a pax record's size each) are not kept meanwhile.
                    info.meta.attrs = FileAttrs::default();
                    relinks.entry(target).or_default().push(info);
                    continue;
                }
            }
            self.extract_entry(&mut tar, &head, &info, &mut x, ctx)?;
        }
        if !relinks.is_empty() {
            self.relink(Untar::new(open()?), relinks, &mut x, ctx)?;
        }
        Ok((x.stats, x.notes))
    }

    /// Restores the link entries of `relinks` from a second read of their data file: the first
    /// link of a group gets its left-out first path's bytes and attributes (and the link
    /// entry's own mode, owner and times, a newer layer's touched list applied), the others
    /// are linked to it.
    fn relink(
        &self,
        mut tar: Untar<Box<dyn Read + Send + '_>>,
        mut relinks: Relinks,
        x: &mut Extraction,
        ctx: &Fetcher<'_>,
    ) -> Result<()> {
        while let Some(head) = tar.next()? {
            let kind = tar::EntryType::new(head.kind);
            if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                continue;
            }
            let info = entry::info(&head)?;
            let Some(links) = relinks.remove(&info.rel) else {
                continue;
            };
            let mut links = links.into_iter();
            let Some(first) = links.next() else { continue };
            let path = first.rel.to_path(self.root);
            self.ensure_parents(&first.rel, &mut x.checked_dir)?;
            self.clear(&path)?;
            let with_bytes = EntryInfo {
                meta: FileMeta {
                    attrs: info.meta.attrs,
                    size: info.meta.size,
                    ..first.meta
                },
                realsize: info.realsize,
                rel: first.rel,
            };
            self.write_file(&mut tar, head.size, &with_bytes, &path, x, ctx)?;
            for link in links {
                let path = link.rel.to_path(self.root);
                self.ensure_parents(&link.rel, &mut x.checked_dir)?;
                self.clear(&path)?;
                let (root, rel, first) = (self.root, &link.rel, &with_bytes.rel);
                if special::link(root, rel, &path, first, &x.created, &mut x.notes)? {
                    x.stats.files += 1;
                }
            }
            if relinks.is_empty() {
                break;
            }
        }
        // Only a damaged or forged data file names a target it does not hold as a file.
        for (target, links) in relinks {
            for link in links {
                let detail = format!(
                    "its data file holds no file {}",
                    String::from_utf8_lossy(target.as_bytes())
                );
                x.notes.note(
                    &link.rel,
                    Problem::NotStored,
                    "hard link not restored",
                    detail,
                );
            }
        }
        Ok(())
    }

    /// Restores one entry; `data` reads its bytes.
    fn extract_entry(
        &self,
        data: &mut dyn Read,
        head: &Head,
        info: &EntryInfo,
        x: &mut Extraction,
        ctx: &Fetcher<'_>,
    ) -> Result<()> {
        let (rel, meta) = (&info.rel, &info.meta);
        let path = rel.to_path(self.root);
        self.ensure_parents(rel, &mut x.checked_dir)?;
        match tar::EntryType::new(head.kind) {
            tar::EntryType::Directory => {
                self.clear(&path)?;
                self.ensure_dir(&path, rel)?;
                x.checked_dir = Some(rel.clone());
                x.stats.dirs += 1;
                if let Ok(mut d) = self.dirs.lock() {
                    d.push((rel.clone(), meta.clone()));
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&path)?;
                self.write_file(data, head.size, info, &path, x, ctx)?;
            }
            tar::EntryType::Symlink => {
                if head.link.is_empty() {
                    return Err(Error::integrity(format!("symlink {rel} has no target")));
                }
                self.clear(&path)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&head.link), &path)
                    .map_err(|e| io_err("cannot create symlink", &path, e))?;
                let _ = std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid));
                let t = filetime::FileTime::from_unix_time(meta.mtime, meta.mtime_nsec);
                filetime::set_symlink_file_times(&path, t, t)
                    .map_err(|e| io_err("cannot set times of", &path, e))?;
                xattr::apply(On::Path(&path), rel, &meta.attrs, &mut x.notes);
                x.stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target = RelPath::from_untrusted(&head.link)?;
                self.clear(&path)?;
                if special::link(self.root, rel, &path, &target, &x.created, &mut x.notes)? {
                    x.stats.files += 1;
                }
            }
            kind @ (tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block) => {
                self.clear(&path)?;
                if special::make_node(&path, rel, kind, head.device, meta, &mut x.notes)? {
                    xattr::apply(On::Path(&path), rel, &meta.attrs, &mut x.notes);
                }
            }
            _ => {
                x.stats.skipped += 1;
                let detail = format!(
                    "tar entry type {:?} is not one coldvault restores",
                    head.kind as char
                );
                x.notes
                    .note(rel, Problem::NotStored, "entry not restored", detail);
            }
        }
        Ok(())
    }

    /// Creates the regular file `path` (nothing is in its way) from `size` bytes of `data`: as
    /// stored, or with its holes for a sparse entry; then its metadata, attributes and ACLs.
    fn write_file(
        &self,
        data: &mut dyn Read,
        size: u64,
        info: &EntryInfo,
        path: &Path,
        x: &mut Extraction,
        ctx: &Fetcher<'_>,
    ) -> Result<()> {
        let rel = &info.rel;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_err("cannot create", path, e))?;
        let n = match info.realsize {
            Some(realsize) => sparse::extract(data, size, &f, realsize, rel)?,
            None => copy(data, &mut f, &mut x.buf, rel, path)?,
        };
        apply_file_meta(&f, path, &info.meta)?;
        xattr::apply(On::File(&f), rel, &info.meta.attrs, &mut x.notes);
        let made = f.metadata().map_err(|e| io_err("cannot stat", path, e))?;
        x.created.add(rel, &made);
        ctx.progress.add_bytes(n);
        x.stats.files += 1;
        x.stats.bytes_read += n;
        Ok(())
    }

    /// Writes one part of a large file at its offset; blocks of zeros become holes.
    fn write_part(
        &self,
        rel: &RelPath,
        offset: u64,
        meta: &FileMeta,
        reader: &mut dyn Read,
        ctx: &Fetcher<'_>,
    ) -> Result<ReadStats> {
        self.ensure_parents(rel, &mut None)?;
        let path = rel.to_path(self.root);
        let f = open_part(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut out = HoleWriter::new(&f, offset);
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                Error::integrity(format!("cannot decode part of {rel}")).with_source(e)
            })?;
            if n == 0 {
                break;
            }
            out.write(&buf[..n])
                .map_err(|e| io_err("cannot write", &path, e))?;
            ctx.progress.add_bytes(n as u64);
        }
        let pos = out.finish().map_err(|e| io_err("cannot write", &path, e))?;
        if let Ok(mut parts) = self.parts.lock() {
            parts.entry(rel.clone()).or_insert_with(|| meta.clone());
        }
        Ok(ReadStats {
            // A file is counted once, by its first part, as the backup counts it.
            files: u64::from(offset == 0),
            bytes_read: pos - offset,
            ..ReadStats::default()
        })
    }
}

/// What a layer of a chain is extracted against, and the paths it holds.
struct Layer<'a> {
    /// The paths newer layers hold or deleted.
    shadow: &'a HashSet<RelPath>,
    /// The files newer layers touched, with the metadata the newest of them gives.
    touched: &'a HashMap<RelPath, FileMeta>,
    written: Vec<RelPath>,
}

/// Link entries whose first path an extraction left out: by that path, the entries in tar order.
type Relinks = HashMap<RelPath, Vec<EntryInfo>>;

/// A path's hash, for the set of paths an extraction left out.
fn path_hash(rel: &RelPath) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rel.as_bytes().hash(&mut h);
    h.finish()
}

/// What extracting one data file keeps track of.
#[derive(Default)]
struct Extraction {
    stats: ReadStats,
    notes: Notes,
    /// The regular files it created: the only targets its hard-link entries may name.
    created: Created,
    /// The directory checked last, with its ancestors (entries come directory by directory).
    checked_dir: Option<RelPath>,
    /// The buffer files are copied through.
    buf: Vec<u8>,
}

/// The buffer a file's bytes are copied through: a file of up to this size is one write.
const COPY_BUFFER: usize = 256 << 10;

/// Copies `data` into `f` (the file at `path`) through `buf`; returns the bytes copied.
fn copy(
    data: &mut dyn Read,
    f: &mut File,
    buf: &mut Vec<u8>,
    rel: &RelPath,
    path: &Path,
) -> Result<u64> {
    use std::io::Write;
    buf.resize(COPY_BUFFER, 0);
    let mut n = 0u64;
    loop {
        let k = match data.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::integrity(format!("cannot extract {rel}")).with_source(e)),
        };
        f.write_all(&buf[..k])
            .map_err(|e| io_err("cannot write", path, e))?;
        n += k as u64;
    }
}

/// Opens the file that parts of a large file are written into, creating it. What is there already
/// and is not a regular file of this target alone (a hard link to a file elsewhere, a FIFO, a
/// device) is removed, never written through. Other parts, written at the same time by other
/// workers, open the same file.
fn open_part(path: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..4 {
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            // No symlink is followed, and a FIFO does not block the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let own = match &opened {
            Ok(f) => {
                let m = f.metadata().map_err(|e| io_err("cannot stat", path, e))?;
                m.is_file() && m.nlink() == 1
            }
            Err(_) => false,
        };
        if own {
            return opened.map_err(|e| io_err("cannot open", path, e));
        }
        drop(opened);
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot replace", path, e)),
        }
    }
    Err(Error::new(
        crate::ErrorKind::Io,
        format!(
            "{} keeps changing while it is restored (something else writes there)",
            path.display()
        ),
    ))
}

/// `--include` patterns.
pub(crate) struct Include(Vec<glob::Pattern>);

impl Include {
    pub(crate) fn new(patterns: &[String]) -> Result<Include> {
        patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p.trim_start_matches('/').trim_end_matches('/'))
                    .map_err(|e| Error::config(format!("--include {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Include)
    }

    /// True when `rel` or one of its ancestors matches (everything matches without patterns).
    pub(crate) fn matches(&self, rel: &RelPath) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let text = String::from_utf8_lossy(rel.as_bytes());
        let mut prefix = String::new();
        for comp in text.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if self.0.iter().any(|p| p.matches(&prefix)) {
                return true;
            }
        }
        false
    }
}

/// Applies deferred metadata: large files (sized to the size their parts agree on), then
/// directories from the deepest up.
pub(crate) fn apply_deferred(root: &Path, d: Deferred) -> Result<Notes> {
    let mut notes = Notes::default();
    let parts: BTreeMap<RelPath, FileMeta> = d.parts.into_iter().collect();
    for (rel, meta) in parts {
        let path = rel.to_path(root);
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        // The size every part agrees on (the manifest was checked): a file that shrank below a
        // part's offset leaves that part empty, so the furthest offset is not its end.
        f.set_len(meta.size)
            .map_err(|e| io_err("cannot size", &path, e))?;
        apply_file_meta(&f, &path, &meta)?;
        xattr::apply(On::File(&f), &rel, &meta.attrs, &mut notes);
    }
    let mut dirs = d.dirs;
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, meta) in dirs {
        let path = rel.to_path(root);
        // A directory replaced by a symlink since it was made is refused, never followed.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(&path)
            .map_err(|e| io_err("cannot open", &path, e))?;
        apply_file_meta(&f, &path, &meta)?;
        xattr::apply(On::File(&f), &rel, &meta.attrs, &mut notes);
    }
    Ok(notes)
}

fn apply_file_meta(f: &File, path: &Path, meta: &FileMeta) -> Result<()> {
    // Ownership first: chown clears setuid bits. Only root may give files away; others keep theirs.
    let _ = std::os::unix::fs::fchown(f, Some(meta.uid), Some(meta.gid));
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(meta.mode))
        .map_err(|e| io_err("cannot set permissions of", path, e))?;
    let mtime = system_time(meta.mtime, meta.mtime_nsec);
    f.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
        .map_err(|e| io_err("cannot set times of", path, e))
}

fn system_time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nsec))
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
