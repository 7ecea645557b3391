//! `FaultyTarget`: wraps a target and injects faults at our own `Target` seam.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use coldvault::store::{
    ObjectClass, ObjectKey, Payload, RetrievalAnswer, RetrievalTier, SharedTarget, Target,
};
use coldvault::{Error, Result, Status};

/// A fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The n-th put (1-based) fails with this status.
    FailPut(u64, Status),
    /// Every put fails with this status.
    FailAllPuts(Status),
    /// Every put of a data file stores only half the bytes (and reports success).
    TruncatePuts,
    /// The n-th put (1-based) stores only half the bytes.
    TruncatePut(u64),
    /// Every list fails with this status (a node whose damage records cannot be listed).
    FailLists(Status),
    /// Every get returns the object with one byte flipped.
    FlipOnGet,
    /// Every request fails: the node is down.
    Down,
}

/// A target with injected faults.
#[derive(Debug)]
pub struct FaultyTarget {
    inner: SharedTarget,
    faults: Mutex<Vec<Fault>>,
    puts: AtomicU64,
}

impl FaultyTarget {
    /// Wraps `inner` with `faults`.
    pub fn new(inner: SharedTarget, faults: Vec<Fault>) -> Self {
        FaultyTarget {
            inner,
            faults: Mutex::new(faults),
            puts: AtomicU64::new(0),
        }
    }

    /// Puts attempted so far.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    /// Replaces the faults (a node that comes back, or goes down).
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.faults.lock().unwrap() = faults;
    }

    fn has(&self, f: &Fault) -> bool {
        self.faults.lock().unwrap().contains(f)
    }

    fn injected(&self, status: Status, what: &str) -> Error {
        Error::target(format!("injected fault: {what}"))
            .with_status(status)
            .with_context("node", self.inner.name())
    }

    fn down(&self) -> Result<()> {
        if self.has(&Fault::Down) {
            return Err(self.injected(Status::Temporary, "node down"));
        }
        Ok(())
    }
}

impl Target for FaultyTarget {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        self.down()?;
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = self.faults.lock().unwrap().clone();
        for f in &faults {
            match f {
                Fault::FailPut(k, status) if *k == n => {
                    return Err(self.injected(*status, &format!("put number {n} failed")))
                }
                Fault::FailAllPuts(status) => return Err(self.injected(*status, "every put fails")),
                _ => {}
            }
        }
        let truncate = faults.iter().any(|f| {
            *f == Fault::TruncatePut(n)
                || (*f == Fault::TruncatePuts && key.as_str().starts_with("data/"))
        });
        if truncate {
            let mut buf = Vec::new();
            payload
                .open()
                .and_then(|mut r| r.read_to_end(&mut buf))
                .map_err(|e| Error::io("cannot read payload", e))?;
            buf.truncate(buf.len() / 2);
            return self.inner.put(key, Payload::Bytes(&buf));
        }
        self.inner.put(key, payload)
    }

    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        self.down()?;
        self.inner.put_if_absent(key, bytes)
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        self.down()?;
        let mut r = self.inner.get(key)?;
        if !self.has(&Fault::FlipOnGet) {
            return Ok(r);
        }
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| Error::io("cannot read", e))?;
        let mid = buf.len() / 2;
        if let Some(b) = buf.get_mut(mid) {
            *b ^= 0x40;
        }
        Ok(Box::new(std::io::Cursor::new(buf)))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        self.down()?;
        self.inner.stat(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.down()?;
        let faults = self.faults.lock().unwrap().clone();
        if let Some(Fault::FailLists(status)) =
            faults.iter().find(|f| matches!(f, Fault::FailLists(_)))
        {
            return Err(self.injected(*status, &format!("list {prefix} failed")));
        }
        self.inner.list(prefix)
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.down()?;
        self.inner.delete(key)
    }

    fn storage_class(&self) -> Option<&str> {
        self.inner.storage_class()
    }

    fn retries(&self) -> u64 {
        self.inner.retries()
    }

    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        self.down()?;
        self.inner.object_class(key)
    }

    fn request_retrieval(
        &self,
        key: &ObjectKey,
        tier: RetrievalTier,
        days: u32,
    ) -> Result<RetrievalAnswer> {
        self.down()?;
        self.inner.request_retrieval(key, tier, days)
    }
}
