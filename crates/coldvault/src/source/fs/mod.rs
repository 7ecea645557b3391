//! File-tree source: plan by walking in [`RelPath`] order, read a range of that order into a tar
//! (pax) stream, read a part of a large file as raw bytes.
//!
//! The walk visits each directory's entries sorted by name and descends into a directory right
//! after its own entry, so the walk order is the `RelPath` order and every subtree is a contiguous
//! range. A reader of `[start, end)` skips every subtree that lies wholly outside its range and stops
//! at the first path at or after `end`. Memory is bounded by the depth of the tree times the size of
//! the largest directory, never by the number of files.

use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

mod acl;
mod check;
mod entry;
mod notes;
mod read;
mod restore;
mod sparse;
mod special;
mod untar;
mod xattr;

pub use restore::Deferred;

pub(crate) use read::{read_files, read_part};

use super::{
    EntryRestored, EntryWork, Planned, RestoreRun, Restored, RunRecord, RunSource, SourceKind,
    TaskRead,
};
use crate::catalog::{FileMeta, FilesTask, PartTask, TaskKind};
use crate::error::{Error, Result};
use crate::fetch::Fetcher;
use crate::job::{Job, Source};
use crate::path::RelPath;

/// Cost of one entry beyond its contents: a tar header.
const ENTRY_OVERHEAD: u64 = 512;

/// A file tree.
pub(crate) struct FsSource;

/// The root of an `fs` job's tree.
fn root(job: &Job) -> Result<&Path> {
    match &job.source {
        Source::Fs { path } => Ok(path),
        _ => Err(Error::internal(
            "a file-tree source for a job of another kind",
        )),
    }
}

impl SourceKind for FsSource {
    fn name(&self) -> &'static str {
        "fs"
    }

    fn plan(&self, job: &Job) -> Result<Vec<Planned>> {
        Ok(plan_fingerprinted(root(job)?, job.split.target_bytes)?
            .into_iter()
            .map(|(kind, bytes, items, print)| Planned {
                kind,
                bytes,
                items,
                fingerprint: Some(print),
            })
            .collect())
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
        Ok(Box::new(TreeReader { root: root(job)? }))
    }

    fn restore(&self, r: &RestoreRun<'_>) -> Result<Restored> {
        restore::restore(r)
    }

    fn check_manifest(&self, manifest: &crate::catalog::Manifest) -> Vec<String> {
        check::incomplete_files(manifest)
    }

    fn restore_entry(
        &self,
        ctx: &Fetcher<'_>,
        _job: &Job,
        work: &EntryWork,
    ) -> Result<EntryRestored> {
        restore::restore_entry(ctx, work)
    }
}

/// Reads the tasks of a file tree; the tree itself is the only state.
struct TreeReader<'a> {
    root: &'a Path,
}

impl RunSource for TreeReader<'_> {
    fn read(
        &self,
        kind: &TaskKind,
        _snapshot: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<TaskRead> {
        match kind {
            TaskKind::Files(t) => {
                let (stats, warnings) = read_files(
                    self.root,
                    t.start.as_ref(),
                    t.end.as_ref(),
                    &t.split_files,
                    out,
                )?;
                Ok(TaskRead {
                    stats,
                    file: None,
                    warnings,
                })
            }
            TaskKind::FilePart(p) => {
                let (mut stats, mut meta) = read_part(
                    self.root,
                    &p.path,
                    p.offset,
                    p.len,
                    p.part + 1 == p.parts,
                    out,
                )?;
                // A file is counted once, by its first part: counts match the tree's.
                stats.files = u64::from(p.part == 0);
                // Its attributes ride in the manifest, with its mode and times.
                let mut notes = notes::Notes::default();
                meta.attrs = xattr::read(&p.path.to_path(self.root), &p.path, &mut notes);
                Ok(TaskRead {
                    stats,
                    file: Some(meta),
                    warnings: notes.into_warnings(),
                })
            }
            other => Err(Error::internal(format!(
                "a {} task for a file-tree source",
                other.name()
            ))),
        }
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
            attrs: crate::catalog::FileAttrs::default(),
        }
    }
}

/// Walks the entries of the tree at `root` whose paths lie in `[start, end)`, in order.
pub(crate) fn walk(
    root: &Path,
    start: Option<&RelPath>,
    end: Option<&RelPath>,
    visit: &mut dyn FnMut(&RelPath, &Path, &Metadata) -> Result<()>,
) -> Result<()> {
    walk_dir(root, &RelPath::root(), start, end, visit).map(|_| ())
}

/// Returns `Ok(false)` once the walk has passed `end`.
fn walk_dir(
    dir: &Path,
    rel: &RelPath,
    start: Option<&RelPath>,
    end: Option<&RelPath>,
    visit: &mut dyn FnMut(&RelPath, &Path, &Metadata) -> Result<()>,
) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_root() => return Ok(true),
        Err(e) => return Err(read_err("cannot list directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_err("cannot list directory", dir, e))?;
        names.push(entry.file_name());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child = rel.join(name.as_bytes());
        if end.is_some_and(|e| child >= *e) {
            return Ok(false);
        }
        let path = dir.join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err("cannot stat", &path, e)),
        };
        let after_start = start.is_none_or(|s| child >= *s);
        if after_start {
            visit(&child, &path, &meta)?;
        }
        let reaches_start = after_start || start.is_some_and(|s| s.is_inside(&child));
        if meta.is_dir() && reaches_start && !walk_dir(&path, &child, start, end, visit)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::source_err(format!("{what} {}", path.display())).with_source(e)
}

/// Plans a file tree: ranges of about `target` bytes, and parts for files larger than `target`.
/// Returns (kind, estimated bytes, estimated items) per task.
#[cfg(test)]
pub(crate) fn plan(root: &Path, target: u64) -> Result<Vec<(TaskKind, u64, u64)>> {
    Ok(plan_fingerprinted(root, target)?
        .into_iter()
        .map(|(k, b, i, _)| (k, b, i))
        .collect())
}

/// Plans a tree into ranges of about `target` bytes and parts of larger files. Each task comes
/// with a fingerprint of the metadata of what it reads (path, mode, owner, size, modification and
/// change times, inode): equal fingerprints mean unchanged entries, which an incremental backup
/// takes from the parent snapshot without reading them.
pub(crate) fn plan_fingerprinted(
    root: &Path,
    target: u64,
) -> Result<Vec<(TaskKind, u64, u64, String)>> {
    let mut tasks = Vec::new();
    let mut start: Option<RelPath> = None;
    let mut split_files = Vec::new();
    let mut bytes = 0u64;
    let mut items = 0u64;
    let root_meta = fs::symlink_metadata(root).map_err(|e| read_err("cannot stat", root, e))?;
    let mut print = blake3::Hasher::new();
    fingerprint(&mut print, &RelPath::root(), &root_meta);
    walk(root, None, None, &mut |rel, _path, meta| {
        if items > 0 && bytes >= target {
            tasks.push((
                TaskKind::Files(FilesTask {
                    start: start.take(),
                    end: Some(rel.clone()),
                    split_files: std::mem::take(&mut split_files),
                }),
                bytes,
                items,
                std::mem::replace(&mut print, blake3::Hasher::new())
                    .finalize()
                    .to_hex()
                    .to_string(),
            ));
            start = Some(rel.clone());
            bytes = 0;
            items = 0;
        }
        bytes += ENTRY_OVERHEAD;
        items += 1;
        if meta.is_file() && meta.len() > target {
            split_files.push(rel.clone());
            let mut own = blake3::Hasher::new();
            fingerprint(&mut own, rel, meta);
            let own = own.finalize().to_hex().to_string();
            let parts = meta.len().div_ceil(target);
            for part in 0..parts {
                let offset = part * target;
                let len = target.min(meta.len() - offset);
                tasks.push((
                    TaskKind::FilePart(PartTask {
                        path: rel.clone(),
                        offset,
                        len,
                        part: part as u32,
                        parts: parts as u32,
                    }),
                    len,
                    1,
                    own.clone(),
                ));
            }
        } else {
            fingerprint(&mut print, rel, meta);
            if meta.is_file() {
                bytes += meta.len().div_ceil(512) * 512;
            }
        }
        Ok(())
    })?;
    tasks.push((
        TaskKind::Files(FilesTask {
            start,
            end: None,
            split_files,
        }),
        bytes,
        items,
        print.finalize().to_hex().to_string(),
    ));
    Ok(tasks)
}

/// Adds what says whether an entry changed to `h`.
fn fingerprint(h: &mut blake3::Hasher, rel: &RelPath, m: &Metadata) {
    h.update(&(rel.as_bytes().len() as u64).to_le_bytes());
    h.update(rel.as_bytes());
    for v in [
        m.mode() as i64,
        m.uid() as i64,
        m.gid() as i64,
        m.len() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino() as i64,
        m.dev() as i64,
    ] {
        h.update(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
