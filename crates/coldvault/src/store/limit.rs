//! `LimitedTarget`: a node's `max_rate`. Every byte put to the node or read from it passes a
//! [`RateLimiter`] shared by all the node's transfers, so that uploads and downloads together
//! stay at the rate, however many tasks run at once.
//!
//! The limiter is paced, not averaged over a data file: a transfer waits after each piece of at
//! most [`PIECE`] bytes until its share of the rate allows the next one, and time a node spent
//! idle is not saved up for a later burst.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    ObjectClass, ObjectKey, Payload, RetrievalAnswer, RetrievalTier, SharedTarget, Target,
};
use crate::error::Result;

/// The most bytes moved between two waits.
pub(crate) const PIECE: usize = 64 << 10;

/// Paces byte counts to a rate.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: f64,
    /// When the bytes already granted will have passed at the rate.
    free_at: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter for `bytes_per_second`.
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimiter {
            bytes_per_second: bytes_per_second.max(1) as f64,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Accounts for `n` bytes just moved and waits until they fit the rate.
    pub fn take(&self, n: usize) {
        let until = {
            let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*free_at).max(Instant::now());
            *free_at = start + Duration::from_secs_f64(n as f64 / self.bytes_per_second);
            *free_at
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }
}

/// A reader whose bytes pass a [`RateLimiter`].
pub struct Paced<'a, R> {
    inner: R,
    limiter: &'a RateLimiter,
}

impl<'a, R: Read> Paced<'a, R> {
    /// Paces `inner` by `limiter`.
    pub fn new(inner: R, limiter: &'a RateLimiter) -> Self {
        Paced { inner, limiter }
    }
}

impl<R: Read> Read for Paced<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(PIECE);
        let n = self.inner.read(&mut buf[..len])?;
        self.limiter.take(n);
        Ok(n)
    }
}

/// A node with a `max_rate`.
#[derive(Debug)]
pub struct LimitedTarget {
    inner: SharedTarget,
    limiter: std::sync::Arc<RateLimiter>,
}

impl LimitedTarget {
    /// Limits `inner` to `bytes_per_second`, uploads and downloads together.
    pub fn new(inner: SharedTarget, bytes_per_second: u64) -> Self {
        LimitedTarget {
            inner,
            limiter: std::sync::Arc::new(RateLimiter::new(bytes_per_second)),
        }
    }
}

/// A reader that owns its share of the limiter, for `get`'s boxed reader.
struct OwnedPaced {
    inner: Box<dyn Read + Send>,
    limiter: std::sync::Arc<RateLimiter>,
}

impl Read for OwnedPaced {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Paced::new(&mut self.inner, &self.limiter).read(buf)
    }
}

impl Target for LimitedTarget {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        self.inner.put(key, Payload::Paced(&payload, &self.limiter))
    }

    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        self.limiter.take(bytes.len());
        self.inner.put_if_absent(key, bytes)
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(OwnedPaced {
            inner: self.inner.get(key)?,
            limiter: self.limiter.clone(),
        }))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        self.inner.stat(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key)
    }

    // No local path: a reader that used it would bypass the limit.

    fn remove_temporaries(&self) -> Result<usize> {
        self.inner.remove_temporaries()
    }

    fn storage_class(&self) -> Option<&str> {
        self.inner.storage_class()
    }

    fn retries(&self) -> u64 {
        self.inner.retries()
    }

    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        self.inner.object_class(key)
    }

    fn request_retrieval(
        &self,
        key: &ObjectKey,
        tier: RetrievalTier,
        days: u32,
    ) -> Result<RetrievalAnswer> {
        self.inner.request_retrieval(key, tier, days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_reader_moves_bytes_at_the_rate() {
        let limiter = RateLimiter::new(4 << 20);
        let data = vec![7u8; 2 << 20];
        let start = Instant::now();
        let mut out = Vec::new();
        Paced::new(&data[..], &limiter)
            .read_to_end(&mut out)
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out, data);
        // 2 MiB at 4 MiB/s: half a second, never less (sleeping only adds).
        assert!(secs >= 0.45, "{secs}");
    }

    #[test]
    fn two_transfers_share_the_rate() {
        let limiter = RateLimiter::new(4 << 20);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let data = vec![1u8; 1 << 20];
                    io::copy(&mut Paced::new(&data[..], &limiter), &mut io::sink()).unwrap();
                });
            }
        });
        // 2 MiB in all at 4 MiB/s.
        assert!(start.elapsed().as_secs_f64() >= 0.45);
    }
}
