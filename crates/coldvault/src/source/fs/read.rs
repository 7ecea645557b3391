//! Reading a file tree's tasks: a range of the walk order as a tar (pax) stream, and a part of a
//! large file as raw bytes. Each file's bytes are exactly its length when it was listed (a file
//! that grew is cut there, one that shrank is padded) so that the tar stream stays well formed.
//!
//! Besides contents, mode, owner and times, an entry carries its extended attributes and ACLs
//! ([`super::xattr`]); a file with holes is stored without them ([`super::sparse`]); the later
//! paths of a hard-link group are `Link` entries, FIFOs and devices are node entries, and a
//! socket is left out with a warning ([`super::special`]).

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::notes::Notes;
use super::special::{self, Links};
use super::{read_err, sparse, walk, xattr};
use crate::catalog::{FileMeta, ReadStats, Warning};
use crate::error::{Error, Result};
use crate::path::RelPath;

/// Writes the entries in `[start, end)` as a tar (pax) stream, leaving out `split_files`; returns
/// what it read and what it could not store (a socket), naming each entry.
pub(crate) fn read_files(
    root: &Path,
    start: Option<&RelPath>,
    end: Option<&RelPath>,
    split_files: &[RelPath],
    out: &mut dyn Write,
) -> Result<(ReadStats, Vec<Warning>)> {
    let mut stats = ReadStats::default();
    let mut notes = Notes::default();
    let mut links = Links::default();
    let mut builder = tar::Builder::new(out);
    if start.is_none() {
        // The first task carries the root directory itself, as "./", for its mode and times.
        let meta = fs::symlink_metadata(root).map_err(|e| read_err("cannot stat", root, e))?;
        let extra = Extra::attrs_of(root, &RelPath::root(), &mut notes);
        append(
            &mut builder,
            b"./",
            &meta,
            tar::EntryType::Directory,
            0,
            io::empty(),
            &extra,
        )?;
    }
    walk(root, start, end, &mut |rel, path, meta| {
        let ft = meta.file_type();
        let extra = Extra::attrs_of(path, rel, &mut notes);
        if ft.is_dir() {
            stats.dirs += 1;
            append(
                &mut builder,
                rel.as_bytes(),
                meta,
                tar::EntryType::Directory,
                0,
                io::empty(),
                &extra,
            )
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(read_err("cannot read link", path, e)),
            };
            stats.symlinks += 1;
            let extra = Extra {
                link: Some(target.as_os_str().as_bytes().to_vec()),
                ..extra
            };
            append(
                &mut builder,
                rel.as_bytes(),
                meta,
                tar::EntryType::Symlink,
                0,
                io::empty(),
                &extra,
            )
        } else if ft.is_file() {
            if split_files.binary_search(rel).is_ok() {
                return Ok(());
            }
            if let Some(first) = links.earlier(meta) {
                stats.files += 1;
                return append_link(&mut builder, rel, meta, first);
            }
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(read_err("cannot open", path, e)),
            };
            let meta = file
                .metadata()
                .map_err(|e| read_err("cannot stat", path, e))?;
            stats.files += 1;
            append_file(&mut builder, rel, path, &meta, file, extra, &mut stats)?;
            links.stored(rel, &meta);
            Ok(())
        } else if let Some((kind, device)) = special::node_of(meta) {
            let extra = Extra { device, ..extra };
            append(
                &mut builder,
                rel.as_bytes(),
                meta,
                kind,
                0,
                io::empty(),
                &extra,
            )
        } else {
            special::leave_out(rel, meta, &mut stats, &mut notes);
            Ok(())
        }
    })?;
    builder
        .into_inner()
        .map_err(|e| Error::io("cannot finish the tar stream", e))?;
    Ok((stats, notes.into_warnings()))
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

/// Appends a regular file: all its bytes, or only its data regions when it has holes (PAX
/// sparse format 1.0). Adds the bytes it reads to `stats`.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &RelPath,
    path: &Path,
    meta: &Metadata,
    file: File,
    mut extra: Extra,
    stats: &mut ReadStats,
) -> Result<()> {
    let holes =
        sparse::data_map(&file, meta).map_err(|e| read_err("cannot find the holes of", path, e))?;
    let kind = tar::EntryType::Regular;
    let Some(map) = holes else {
        let size = meta.len();
        stats.bytes_read += size;
        let reader = ExactReader::new(file, size);
        return append(builder, rel.as_bytes(), meta, kind, size, reader, &extra);
    };
    stats.bytes_read += map.iter().map(|(_, len)| len).sum::<u64>();
    extra.pax.extend(sparse::pax_records(rel, meta.len()));
    let name = sparse::placeholder_name(rel);
    let size = sparse::stored_size(&map);
    let data = sparse::SparseReader::new(file, map);
    append(builder, &name, meta, kind, size, data, &extra)
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

/// Reads exactly `size` bytes: a file that shrank while read is padded with zeros, one that grew
/// is cut, so the tar stream stays well-formed.
struct ExactReader<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, size: u64) -> Self {
        ExactReader {
            inner: inner.take(size),
            left: size,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let mut n = self.inner.read(buf)?;
        if n == 0 {
            n = buf.len().min(self.left as usize);
            buf[..n].fill(0);
        }
        self.left -= n as u64;
        Ok(n)
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

fn pax_time(secs: i64, nsec: u32) -> String {
    if secs < 0 && nsec > 0 {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
    } else {
        format!("{secs}.{nsec:09}")
    }
}

/// Reads one part of a large file as raw bytes; the last part reads to the end of the file.
pub(crate) fn read_part(
    root: &Path,
    rel: &RelPath,
    offset: u64,
    len: u64,
    last: bool,
    out: &mut dyn Write,
) -> Result<(ReadStats, FileMeta)> {
    let path = rel.to_path(root);
    let mut file = File::open(&path).map_err(|e| read_err("cannot open", &path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| read_err("cannot stat", &path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| read_err("cannot seek in", &path, e))?;
    let mut reader: Box<dyn Read> = if last {
        Box::new(file)
    } else {
        Box::new(file.take(len))
    };
    let n = io::copy(&mut reader, out).map_err(|e| read_err("cannot read", &path, e))?;
    let stats = ReadStats {
        files: 1,
        bytes_read: n,
        ..ReadStats::default()
    };
    Ok((stats, FileMeta::of(&meta)))
}
