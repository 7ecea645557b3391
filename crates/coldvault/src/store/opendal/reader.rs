//! [`RangeReader`]: an object read in ranges, the next range in flight while one is consumed:
//! at most two ranges of memory per reader, whatever the object's size.

use std::io::{self, Read};

use opendal::Operator;

use super::runtime;

/// The size of one ranged read.
const RANGE_BYTES: u64 = 4 << 20;

/// Reads an object in ranges of `RANGE_BYTES`, the next range requested before this one is read.
pub(super) struct RangeReader {
    op: Operator,
    key: String,
    size: u64,
    /// Where the range after `buf` (the one in flight, if any) starts.
    pos: u64,
    /// The request for the range at `pos`, sent before `buf` is consumed.
    next: Option<Pending>,
    /// What is left of the range read last (as it came, not copied).
    buf: opendal::Buffer,
}

/// A ranged read sent to the runtime.
type Pending = tokio::task::JoinHandle<opendal::Result<opendal::Buffer>>;

impl RangeReader {
    /// A reader of the `size` bytes of `key`; nothing is requested before the first read.
    pub(super) fn new(op: Operator, key: String, size: u64) -> Self {
        RangeReader {
            op,
            key,
            size,
            pos: 0,
            next: None,
            buf: opendal::Buffer::new(),
        }
    }

    /// Sends the request for the range at `pos`; none when the object ends there.
    fn request(&self, rt: &tokio::runtime::Runtime) -> Option<Pending> {
        if self.pos >= self.size {
            return None;
        }
        let range = self.pos..(self.pos + RANGE_BYTES).min(self.size);
        let (op, key) = (self.op.clone(), self.key.clone());
        Some(rt.spawn(async move { op.read_with(&key).range(range).await }))
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            let rt = runtime().map_err(io::Error::other)?;
            let Some(pending) = self.next.take().or_else(|| self.request(rt)) else {
                return Ok(0);
            };
            let data = rt
                .block_on(pending)
                .map_err(io::Error::other)?
                .map_err(|e| {
                    let kind = if e.is_temporary() {
                        io::ErrorKind::TimedOut
                    } else {
                        io::ErrorKind::Other
                    };
                    io::Error::new(kind, e)
                })?;
            self.buf = data;
            if self.buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended early at byte {}", self.key, self.pos),
                ));
            }
            self.pos += self.buf.len() as u64;
            self.next = self.request(rt);
        }
        // Across the chunks the response came in, however they are cut.
        let n = out.len().min(self.buf.len());
        bytes::Buf::copy_to_slice(&mut self.buf, &mut out[..n]);
        Ok(n)
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        if let Some(pending) = self.next.take() {
            pending.abort();
        }
    }
}
