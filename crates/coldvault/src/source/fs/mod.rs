//! File-tree source: plan by walking in [`RelPath`] order, read a range of that order into a tar
//! (pax) stream, read a part of a large file as raw bytes.
//!
//! The walk visits each directory's entries sorted by name and descends into a directory right
//! after its own entry, so the walk order is the `RelPath` order and every subtree is a contiguous
//! range. A reader of `[start, end)` skips every subtree that lies wholly outside its range and stops
//! at the first path at or after `end`. Memory is bounded by the depth of the tree times the size of
//! the largest directory, never by the number of files.
//!
//! A range's read also writes its index ([`changes`]); read against the parent's index, it stores
//! only the entries added or changed (a delta) and lists the paths gone. A plan after a parent keeps
//! the parent's range boundaries ([`plan::Cuts`]), so that ranges are the same from one backup to
//! the next.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

mod acl;
mod changes;
mod check;
mod entry;
mod notes;
mod parts;
mod plan;
mod read;
mod restore;
mod select;
mod sparse;
mod special;
mod untar;
mod xattr;

pub use restore::Deferred;

use read::Reading;
pub(crate) use select::compile_excludes;
use select::{Selector, Verdict};

use super::{
    Changes, EntryRestored, EntryWork, RestoreRun, Restored, RunRecord, RunSource, SourceKind,
    SourcePlan, TaskRead,
};
use crate::catalog::{FileMeta, FileVersion, Problem, TaskEntry, TaskId, TaskKind, Warning};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::{Job, OnUnreadable, Source, TreeSelection};
use crate::path::RelPath;

/// Cost of one entry beyond its contents: a tar header.
const ENTRY_OVERHEAD: u64 = 512;

/// A file tree.
pub(crate) struct FsSource;

/// The root of an `fs` job's tree and its selection.
fn tree(job: &Job) -> Result<(&Path, &TreeSelection)> {
    match &job.source {
        Source::Fs { path, select } => Ok((path, select)),
        _ => Err(Error::internal(
            "a file-tree source for a job of another kind",
        )),
    }
}

impl SourceKind for FsSource {
    fn needed<'m>(
        &self,
        manifest: &'m crate::catalog::Manifest,
        include: &[String],
    ) -> Result<Vec<&'m crate::store::Receipt>> {
        let include = restore::Include::new(include)?;
        Ok(manifest
            .tasks
            .iter()
            .filter(|t| restore::wanted(&include, &t.kind))
            .flat_map(|t| t.layers())
            .collect())
    }

    fn name(&self) -> &'static str {
        "fs"
    }

    fn plan(&self, job: &Job, parent: Option<&crate::catalog::Manifest>) -> Result<SourcePlan> {
        let (root, select) = tree(job)?;
        let selector = Selector::new(job, root, select)?;
        let cuts = parent.map(|p| plan::Cuts::of(p, job));
        let (tasks, excluded) =
            plan::plan_fingerprinted(root, &selector, job.split.target_bytes, cuts)?;
        let mut notes = selector.notes;
        if excluded > 0 {
            notes.push(format!(
                "{excluded} entries left out by the selection (exclude, exclude_if_present, \
                 coldvault's own directories), with everything below them"
            ));
        }
        Ok(SourcePlan { tasks, notes })
    }

    fn open_run<'a>(
        &self,
        job: &'a Job,
        _kinds: &[&TaskKind],
        _parallel: usize,
    ) -> Result<Box<dyn RunSource + 'a>> {
        self.open_worker(job)
    }

    fn open_worker<'a>(&self, job: &'a Job) -> Result<Box<dyn RunSource + 'a>> {
        let (root, select) = tree(job)?;
        Ok(Box::new(TreeReader {
            root,
            select: Selector::new(job, root, select)?,
            fail_unreadable: select.on_unreadable == OnUnreadable::Fail,
            careful: Mutex::new(BTreeSet::new()),
            proven: special::Proven::default(),
            spool_dir: &job.run.staging,
        }))
    }

    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored> {
        restore::restore(r)
    }

    fn check_manifest(&self, manifest: &crate::catalog::Manifest) -> Vec<String> {
        check::incomplete_files(manifest)
    }

    fn recheck(&self, entries: &mut [&mut TaskEntry], last: bool) -> Vec<TaskId> {
        parts::recheck(entries, last)
    }

    fn restore_entry(
        &self,
        ctx: &Fetcher<'_>,
        _job: &Job,
        work: &EntryWork,
        _sessions: &super::Sessions,
    ) -> Result<EntryRestored> {
        restore::restore_entry(ctx, work)
    }
}

/// Reads the tasks of a file tree: the tree, its selection, and the files found changing while
/// streamed, which later reads spool first.
struct TreeReader<'a> {
    root: &'a Path,
    select: Selector,
    fail_unreadable: bool,
    careful: Mutex<BTreeSet<RelPath>>,
    proven: special::Proven,
    spool_dir: &'a Path,
}

impl TreeReader<'_> {
    /// A read of one task, attempt `attempt`.
    fn reading(&self, attempt: u32) -> Reading<'_> {
        Reading {
            walk: Walk::new(self.root, &self.select, self.fail_unreadable),
            careful: &self.careful,
            proven: &self.proven,
            attempt,
            spool_dir: self.spool_dir,
        }
    }
}

impl RunSource for TreeReader<'_> {
    fn read(
        &self,
        kind: &TaskKind,
        attempt: u32,
        _snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead> {
        let mut r = self.reading(attempt);
        match kind {
            TaskKind::FilePart(p) => {
                let (mut stats, mut file) = r.part(p, out)?;
                // A file is counted once, by its first part: counts match the tree's.
                stats.files = u64::from(p.part == 0 && file.is_some());
                // Its attributes ride in the manifest, with its mode and times.
                if let Some(meta) = file.as_mut() {
                    let mut notes = notes::Notes::default();
                    meta.attrs = xattr::read(&p.path.to_path(self.root), &p.path, &mut notes);
                    r.walk.warnings.extend(notes.into_warnings());
                }
                Ok(TaskRead {
                    stats,
                    file,
                    warnings: r.walk.warnings,
                })
            }
            TaskKind::Files(_) => Err(Error::internal(
                "a file-tree range read without its index (ranges go through read_changes)",
            )),
            other => Err(Error::internal(format!(
                "a {} task for a file-tree source",
                other.name()
            ))),
        }
    }

    fn read_changes(
        &self,
        kind: &TaskKind,
        attempt: u32,
        out: &mut dyn Write,
        changes: &mut Changes<'_>,
    ) -> Result<TaskRead> {
        let TaskKind::Files(t) = kind else {
            return Err(Error::internal(format!(
                "a {} task read as changes",
                kind.name()
            )));
        };
        let mut r = self.reading(attempt);
        let mut compare = changes::Compare::new(
            changes.parent.take(),
            changes.index,
            changes.patch,
            changes.deleted,
            changes.touched,
        )?;
        let (start, end) = (t.start.as_ref(), t.end.as_ref());
        let stats = r.files(start, end, &t.split_files, out, &mut compare)?;
        changes.tally = compare.finish()?;
        Ok(TaskRead {
            stats,
            file: None,
            warnings: r.walk.warnings,
        })
    }

    fn finish(self: Box<Self>) -> Result<RunRecord> {
        Ok(RunRecord::default())
    }
}

impl FileMeta {
    fn of(meta: &Metadata) -> Self {
        FileMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            size: meta.len(),
            version: None,
            attrs: crate::catalog::FileAttrs::default(),
        }
    }
}

impl FileVersion {
    /// The version of the file `meta` describes.
    pub(crate) fn of(meta: &Metadata) -> Self {
        FileVersion {
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A walk of a tree in [`RelPath`] order, through its job's [`Selector`].
pub(crate) struct Walk<'a> {
    pub root: &'a Path,
    pub select: &'a Selector,
    /// Whether an entry that cannot be listed or stat'ed fails the walk (`on_unreadable =
    /// "fail"`) instead of becoming a warning.
    pub fail_unreadable: bool,
    /// Entries the walk could not take: vanished, unreadable (warnings of a read; a plan ignores
    /// them, the read that follows reports them).
    pub warnings: Vec<Warning>,
    /// Entries (with what lies below them) the selection left out.
    pub excluded: u64,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(root: &'a Path, select: &'a Selector, fail_unreadable: bool) -> Self {
        Walk {
            root,
            select,
            fail_unreadable,
            warnings: Vec::new(),
            excluded: 0,
        }
    }

    /// Visits the entries whose paths lie in `[start, end)`, in order.
    pub(crate) fn run(
        &mut self,
        start: Option<&RelPath>,
        end: Option<&RelPath>,
        visit: &mut dyn FnMut(&RelPath, &Path, &Metadata) -> Result<()>,
    ) -> Result<()> {
        let root = self.root;
        self.dir(root, &RelPath::root(), start, end, visit)
            .map(|_| ())
    }

    /// Records that `rel` could not be taken: vanished (`NotFound`) or unreadable.
    pub(crate) fn left_out(
        &mut self,
        rel: &RelPath,
        path: &Path,
        what: &str,
        e: io::Error,
    ) -> Result<()> {
        if e.kind() == io::ErrorKind::NotFound {
            self.warnings.push(Warning::new(
                rel.lossy(),
                Problem::Vanished,
                format!("removed while the backup ran ({what}: {e})"),
            ));
            return Ok(());
        }
        if self.fail_unreadable {
            return Err(read_err(what, path, e));
        }
        self.warnings.push(Warning::new(
            rel.lossy(),
            Problem::Unreadable,
            format!("{what}: {e}"),
        ));
        Ok(())
    }

    /// Returns `Ok(false)` once the walk has passed `end`.
    fn dir(
        &mut self,
        dir: &Path,
        rel: &RelPath,
        start: Option<&RelPath>,
        end: Option<&RelPath>,
        visit: &mut dyn FnMut(&RelPath, &Path, &Metadata) -> Result<()>,
    ) -> Result<bool> {
        let names = match list(dir) {
            Ok(n) => n,
            Err(e) if rel.is_root() => return Err(read_err("cannot list directory", dir, e)),
            Err(e) => {
                self.left_out(rel, dir, "cannot list directory", e)?;
                return Ok(true);
            }
        };
        for name in names {
            let child = rel.join(name.as_bytes());
            if end.is_some_and(|e| child >= *e) {
                return Ok(false);
            }
            let after_start = start.is_none_or(|s| child >= *s);
            let reaches_start = after_start || start.is_some_and(|s| s.is_inside(&child));
            if !reaches_start {
                continue;
            }
            let path = dir.join(&name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    if after_start {
                        self.left_out(&child, &path, "cannot stat", e)?;
                    }
                    continue;
                }
            };
            let verdict = self.select.verdict(&child, &path, &meta);
            if verdict == Verdict::Leave {
                self.excluded += u64::from(after_start);
                continue;
            }
            if after_start {
                visit(&child, &path, &meta)?;
            }
            if meta.is_dir()
                && verdict == Verdict::Take
                && !self.dir(&path, &child, start, end, visit)?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The names in `dir`, sorted by their bytes.
fn list(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn read_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::source_err(format!("{what} {}", path.display())).with_source(e)
}

#[cfg(test)]
mod tests;
