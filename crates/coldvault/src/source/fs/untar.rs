//! A strict, streaming reader of the tar data files a restore reads: ustar headers (checksum
//! checked), pax extended headers read record by record by their length prefix, GNU long names.
//!
//! Why not the `tar` crate's reader: version 0.4.46 splits a pax header on newlines before it
//! reads the records' lengths (tar-rs issues #428 and #452), so it refuses every header holding
//! an ACL (text with newlines) or a binary attribute with a `0x0a` byte, and it can take the tail
//! of such a value for a record of its own (a forged `linkpath` or `size`). GNU tar, libarchive
//! and this reader walk records by length: a value may hold any byte.
//!
//! Invariants: entries come in order, never seeking; an entry's data is exactly `size` bytes
//! (`Read` on the reader gives them, and the next [`Untar::next`] skips what was not read and
//! the padding); a pax `size`, `path`, `linkpath`, `uid`, `gid` or `mtime` wins over the ustar
//! field; memory is bounded by the largest extended header, at most 16 MiB.

use std::io::{self, Read};

use crate::error::{Error, Result};

const BLOCK: u64 = 512;
/// The largest pax header or GNU long name accepted.
const MAX_EXTENSION: u64 = 16 << 20;

/// One entry's header, with its extended headers applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Head {
    /// The type flag (`b'0'` a file, `b'5'` a directory, ...).
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// A device's major and minor numbers.
    pub device: (u32, u32),
    /// Every pax record of the entry, in order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads entries from a tar stream.
pub(super) struct Untar<R> {
    r: R,
    /// Data of the current entry not read yet.
    left: u64,
    /// Padding after it.
    pad: u64,
}

/// What extended headers said about the entry that follows them.
#[derive(Default)]
struct Pending {
    pax: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::integrity(format!("malformed tar data file: {why}"))
}

impl<R: Read> Untar<R> {
    pub(super) fn new(r: R) -> Self {
        Untar { r, left: 0, pad: 0 }
    }

    /// The next entry's header; `None` at the end of the archive (a zero block, or the end of
    /// the stream between entries).
    pub(super) fn next(&mut self) -> Result<Option<Head>> {
        let mut pending = Pending::default();
        loop {
            self.skip_rest()?;
            let Some(block) = self.block()? else {
                return Ok(None);
            };
            if block.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let mut head = parse_header(&block)?;
            self.left = head.size;
            self.pad = (BLOCK - head.size % BLOCK) % BLOCK;
            match head.kind {
                b'x' => pending.pax.extend(parse_pax(&self.extension(head.size)?)?),
                b'g' => {
                    self.extension(head.size)?;
                }
                b'L' => pending.long_name = Some(trim_nul(self.extension(head.size)?)),
                b'K' => pending.long_link = Some(trim_nul(self.extension(head.size)?)),
                // Old GNU sparse headers carry more header blocks: never written by coldvault.
                b'S' => return Err(malformed("an old GNU sparse entry (not supported)")),
                _ => {
                    apply(&mut head, pending)?;
                    self.left = head.size;
                    self.pad = (BLOCK - head.size % BLOCK) % BLOCK;
                    return Ok(Some(head));
                }
            }
        }
    }

    /// Reads one 512-byte block; `None` at the end of the stream.
    fn block(&mut self) -> Result<Option<[u8; BLOCK as usize]>> {
        let mut block = [0u8; BLOCK as usize];
        let mut got = 0;
        while got < block.len() {
            match self.r.read(&mut block[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(malformed("it ends inside a header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(malformed("cannot read a header").with_source(e)),
            }
        }
        Ok(Some(block))
    }

    /// The data of an extended header, read whole.
    fn extension(&mut self, size: u64) -> Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            return Err(malformed(format!("an extended header of {size} bytes")));
        }
        let mut data = Vec::with_capacity(size as usize);
        self.read_to_end(&mut data)
            .map_err(|e| malformed("cannot read an extended header").with_source(e))?;
        if data.len() as u64 != size {
            return Err(malformed("it ends inside an extended header"));
        }
        Ok(data)
    }

    /// Skips what is left of the current entry's data, and its padding.
    fn skip_rest(&mut self) -> Result<()> {
        let n = self.left + self.pad;
        let skipped = io::copy(&mut (&mut self.r).take(n), &mut io::sink())
            .map_err(|e| malformed("cannot read an entry").with_source(e))?;
        if skipped != n {
            return Err(malformed("it ends inside an entry"));
        }
        (self.left, self.pad) = (0, 0);
        Ok(())
    }
}

impl<R: Read> Read for Untar<R> {
    /// Reads the current entry's data; 0 at its end. A stream that ends first is an error.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the data file ends inside an entry",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The fields of a ustar (or GNU, or v7) header block.
fn parse_header(b: &[u8; BLOCK as usize]) -> Result<Head> {
    let stored = number(&b[148..156])?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &v)| u64::from(if (148..156).contains(&i) { b' ' } else { v }))
        .sum();
    if stored != sum {
        return Err(malformed(format!(
            "a header checksum is {stored}, not {sum}"
        )));
    }
    let mut path = trim_nul(b[..100].to_vec());
    if &b[257..263] == b"ustar\0" && b[345] != 0 {
        let mut full = trim_nul(b[345..500].to_vec());
        full.push(b'/');
        full.extend_from_slice(&path);
        path = full;
    }
    let small = |f: &[u8]| -> Result<u32> {
        u32::try_from(number(f)?).map_err(|_| malformed("a mode or device number is too large"))
    };
    Ok(Head {
        kind: b[156],
        path,
        link: trim_nul(b[157..257].to_vec()),
        mode: small(&b[100..108])?,
        uid: number(&b[108..116])?,
        gid: number(&b[116..124])?,
        size: number(&b[124..136])?,
        mtime: number(&b[136..148])?,
        device: (small(&b[329..337])?, small(&b[337..345])?),
        pax: Vec::new(),
    })
}

/// A numeric field: octal text (NUL or space ended; empty is 0), or base-256 binary when its
/// first byte has the high bit set (as GNU tar writes values too large for octal).
fn number(field: &[u8]) -> Result<u64> {
    if field[0] & 0x80 != 0 {
        // Big-endian after the marker bit; 0x40 set is a negative number.
        let mut bytes = field.to_vec();
        bytes[0] &= 0x7f;
        let (high, low) = bytes.split_at(bytes.len().saturating_sub(8));
        if field[0] & 0x40 != 0 || high.iter().any(|b| *b != 0) {
            return Err(malformed("a base-256 number is negative or too large"));
        }
        return Ok(low.iter().fold(0, |n, b| n << 8 | u64::from(*b)));
    }
    let text = field.split(|b| *b == 0).next().unwrap_or(&[]);
    let text = std::str::from_utf8(text).map_err(|_| malformed("a number is not text"))?;
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| malformed(format!("{text:?} is not an octal number")))
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(end) = v.iter().position(|b| *b == 0) {
        v.truncate(end);
    }
    v
}

/// The records of a pax header: `<length> <key>=<value>\n`, each read by its length.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or_else(|| malformed("a pax record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|len| *len > space + 1 && *len <= data.len())
            .ok_or_else(|| malformed("a pax record with a bad length"))?;
        let (record, rest) = data.split_at(len);
        let body = record[space + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| malformed("a pax record that does not end in a newline"))?;
        let eq = body
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| malformed("a pax record without '='"))?;
        records.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = rest;
    }
    Ok(records)
}

/// Applies extended headers to the entry: pax records win over GNU long names, which win over
/// the ustar fields.
fn apply(head: &mut Head, pending: Pending) -> Result<()> {
    if let Some(name) = pending.long_name {
        head.path = name;
    }
    if let Some(link) = pending.long_link {
        head.link = link;
    }
    for (key, value) in &pending.pax {
        let number = || -> Result<u64> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    malformed(format!(
                        "pax {} is not a number",
                        String::from_utf8_lossy(key)
                    ))
                })
        };
        match key.as_slice() {
            b"path" => head.path = value.clone(),
            b"linkpath" => head.link = value.clone(),
            b"size" => head.size = number()?,
            b"uid" => head.uid = number()?,
            b"gid" => head.gid = number()?,
            _ => {}
        }
    }
    head.pax = pending.pax;
    Ok(())
}

#[cfg(test)]
#[path = "untar_tests.rs"]
mod tests;
