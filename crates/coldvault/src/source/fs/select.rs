//! What of a tree a backup reads: the job's `exclude` patterns (gitignore syntax, relative to the
//! root), `exclude_if_present` tag files, `one_file_system`, and the directories coldvault writes
//! into itself (a node's directory, the staging directory) when they lie inside the tree.
//!
//! Planning and reading build their [`Selector`] from the same job, so both walk the same entries:
//! an excluded entry is in no task's range count, fingerprint or data file.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};
use crate::job::{Job, NodeUrl, TreeSelection};
use crate::path::RelPath;

/// Compiles `exclude` patterns; an invalid one is a job-file error naming it.
pub(crate) fn compile_excludes(patterns: &[String]) -> Result<Gitignore> {
    let mut b = GitignoreBuilder::new("/");
    for p in patterns {
        b.add_line(None, p).map_err(|e| {
            Error::config(format!(
                "[source] exclude: {p:?} is not a valid pattern: {e}"
            ))
        })?;
    }
    b.build()
        .map_err(|e| Error::config(format!("[source] exclude: {e}")))
}

/// Whether the walk takes an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stored, and a directory is descended into.
    Take,
    /// A directory on another file system (`one_file_system`): stored, not descended into.
    TakeNotInside,
    /// Left out, with everything below it.
    Leave,
}

/// The compiled selection of one job's tree.
pub(crate) struct Selector {
    excludes: Gitignore,
    tags: Vec<Vec<u8>>,
    root_dev: Option<u64>,
    own: Vec<RelPath>,
    /// What the selection leaves out automatically, for `plan` and `backup` to say.
    pub notes: Vec<String>,
}

impl Selector {
    /// The selector of `job`'s tree rooted at `root`.
    pub(crate) fn new(job: &Job, root: &Path, select: &TreeSelection) -> Result<Selector> {
        let root_meta =
            std::fs::metadata(root).map_err(|e| super::read_err("cannot stat", root, e))?;
        let mut s = Selector {
            excludes: compile_excludes(&select.exclude)?,
            tags: select
                .exclude_if_present
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
            root_dev: select.one_file_system.then(|| root_meta.dev()),
            own: Vec::new(),
            notes: Vec::new(),
        };
        let root = real_path(root);
        let mut own: Vec<(String, PathBuf)> = job
            .repository
            .nodes
            .iter()
            .filter_map(|n| match &n.url {
                NodeUrl::File { path } => Some((format!("node {}", n.name), path.clone())),
                _ => None,
            })
            .collect();
        own.push(("the staging directory".to_owned(), job.run.staging.clone()));
        for (what, dir) in own {
            let Ok(rel) = real_path(&dir).strip_prefix(&root).map(Path::to_owned) else {
                continue;
            };
            let rel = RelPath::from_untrusted(rel.as_os_str().as_bytes())?;
            s.notes.push(if rel.is_root() {
                format!("{what} ({}) is the tree's root", dir.display())
            } else {
                format!("{what} lies inside the tree: {} is left out", rel.lossy())
            });
            s.own.push(rel);
        }
        Ok(s)
    }

    /// Whether the entry at `rel` (at `path`, with `meta`) is taken.
    pub(crate) fn verdict(&self, rel: &RelPath, path: &Path, meta: &Metadata) -> Verdict {
        if self.own.iter().any(|o| rel == o || rel.is_inside(o)) {
            return Verdict::Leave;
        }
        let dir = meta.is_dir();
        let as_path = Path::new(OsStr::from_bytes(rel.as_bytes()));
        if self.excludes.matched(as_path, dir).is_ignore() {
            return Verdict::Leave;
        }
        if dir
            && self
                .tags
                .iter()
                .any(|t| std::fs::symlink_metadata(path.join(OsStr::from_bytes(t))).is_ok())
        {
            return Verdict::Leave;
        }
        match self.root_dev {
            Some(dev) if dir && meta.dev() != dev => Verdict::TakeNotInside,
            _ => Verdict::Take,
        }
    }
}

/// `path` with symbolic links resolved as far as it exists; the rest (not made yet) appended.
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return rest.into_iter().rev().fold(real, |p, c| p.join(c));
        }
        match (cur.file_name().map(ToOwned::to_owned), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => {
                return path
                    .components()
                    .filter(|c| !matches!(c, Component::CurDir))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], rel: &str, dir: bool) -> bool {
        let g =
            compile_excludes(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap();
        g.matched(Path::new(rel), dir).is_ignore()
    }

    #[test]
    fn exclude_patterns_follow_gitignore_rules() {
        assert!(m(&["*.tmp"], "a.tmp", false));
        assert!(m(&["*.tmp"], "x/y/a.tmp", false));
        assert!(m(&["/cache/"], "cache", true));
        assert!(!m(&["/cache/"], "cache", false));
        assert!(!m(&["/cache/"], "x/cache", true));
        assert!(m(&["**/node_modules/"], "a/b/node_modules", true));
        assert!(m(&["**/node_modules/"], "node_modules", true));
        assert!(!m(&["*.tmp", "!keep.tmp"], "keep.tmp", false));
        assert!(!m(&["*.tmp"], "a.tmpx", false));
    }

    #[test]
    fn an_invalid_pattern_is_a_job_file_error_naming_it() {
        let e = compile_excludes(&["a[z-a]".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("\"a[z-a]\""), "{e}");
    }

    #[test]
    fn real_path_keeps_the_part_that_does_not_exist_yet() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        assert_eq!(real_path(&d.path().join("x/y")), real.join("x/y"));
    }
}
