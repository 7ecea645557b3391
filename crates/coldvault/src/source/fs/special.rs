//! Entries that are neither directories, symlinks nor plain file contents: FIFOs and device
//! nodes, sockets, and the later paths of a hard-link group.
//!
//! - FIFOs and character and block devices are tar entries of type 6, 3 and 4 (devices with their
//!   major and minor numbers). Restore makes them with `mknod`: a FIFO always, a device only with
//!   root's `CAP_MKNOD` (without it, a warning names the path). A node is never opened (opening a
//!   device can act on the hardware): its owner, times and attributes are set through its path
//!   without following a symlink, its mode through an `O_PATH` descriptor checked to be the node.
//! - Sockets cannot be archived (tar skips them too): each is left out with a warning naming it.
//! - Hard links: within one task, the second and later paths of a file with several links
//!   (same device and inode) are tar `Link` entries naming the first path, as tar writes them.
//!   Restore links such an entry only to a regular file that the same data file created and
//!   that is still that file: never to anything else in the target, never outside it. A group
//!   whose paths fall in two tasks (the planner cuts the walk order by size, not by inode) is
//!   stored once per task: it comes back as one linked set per task, with the same bytes.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{FileType, Mode, OFlags, CWD};

use super::notes::{cause, Notes};
use crate::catalog::{FileMeta, FileVersion, Problem, ReadStats};
use crate::error::{Error, Result};
use crate::path::RelPath;

/// A node's kind and, for a device, its major and minor numbers.
pub(super) fn node_of(meta: &Metadata) -> Option<(tar::EntryType, Option<(u32, u32)>)> {
    let ft = meta.file_type();
    let dev = || {
        let rdev = meta.rdev();
        Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
    };
    if ft.is_fifo() {
        Some((tar::EntryType::Fifo, None))
    } else if ft.is_char_device() {
        Some((tar::EntryType::Char, dev()))
    } else if ft.is_block_device() {
        Some((tar::EntryType::Block, dev()))
    } else {
        None
    }
}

/// Notes an entry that cannot be stored (a socket, or a type this system has that tar has not).
pub(super) fn leave_out(rel: &RelPath, meta: &Metadata, stats: &mut ReadStats, notes: &mut Notes) {
    stats.skipped += 1;
    let (problem, detail) = if meta.file_type().is_socket() {
        (
            "socket not stored",
            "a socket cannot be archived; the program that listens on it makes it again",
        )
    } else {
        ("entry not stored", "a file of a type tar cannot hold")
    };
    notes.note(rel, Problem::NotStored, problem, detail);
}

/// The content digests of files with other links that a task of the run read whole, with the
/// version each was read at, by device and inode: a group whose paths fall in several ranges is
/// read once, not once per range, to learn that a touch left its content the parent's. Only a
/// settled read whose times prove the next change is noted ([`super::read::racy_at`]), and a
/// digest is only given for a file still at that version. At most [`PROVEN_FILES`] are kept.
#[derive(Default)]
pub(super) struct Proven(Mutex<HashMap<(u64, u64), (FileVersion, String)>>);

/// How many files [`Proven`] remembers (about 100 bytes each).
const PROVEN_FILES: usize = 4096;

impl Proven {
    /// The content digest of the file of `meta`, when a read in this run proved it at this
    /// version.
    pub(super) fn get(&self, meta: &Metadata) -> Option<String> {
        if meta.nlink() < 2 {
            return None;
        }
        let known = self.0.lock().ok()?;
        let (version, content) = known.get(&(meta.dev(), meta.ino()))?;
        (*version == FileVersion::of(meta)).then(|| content.clone())
    }

    /// Notes `content` as the content of the file of `meta`, just read whole and settled.
    pub(super) fn note(&self, meta: &Metadata, content: &str) {
        if meta.nlink() < 2 || super::read::racy_at(meta, std::time::SystemTime::now()).is_some() {
            return;
        }
        if let Ok(mut known) = self.0.lock() {
            if known.len() >= PROVEN_FILES {
                known.clear();
            }
            known.insert(
                (meta.dev(), meta.ino()),
                (FileVersion::of(meta), content.to_owned()),
            );
        }
    }
}

/// The files of one task that have other links, by device and inode.
#[derive(Default)]
pub(super) struct Links(HashMap<(u64, u64), Group>);

/// A hard-link group as the task met it first.
pub(super) struct Group {
    /// The group's first path in the task.
    pub first: RelPath,
    /// Its content digest, when known.
    pub content: Option<String>,
    /// Whether the first path is in this task's tar (later paths are link entries naming it),
    /// or only touched (its bytes are an older layer's).
    pub in_tar: bool,
}

impl Links {
    /// The group of this file, when an earlier path of it was held by the task.
    pub(super) fn earlier(&self, meta: &Metadata) -> Option<&Group> {
        if meta.nlink() < 2 {
            return None;
        }
        self.0.get(&(meta.dev(), meta.ino()))
    }

    /// Remembers `rel`, just held (in the tar or touched), when its file has other links.
    pub(super) fn held(
        &mut self,
        rel: &RelPath,
        meta: &Metadata,
        content: Option<&str>,
        in_tar: bool,
    ) {
        if meta.nlink() > 1 {
            self.0
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| Group {
                    first: rel.clone(),
                    content: content.map(str::to_owned),
                    in_tar,
                });
        }
    }
}

/// The regular files one data file created: the only files its `Link` entries may name.
#[derive(Default)]
pub(super) struct Created(HashMap<RelPath, (u64, u64)>);

impl Created {
    /// Remembers the file `rel`, just created, with its device and inode.
    pub(super) fn add(&mut self, rel: &RelPath, meta: &Metadata) {
        self.0.insert(rel.clone(), (meta.dev(), meta.ino()));
    }
}

/// Makes `path` (the entry `rel`, its parents checked and nothing in its way) a hard link to
/// `target`, a file the same data file created under `root`. True when it did; a target the
/// data file did not create (left out by `--include`) is a warning.
pub(super) fn link(
    root: &Path,
    rel: &RelPath,
    path: &Path,
    target: &RelPath,
    created: &Created,
    notes: &mut Notes,
) -> Result<bool> {
    let Some(&(dev, ino)) = created.0.get(target) else {
        let detail = format!("its first path {target} is not restored (see --include)");
        notes.note(rel, Problem::NotStored, "hard link not restored", detail);
        return Ok(false);
    };
    let from = target.to_path(root);
    let same = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == (dev, ino))
    };
    if !same(&from) {
        return Err(Error::integrity(format!(
            "refusing hard link {rel}: {target} is no longer the file this restore wrote"
        )));
    }
    // linkat without AT_SYMLINK_FOLLOW: the target itself, never what a symlink points to.
    std::fs::hard_link(&from, path).map_err(|e| {
        Error::io(
            format!("cannot link {} to {}", path.display(), from.display()),
            e,
        )
    })?;
    if !same(path) {
        let _ = std::fs::remove_file(path);
        return Err(Error::integrity(format!(
            "refusing hard link {rel}: {target} changed while it was linked"
        )));
    }
    Ok(true)
}

/// Makes the FIFO or device node `path` (the entry `rel`) with `meta`; true when it did. A
/// device without the privilege to make it is a warning.
pub(super) fn make_node(
    path: &Path,
    rel: &RelPath,
    kind: tar::EntryType,
    dev: (u32, u32),
    meta: &FileMeta,
    notes: &mut Notes,
) -> Result<bool> {
    let (ft, what) = match kind {
        tar::EntryType::Fifo => (FileType::Fifo, "FIFO"),
        tar::EntryType::Char => (FileType::CharacterDevice, "character device"),
        _ => (FileType::BlockDevice, "block device"),
    };
    let made = rustix::fs::mknodat(
        CWD,
        path,
        ft,
        Mode::RUSR | Mode::WUSR,
        rustix::fs::makedev(dev.0, dev.1),
    );
    match made.map_err(io::Error::from) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && ft != FileType::Fifo => {
            let detail = format!("making a {what} {}:{}: {}", dev.0, dev.1, cause(&e));
            notes.note(rel, Problem::NotStored, "device not restored", detail);
            return Ok(false);
        }
        Err(e) => {
            return Err(Error::io(
                format!("cannot make {what} {}", path.display()),
                e,
            ))
        }
    }
    set_node_meta(path, rel, ft, meta, notes)?;
    Ok(true)
}

/// Owner, mode and times of a node just made, never following a symlink put in its place.
fn set_node_meta(
    path: &Path,
    rel: &RelPath,
    ft: FileType,
    meta: &FileMeta,
    notes: &mut Notes,
) -> Result<()> {
    let err = |what: &str, e: io::Error| Error::io(format!("cannot {what} {}", path.display()), e);
    // Only root may give files away; others keep theirs (as for files).
    let _ = std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid));
    let fd = rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("open", e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| err("stat", e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != ft {
        return Err(Error::integrity(format!(
            "{} changed while it was restored (something else writes there)",
            path.display()
        )));
    }
    // chmod through the descriptor's /proc link: the node checked above, whatever is at its path.
    let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mode = Mode::from_raw_mode(meta.mode & 0o7777);
    if let Err(e) = rustix::fs::chmodat(CWD, by_fd.as_str(), mode, rustix::fs::AtFlags::empty()) {
        let detail = format!("{:o} through {by_fd}: {}", meta.mode, io::Error::from(e));
        notes.note(rel, Problem::Metadata, "mode not restored", detail);
    }
    let t = filetime::FileTime::from_unix_time(meta.mtime, meta.mtime_nsec);
    filetime::set_symlink_file_times(path, t, t).map_err(|e| err("set the times of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(p: &str) -> RelPath {
        RelPath::from_untrusted(p.as_bytes()).unwrap()
    }

    /// `mode` and a time, owned by the owner of `dir` (whoever runs the test).
    fn meta(mode: u32, dir: &Path) -> FileMeta {
        let me = std::fs::metadata(dir).unwrap();
        FileMeta {
            mode,
            uid: me.uid(),
            gid: me.gid(),
            mtime: 1_600_000_000,
            mtime_nsec: 5,
            size: 0,
            version: None,
            attrs: Default::default(),
        }
    }

    #[test]
    fn a_fifo_is_made_with_its_mode_and_time_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let mut notes = Notes::default();
        let made = make_node(
            &path,
            &rel("fifo"),
            tar::EntryType::Fifo,
            (0, 0),
            &meta(0o4662, dir.path()),
            &mut notes,
        );
        assert!(made.unwrap());
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o4662);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 5));
        assert!(node_of(&m).is_some_and(|(k, d)| k == tar::EntryType::Fifo && d.is_none()));
    }

    #[test]
    fn a_link_names_only_a_file_this_restore_created_and_still_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("made"), b"x").unwrap();
        std::fs::write(root.join("planted"), b"y").unwrap();
        let mut created = Created::default();
        created.add(&rel("made"), &std::fs::metadata(root.join("made")).unwrap());
        let mut notes = Notes::default();
        let ok = link(
            root,
            &rel("l1"),
            &root.join("l1"),
            &rel("made"),
            &created,
            &mut notes,
        );
        assert!(ok.unwrap());
        assert_eq!(std::fs::metadata(root.join("made")).unwrap().nlink(), 2);
        let planted = link(
            root,
            &rel("l2"),
            &root.join("l2"),
            &rel("planted"),
            &created,
            &mut notes,
        );
        assert!(
            !planted.unwrap(),
            "not linked to a file the restore did not write"
        );
        assert!(!root.join("l2").exists());
        // The created file replaced by a symlink to a file elsewhere: refused.
        std::fs::remove_file(root.join("made")).unwrap();
        std::os::unix::fs::symlink(root.join("planted"), root.join("made")).unwrap();
        assert!(link(
            root,
            &rel("l3"),
            &root.join("l3"),
            &rel("made"),
            &created,
            &mut notes
        )
        .is_err());
        assert!(!root.join("l3").exists());
        assert_eq!(std::fs::metadata(root.join("planted")).unwrap().nlink(), 1);
        let w = notes.into_warnings();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].path, "l2");
    }
}
