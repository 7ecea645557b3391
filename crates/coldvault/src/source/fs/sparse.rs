//! Files with holes: found with `SEEK_DATA`/`SEEK_HOLE`, stored without their holes in GNU
//! tar's PAX sparse format 1.0, restored with their holes.
//!
//! Format 1.0 (what `tar --sparse --format=pax` writes; every GNU tar since 1.16 extracts it,
//! with no option): pax records `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
//! `GNU.sparse.name=<path>` and `GNU.sparse.realsize=<size>`; the ustar name is a placeholder,
//! `<dir>/GNUSparseFile.0/<name>`, so a reader that does not know the format extracts the stored
//! form there, never over the real path. The entry's data starts with the map: the number of
//! data regions, then each region's offset and length, one decimal number a line, padded with
//! NULs to a multiple of 512 bytes; the bytes of each region follow, in order. A file that ends
//! in a hole has a last region of length 0 at its size, as GNU tar writes it.
//!
//! The `tar` crate (0.4.46) decodes only the old GNU sparse headers, not this format: restore
//! decodes it here ([`extract`]). Invariants: regions are in order and never overlap; their
//! lengths add up to the entry's size less the map; a restored file has `realsize` bytes, with
//! holes where nothing was stored.
//!
//! A split file's parts stay raw bytes (`zstdcat` of the parts is the file): the reader sees its
//! holes as zeros, which zstd stores in a few bytes, and restore writes them back as holes
//! ([`HoleWriter`]: every 4 KiB block of zeros is punched, not written). A block the source held
//! as written zeros also comes back as a hole: the bytes are the same.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::path::RelPath;

/// One data region: offset and length.
pub(super) type Region = (u64, u64);

const BLOCK: usize = 512;
/// Holes are found and punched in blocks of this size (the usual filesystem block).
const FS_BLOCK: u64 = 4096;
/// A map with more regions than this is refused on restore (it would take 64 MiB to hold).
const MAX_REGIONS: u64 = 1 << 22;
static ZEROS: [u8; FS_BLOCK as usize] = [0; FS_BLOCK as usize];

/// The data regions of a file of `meta.len()` bytes that has holes; `None` when it has none
/// (its blocks cover its size) or the filesystem cannot tell.
pub(super) fn data_map(file: &File, meta: &Metadata) -> io::Result<Option<Vec<Region>>> {
    let size = meta.len();
    if meta.blocks().saturating_mul(512) >= size {
        return Ok(None);
    }
    let mut map = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(at) => at.min(size),
            Err(Errno::NXIO) => size,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))
            .map_err(io::Error::from)?
            .min(size);
        map.push((data, hole - data));
        pos = hole;
    }
    if map.len() == 1 && map[0] == (0, size) {
        return Ok(None);
    }
    if map.last().is_none_or(|&(at, len)| at + len < size) {
        map.push((size, 0));
    }
    Ok(Some(map))
}

/// The map as stored at the start of the entry's data, padded to whole 512-byte blocks.
pub(super) fn map_bytes(map: &[Region]) -> Vec<u8> {
    let mut text = format!("{}\n", map.len());
    for (at, len) in map {
        text.push_str(&format!("{at}\n{len}\n"));
    }
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().div_ceil(BLOCK) * BLOCK, 0);
    bytes
}

/// The size of the stored entry: the map and the bytes of every region.
pub(super) fn stored_size(map: &[Region]) -> u64 {
    map_bytes(map).len() as u64 + map.iter().map(|(_, len)| len).sum::<u64>()
}

/// The pax records of a sparse entry for `rel` of `size` bytes.
pub(super) fn pax_records(rel: &RelPath, size: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        ("GNU.sparse.major".into(), b"1".to_vec()),
        ("GNU.sparse.minor".into(), b"0".to_vec()),
        ("GNU.sparse.name".into(), rel.as_bytes().to_vec()),
        ("GNU.sparse.realsize".into(), size.to_string().into_bytes()),
    ]
}

/// The placeholder ustar name: `<dir>/GNUSparseFile.0/<name>` (`./` for the root), cut to 100
/// bytes as GNU tar cuts it. The `0` stands for GNU tar's process id: data files stay the same
/// for the same tree.
pub(super) fn placeholder_name(rel: &RelPath) -> Vec<u8> {
    let bytes = rel.as_bytes();
    let (dir, name) = match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b"."[..], bytes),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"/GNUSparseFile.0/");
    out.extend_from_slice(name);
    out.truncate(100);
    out
}

/// Reads a sparse entry's data: the map, then the bytes of each region. A region the file no
/// longer has (it shrank while read) reads as zeros, so the entry keeps its size.
pub(super) struct SparseReader {
    file: File,
    head: io::Cursor<Vec<u8>>,
    regions: std::vec::IntoIter<Region>,
    /// Where the current region is and how much of it is left.
    at: u64,
    left: u64,
}

impl SparseReader {
    pub(super) fn new(file: File, map: Vec<Region>) -> Self {
        SparseReader {
            file,
            head: io::Cursor::new(map_bytes(&map)),
            regions: map.into_iter(),
            at: 0,
            left: 0,
        }
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        while self.left == 0 {
            match self.regions.next() {
                Some((at, len)) => (self.at, self.left) = (at, len),
                None => return Ok(0),
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            n = want;
            buf[..n].fill(0);
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The `GNU.sparse.*` records of one entry, as read.
#[derive(Debug, Default)]
pub(super) struct SparseInfo {
    version: Option<(String, String)>,
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
    /// Records of the older 0.x formats (`GNU.sparse.map`, `.offset`, `.size`, ...).
    older: bool,
}

impl SparseInfo {
    /// Takes pax record `key` when it is a `GNU.sparse.*` one; true if it was.
    pub(super) fn take(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(field) = key.strip_prefix(b"GNU.sparse.") else {
            return false;
        };
        let text = String::from_utf8_lossy(value).into_owned();
        match field {
            b"major" => self.version.get_or_insert_default().0 = text,
            b"minor" => self.version.get_or_insert_default().1 = text,
            b"name" => self.name = Some(value.to_vec()),
            b"realsize" => self.realsize = text.parse().ok(),
            _ => self.older = true,
        }
        true
    }

    /// For a format 1.0 entry, its real path and size; `None` for an entry that is not sparse.
    pub(super) fn layout(&self) -> Result<Option<(&[u8], u64)>> {
        match (&self.version, self.older) {
            (None, false) => Ok(None),
            (Some((major, minor)), false) if major == "1" && minor == "0" => {
                match (&self.name, self.realsize) {
                    (Some(name), Some(size)) => Ok(Some((name, size))),
                    _ => Err(Error::integrity(
                        "sparse entry without GNU.sparse.name or GNU.sparse.realsize",
                    )),
                }
            }
            (version, _) => Err(Error::integrity(format!(
                "sparse entry in GNU format {version:?}, not 1.0: not supported (extract it \
                 with GNU tar)"
            ))),
        }
    }
}

/// Writes a format 1.0 entry's `data` (`size` bytes: map and regions) into `f` as a file of
/// `realsize` bytes with holes; returns the bytes of data written.
pub(super) fn extract(
    data: &mut dyn Read,
    size: u64,
    f: &File,
    realsize: u64,
    rel: &RelPath,
) -> Result<u64> {
    let bad = |why: String| Error::integrity(format!("sparse entry {rel}: {why}"));
    let (map, map_len) = read_map(data, size).map_err(|e| bad(e.to_string()))?;
    let mut end = 0;
    let mut written = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (at, len) in map {
        if at < end || at.checked_add(len).is_none_or(|e| e > realsize) {
            return Err(bad(format!(
                "region {at}+{len} overlaps or lies past {realsize}"
            )));
        }
        let mut left = len;
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            data.read_exact(&mut buf[..n])
                .map_err(|e| bad(format!("data ends early: {e}")))?;
            f.write_all_at(&buf[..n], at + len - left)
                .map_err(|e| Error::io(format!("cannot write {rel}"), e))?;
            left -= n as u64;
        }
        end = at + len;
        written += len;
    }
    if map_len + written != size || data.read(&mut [0u8; 1]).map_err(|e| bad(e.to_string()))? != 0 {
        return Err(bad(format!("its map does not add up to its size, {size}")));
    }
    f.set_len(realsize)
        .map_err(|e| Error::io(format!("cannot size {rel}"), e))?;
    Ok(written)
}

/// Reads the map at the start of an entry of `size` bytes; returns it and the bytes it took.
fn read_map(data: &mut dyn Read, size: u64) -> io::Result<(Vec<Region>, u64)> {
    let mut numbers = Numbers {
        data,
        block: [0; BLOCK],
        pos: BLOCK,
        read: 0,
    };
    let count = numbers.next()?;
    if count > MAX_REGIONS || count.saturating_mul(4) > size {
        return Err(io::Error::other(format!("{count} regions is too many")));
    }
    let mut map = Vec::with_capacity(count as usize);
    for _ in 0..count {
        map.push((numbers.next()?, numbers.next()?));
    }
    Ok((map, numbers.read))
}

/// Decimal numbers, one a line, read 512-byte block by block.
struct Numbers<'a> {
    data: &'a mut dyn Read,
    block: [u8; BLOCK],
    pos: usize,
    read: u64,
}

impl Numbers<'_> {
    fn next(&mut self) -> io::Result<u64> {
        let mut n: u64 = 0;
        let mut digits = 0;
        loop {
            if self.pos == BLOCK {
                self.data.read_exact(&mut self.block)?;
                self.read += BLOCK as u64;
                self.pos = 0;
            }
            let b = self.block[self.pos];
            self.pos += 1;
            match b {
                b'\n' if digits > 0 => return Ok(n),
                b'0'..=b'9' if digits < 20 => {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(b - b'0')))
                        .ok_or_else(|| io::Error::other("a number in the map overflows"))?;
                    digits += 1;
                }
                _ => {
                    return Err(io::Error::other(
                        "the map is not decimal numbers, one a line",
                    ))
                }
            }
        }
    }
}

/// Writes a file's bytes from some offset on, punching a hole for every 4 KiB block of zeros
/// (aligned to the file) instead of writing it: what is there already reads as zeros too.
pub(super) struct HoleWriter<'a> {
    file: &'a File,
    pos: u64,
    /// Where the zeros not yet punched start.
    zeros_from: Option<u64>,
}

impl<'a> HoleWriter<'a> {
    pub(super) fn new(file: &'a File, pos: u64) -> Self {
        HoleWriter {
            file,
            pos,
            zeros_from: None,
        }
    }

    /// Writes `buf` at the current position: each run of blocks with data in one write.
    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        // Where the run of blocks with data not yet written starts in `buf`.
        let mut data_from: Option<usize> = None;
        let mut at = 0;
        while at < buf.len() {
            let to_boundary = FS_BLOCK - (self.pos + at as u64) % FS_BLOCK;
            let n = (buf.len() - at).min(to_boundary as usize);
            if buf[at..at + n] == ZEROS[..n] {
                if let Some(from) = data_from.take() {
                    self.file
                        .write_all_at(&buf[from..at], self.pos + from as u64)?;
                }
                self.zeros_from.get_or_insert(self.pos + at as u64);
            } else if data_from.is_none() {
                self.punch(self.pos + at as u64)?;
                data_from = Some(at);
            }
            at += n;
        }
        if let Some(from) = data_from {
            self.file
                .write_all_at(&buf[from..], self.pos + from as u64)?;
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Ends the writing; returns the position after the last byte.
    pub(super) fn finish(mut self) -> io::Result<u64> {
        self.punch(self.pos)?;
        Ok(self.pos)
    }

    /// Makes the pending zeros, which end at `to`, a hole (or writes them where holes cannot be
    /// punched).
    fn punch(&mut self, to: u64) -> io::Result<()> {
        let Some(from) = self.zeros_from.take() else {
            return Ok(());
        };
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(self.file, flags, from, to - from) {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
                let mut at = from;
                while at < to {
                    let n = (to - at).min(FS_BLOCK);
                    self.file.write_all_at(&ZEROS[..n as usize], at)?;
                    at += n;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
#[path = "sparse_tests.rs"]
mod tests;
