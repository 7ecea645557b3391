//! `FsTarget`: a node that is a local directory (a disk, a mounted share).
//!
//! Writes go to a hidden temporary name in the final directory, are fsynced, renamed into place and
//! the directory is fsynced, so a crash leaves either the whole object or none (plus a hidden
//! temporary that `list` never returns). The node's root (the URL's path) must exist: a missing root
//! is an unmounted disk, not something to create behind the user's back, except by `init`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ObjectKey, Payload, Target};
use crate::error::{io_status, Error, ErrorKind, Result};

/// A node backed by a local directory.
#[derive(Debug)]
pub struct FsTarget {
    name: String,
    node_root: PathBuf,
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FsTarget {
    /// A node named `name` whose root is `node_root`; objects live in `node_root/directory`.
    pub fn new(name: &str, node_root: &Path, directory: &str) -> Self {
        FsTarget {
            name: name.to_owned(),
            node_root: node_root.to_path_buf(),
            root: node_root.join(directory),
        }
    }

    /// Creates the node's root directory (used by `init`).
    pub fn create_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| self.err("cannot create", &self.root, e))
    }

    fn err(&self, what: &str, path: &Path, e: io::Error) -> Error {
        let kind = if e.kind() == io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Target
        };
        Error::new(kind, format!("{what} {}", path.display()))
            .with_status(io_status(&e))
            .with_context("node", &self.name)
            .with_source(e)
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn check_node_root(&self) -> Result<()> {
        match fs::metadata(&self.node_root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::target(format!(
                "node root {} is not a directory",
                self.node_root.display()
            ))
            .with_context("node", &self.name)),
            Err(e) => Err(Error::target(format!(
                "node root {} is not reachable (is the disk mounted? `coldvault init` creates it)",
                self.node_root.display()
            ))
            .with_context("node", &self.name)
            .with_source(e)),
        }
    }

    /// Refuses to write into `dir` when a directory between the job directory and `dir` is a
    /// symbolic link: one planted there (`data/ab` -> `/etc`) would lead writes out of the node.
    fn check_no_symlink(&self, dir: &Path) -> Result<()> {
        let Ok(below) = dir.strip_prefix(&self.root) else {
            return Ok(());
        };
        let mut cur = self.root.clone();
        for c in below.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        format!(
                            "refusing to write through {}: it is a symbolic link, which leads out of the node",
                            cur.display()
                        ),
                    )
                    .with_context("node", &self.name))
                }
                Ok(_) => {}
                Err(_) => return Ok(()), // missing from here down: created as real directories
            }
        }
        Ok(())
    }

    /// A temporary name beside `path`, unique in this process and among processes.
    fn temp_name(dir: &Path, path: &Path) -> PathBuf {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dir.join(format!(
            ".{file_name}.tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Writes `payload` under a temporary name in `key`'s directory (made if missing, never
    /// through a symlink) and syncs it; returns the key's path and the temporary's.
    fn stage(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<(PathBuf, PathBuf)> {
        self.check_node_root()?;
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root);
        self.check_no_symlink(dir)?;
        fs::create_dir_all(dir).map_err(|e| self.err("cannot create", dir, e))?;
        let tmp = Self::temp_name(dir, &path);
        if let Err(e) = self.write_temp(&tmp, payload) {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("cannot write", &tmp, e));
        }
        Ok((path, tmp))
    }

    /// Syncs the directory holding `path`, so that a name just made survives a crash.
    fn sync_dir(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("cannot sync", dir, e))
    }

    fn write_temp(&self, tmp: &Path, payload: Payload<'_>) -> io::Result<()> {
        match payload {
            Payload::File(src) => {
                fs::copy(src, tmp)?;
                File::open(tmp)?.sync_all()
            }
            Payload::Bytes(bytes) => {
                let mut f = File::create(tmp)?;
                f.write_all(bytes)?;
                f.sync_all()
            }
            Payload::Paced(inner, _) => {
                let mut f = File::create(tmp)?;
                io::copy(&mut payload.open()?, &mut f)?;
                // As `fs::copy` does for an unpaced one: the staged file's mode.
                if let Payload::File(src) = inner {
                    f.set_permissions(fs::metadata(src)?.permissions())?;
                }
                f.sync_all()
            }
        }
    }
}

impl Target for FsTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        let (path, tmp) = self.stage(key, payload)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("cannot commit", &path, e));
        }
        self.sync_dir(&path)
    }

    /// Written under a temporary name, then hard-linked to its key: `link` fails when the key
    /// exists, so of two writers exactly one creates it, and nobody sees it half-written.
    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        let (path, tmp) = self.stage(key, Payload::Bytes(bytes))?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.sync_dir(&path).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.err("cannot commit", &path, e)),
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        let path = self.path(key);
        let f = File::open(&path).map_err(|e| self.err("cannot read", &path, e))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        let path = self.path(key);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_node_root()?;
                Ok(None)
            }
            Err(e) => Err(self.err("cannot stat", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.check_node_root()?;
        let mut out = Vec::new();
        let start = self.root.join(prefix);
        let mut stack = vec![(start, prefix.trim_end_matches('/').to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("cannot list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.err("cannot list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let key = format!("{rel}/{name}");
                let ft = entry
                    .file_type()
                    .map_err(|e| self.err("cannot list", &dir, e))?;
                if ft.is_dir() {
                    stack.push((entry.path(), key));
                } else {
                    out.push(ObjectKey::new(key));
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("cannot delete", &path, e)),
        }
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn remove_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("cannot list", &dir, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else if dead_writers_temp(&entry.file_name().to_string_lossy()) {
                    fs::remove_file(&path).map_err(|e| self.err("cannot remove", &path, e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// `.NAME.tmp.PID.N` written by a process that no longer runs.
fn dead_writers_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let (Some(n), Some(pid), Some(head)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    head.ends_with(".tmp")
        && n.bytes().all(|b| b.is_ascii_digit())
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !crate::util::process_alive(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_never_writes_through_a_symlinked_directory_inside_the_job_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t = FsTarget::new("n", &dir.path().join("node"), "cold/job");
        t.create_root().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let data = dir.path().join("node/cold/job/data");
        fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("ab")).unwrap();
        let e = t
            .put(
                &ObjectKey::new("data/ab/abcd.tar.zst"),
                Payload::Bytes(b"x"),
            )
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        t.put(
            &ObjectKey::new("data/cd/cdef.tar.zst"),
            Payload::Bytes(b"x"),
        )
        .unwrap();
    }
}
