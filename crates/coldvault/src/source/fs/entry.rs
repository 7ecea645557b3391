//! A tar entry as restore reads it: its path, its metadata ([`FileMeta`], with attributes and
//! ACLs) and, for a sparse file, its layout. pax records take precedence over the ustar header
//! ([`super::untar`] applies `path`, `size`, `uid` and `gid`): `mtime` with nanoseconds,
//! `SCHILY.xattr.*` and `SCHILY.acl.*` ([`super::xattr`]), and `GNU.sparse.*`
//! ([`super::sparse`]), whose `GNU.sparse.name` is the entry's real path.

use super::sparse::SparseInfo;
use super::untar::Head;
use super::xattr;
use crate::catalog::{FileAttrs, FileMeta};
use crate::error::{Error, Result};
use crate::path::RelPath;

/// What restore needs of one entry besides its data.
pub(super) struct EntryInfo {
    /// Where it goes, relative to the target.
    pub rel: RelPath,
    /// Mode, owner, times, attributes and ACLs.
    pub meta: FileMeta,
    /// For a sparse file (format 1.0): its real size.
    pub realsize: Option<u64>,
}

/// What `head` says of its entry.
pub(super) fn info(head: &Head) -> Result<EntryInfo> {
    let mut meta = FileMeta {
        mode: head.mode & 0o7777,
        uid: u32::try_from(head.uid).map_err(|_| too_large("uid", head.uid))?,
        gid: u32::try_from(head.gid).map_err(|_| too_large("gid", head.gid))?,
        mtime: i64::try_from(head.mtime).map_err(|_| too_large("mtime", head.mtime))?,
        mtime_nsec: 0,
        size: head.size,
        version: None,
        attrs: FileAttrs::default(),
    };
    let mut sparse = SparseInfo::default();
    for (key, value) in &head.pax {
        if !xattr::take_pax(key, value, &mut meta.attrs) && !sparse.take(key, value) {
            take_mtime(key, value, &mut meta);
        }
    }
    let (rel, realsize) = match sparse.layout()? {
        Some((name, size)) => (RelPath::from_untrusted(name)?, Some(size)),
        None => (RelPath::from_untrusted(&head.path)?, None),
    };
    Ok(EntryInfo {
        rel,
        meta,
        realsize,
    })
}

fn too_large(what: &str, value: u64) -> Error {
    Error::integrity(format!("malformed tar header: {what} {value} is too large"))
}

/// Takes the pax `mtime` record (with nanoseconds) into `meta`.
fn take_mtime(key: &[u8], value: &[u8], meta: &mut FileMeta) {
    let value = std::str::from_utf8(value).unwrap_or("");
    if key == b"mtime" {
        if let Some((s, n)) = parse_pax_time(value) {
            meta.mtime = s;
            meta.mtime_nsec = n;
        }
    }
}

/// Parses a pax time "[-]secs[.frac]" into (secs, nanos) with nanos in [0, 1e9).
pub(super) fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("7"), Some((7, 0)));
        assert_eq!(parse_pax_time("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
