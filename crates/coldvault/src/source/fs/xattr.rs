//! Extended attributes and POSIX ACLs of file-tree entries: read with `llistxattr`/`lgetxattr`
//! (never following a symlink), stored in pax records as `tar --xattrs --acls` writes them, set
//! again on restore.
//!
//! Records: `SCHILY.xattr.<name>` with the raw value for every attribute but the two ACL ones
//! (user.*, trusted.*, security.* including the file capability `security.capability`);
//! `SCHILY.acl.access` and `SCHILY.acl.default` with the ACLs as text ([`super::acl`]). A `%` or
//! `=` in a name is written `%25` / `%3D`, as GNU tar escapes them. A name that is not UTF-8
//! cannot be a pax keyword here: it is left out with a warning.
//!
//! Cost: one `llistxattr` (a size query) per entry; an entry without attributes costs nothing
//! more. trusted.* attributes are only listed to root: a backup by another user does not see them.
//!
//! Restore sets attributes after the owner and mode are set (a `chown` clears
//! `security.capability`), the ACLs after the other attributes, and a directory's only once
//! everything inside it exists (so nothing restored inherits its default ACL). What cannot be set
//! (trusted.* and security.* without root, a filesystem without attributes or ACLs) is a warning
//! naming the entry and the attribute, never an error.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use super::acl;
use super::notes::{cause, Notes};
use crate::catalog::{FileAttrs, Problem, XattrValue};
use crate::path::RelPath;

const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";
const XATTR_PREFIX: &str = "SCHILY.xattr.";
const PAX_ACL_ACCESS: &str = "SCHILY.acl.access";
const PAX_ACL_DEFAULT: &str = "SCHILY.acl.default";

/// The attributes and ACLs of the entry at `path` (a symlink's own, not its target's).
pub(super) fn read(path: &Path, rel: &RelPath, notes: &mut Notes) -> FileAttrs {
    let mut attrs = FileAttrs::default();
    let names = match list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) || e.kind() == io::ErrorKind::NotFound => return attrs,
        Err(e) => {
            notes.note(
                rel,
                Problem::Metadata,
                "extended attributes not stored",
                e.to_string(),
            );
            return attrs;
        }
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let value = match get(path, name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                let name = String::from_utf8_lossy(name);
                notes.note(
                    rel,
                    Problem::Metadata,
                    "extended attribute not stored",
                    format!("{name}: {e}"),
                );
                continue;
            }
        };
        let Ok(name) = std::str::from_utf8(name) else {
            let detail = format!(
                "{:?}: the name is not UTF-8, which a pax record cannot hold",
                String::from_utf8_lossy(name)
            );
            notes.note(
                rel,
                Problem::Metadata,
                "extended attribute not stored",
                detail,
            );
            continue;
        };
        keep(&mut attrs, name, value);
    }
    attrs
}

/// Adds one attribute: the ACL ones as text (raw when they do not decode: still restorable).
fn keep(attrs: &mut FileAttrs, name: &str, value: Vec<u8>) {
    let slot = match name {
        ACL_ACCESS => &mut attrs.acl_access,
        ACL_DEFAULT => &mut attrs.acl_default,
        _ => {
            attrs.xattrs.insert(name.to_owned(), XattrValue(value));
            return;
        }
    };
    match acl::to_text(&value) {
        Ok(text) => *slot = Some(text),
        Err(_) => {
            attrs.xattrs.insert(name.to_owned(), XattrValue(value));
        }
    }
}

/// The NUL-separated names of `path`'s attributes.
fn list(path: &Path) -> io::Result<Vec<u8>> {
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // Attributes were added since the size was asked: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The value of attribute `name` of `path`; `None` when it went away since it was listed.
fn get(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let size = match rustix::fs::lgetxattr_query(path, name) {
            Ok(size) => size,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The pax records of `attrs`, in a fixed order.
pub(super) fn pax_records(attrs: &FileAttrs) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = attrs
        .xattrs
        .iter()
        .map(|(name, v)| (format!("{XATTR_PREFIX}{}", escape(name)), v.0.clone()))
        .collect();
    if let Some(text) = &attrs.acl_access {
        out.push((PAX_ACL_ACCESS.to_owned(), text.clone().into_bytes()));
    }
    if let Some(text) = &attrs.acl_default {
        out.push((PAX_ACL_DEFAULT.to_owned(), text.clone().into_bytes()));
    }
    out
}

/// Takes the pax record `key` into `attrs` when it is an attribute or ACL one; true if it was.
pub(super) fn take_pax(key: &[u8], value: &[u8], attrs: &mut FileAttrs) -> bool {
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
        keep(attrs, &unescape(name), value.to_vec());
    } else if key == PAX_ACL_ACCESS || key == PAX_ACL_DEFAULT {
        let text = String::from_utf8_lossy(value).into_owned();
        let slot = if key == PAX_ACL_ACCESS {
            &mut attrs.acl_access
        } else {
            &mut attrs.acl_default
        };
        *slot = Some(text).filter(|t| !t.trim().is_empty());
    } else {
        return false;
    }
    true
}

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('=', "%3D")
}

fn unescape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).unwrap_or("");
        let (decoded, skip) = match code {
            "25" => ('%', 3),
            "3D" | "3d" => ('=', 3),
            _ => ('%', 1),
        };
        out.push(decoded);
        rest = &rest[at + skip..];
    }
    out.push_str(rest);
    out
}

/// What attributes are set on: an open file, or a path whose last component is not followed
/// (symlinks, FIFOs and device nodes, which are never opened).
#[derive(Clone, Copy)]
pub(super) enum On<'a> {
    File(&'a File),
    Path(&'a Path),
}

/// Sets `attrs` on `on` (the entry `rel`); what cannot be set is noted.
pub(super) fn apply(on: On<'_>, rel: &RelPath, attrs: &FileAttrs, notes: &mut Notes) {
    for (name, value) in &attrs.xattrs {
        if let Err(e) = set(on, name, &value.0) {
            let detail = format!("{name}: {}", cause(&e));
            notes.note(
                rel,
                Problem::Metadata,
                "extended attribute not restored",
                detail,
            );
        }
    }
    for (name, which, text) in [
        (ACL_ACCESS, "access", &attrs.acl_access),
        (ACL_DEFAULT, "default", &attrs.acl_default),
    ] {
        let Some(text) = text else { continue };
        let done = acl::from_text(text, &acl::system_id)
            .and_then(|bin| set(on, name, &bin).map_err(|e| cause(&e)));
        if let Err(why) = done {
            notes.note(
                rel,
                Problem::Metadata,
                "ACL not restored",
                format!("{which} ACL: {why}"),
            );
        }
    }
}

fn set(on: On<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let flags = XattrFlags::empty();
    match on {
        On::File(f) => rustix::fs::fsetxattr(f, name, value, flags),
        On::Path(p) => rustix::fs::lsetxattr(p, name, value, flags),
    }
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_percent_or_equals_are_escaped_as_gnu_tar_does() {
        assert_eq!(escape("user.a=b%c"), "user.a%3Db%25c");
        assert_eq!(unescape("user.a%3Db%25c"), "user.a=b%c");
        assert_eq!(unescape(&escape("user.%3D")), "user.%3D");
        assert_eq!(unescape("user.%zz%"), "user.%zz%");
    }

    #[test]
    fn attributes_and_acls_go_to_pax_records_and_come_back() {
        let mut attrs = FileAttrs::default();
        keep(&mut attrs, "user.k=v", b"\0bin\xff".to_vec());
        keep(&mut attrs, "security.capability", vec![1, 0, 0, 2]);
        attrs.acl_default = Some("user::rwx\ngroup::r-x\nother::---\n".into());
        let records = pax_records(&attrs);
        assert!(records.iter().any(|(k, _)| k == "SCHILY.xattr.user.k%3Dv"));
        let mut back = FileAttrs::default();
        for (k, v) in &records {
            assert!(take_pax(k.as_bytes(), v, &mut back), "{k}");
        }
        assert_eq!(back, attrs);
        assert!(!take_pax(b"mtime", b"1", &mut back));
    }

    #[test]
    fn an_acl_that_does_not_decode_is_kept_raw() {
        let mut attrs = FileAttrs::default();
        keep(&mut attrs, ACL_ACCESS, vec![9, 9, 9]);
        assert_eq!(attrs.acl_access, None);
        assert_eq!(attrs.xattrs[ACL_ACCESS], XattrValue(vec![9, 9, 9]));
    }

    #[test]
    fn user_attributes_are_read_without_following_symlinks_and_set_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        rustix::fs::setxattr(&file, "user.k", b"v", XattrFlags::empty()).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let mut notes = Notes::default();
        let rel = RelPath::from_untrusted(b"f").unwrap();
        let attrs = read(&file, &rel, &mut notes);
        assert_eq!(attrs.xattrs["user.k"], XattrValue(b"v".to_vec()));
        assert!(read(&link, &rel, &mut notes).is_empty());
        let copy = dir.path().join("g");
        let f = File::create(&copy).unwrap();
        apply(On::File(&f), &rel, &attrs, &mut notes);
        assert_eq!(read(&copy, &rel, &mut notes), attrs);
        assert!(notes.into_warnings().is_empty());
    }
}
