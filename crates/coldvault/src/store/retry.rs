//! `RetryingTarget`: sends a failed request again, for temporary errors only, with exponential
//! backoff and full jitter, a bounded number of times. A put is checked after it returns (the
//! stored size must equal the payload's), and a short object counts as a temporary failure. Every
//! attempt of a put re-reads the payload (the staged file), never the source.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{
    ObjectClass, ObjectKey, Payload, RetrievalAnswer, RetrievalTier, SharedTarget, Target,
};
use crate::error::{Error, Result, Status};

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// How many times a request is sent again after the first attempt.
    pub retries: u32,
    /// The first pause; each later pause doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Backoff {
    /// Backoff with `retries` and `first_delay`, capped at 30 s.
    pub fn new(retries: u32, first_delay: Duration) -> Self {
        Backoff {
            retries,
            first_delay,
            max_delay: Duration::from_secs(30),
        }
    }

    /// The pause before retry number `attempt` (1-based): between half and all of the doubled delay.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let half = base / 2;
        half + base.mul_f64(fastrand::f64() * 0.5)
    }

    /// Runs `op` until it succeeds, fails permanently, or the retries are used up.
    pub fn run<T>(&self, what: &str, op: impl FnMut() -> Result<T>) -> Result<T> {
        self.run_counted(&AtomicU64::new(0), what, op)
    }

    /// Like [`Backoff::run`], adding each retry to `retries`.
    pub fn run_counted<T>(
        &self,
        retries: &AtomicU64,
        what: &str,
        mut op: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_temporary() && attempt < self.retries => {
                    attempt += 1;
                    retries.fetch_add(1, Ordering::Relaxed);
                    crate::event::emit(
                        "request_retried",
                        serde_json::json!({
                            "node": e.context("node"), "what": what, "attempt": attempt,
                            "error": e.to_string(),
                        }),
                    );
                    std::thread::sleep(self.delay(attempt));
                }
                Err(e) if e.is_temporary() => {
                    let n = attempt + 1;
                    return Err(Error::new(
                        e.kind(),
                        format!("{what}: gave up after {n} attempts"),
                    )
                    .with_status(Status::Persistent)
                    .with_source(e));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A target that retries its inner target's temporary failures.
#[derive(Debug)]
pub struct RetryingTarget {
    inner: SharedTarget,
    backoff: Backoff,
    /// Requests sent again so far, for the run's metrics.
    retries: AtomicU64,
}

impl RetryingTarget {
    /// Wraps `inner`.
    pub fn new(inner: SharedTarget, backoff: Backoff) -> Self {
        RetryingTarget {
            inner,
            backoff,
            retries: AtomicU64::new(0),
        }
    }

    fn node_err(&self, e: Error) -> Error {
        e.with_context("node", self.inner.name())
    }
}

impl Target for RetryingTarget {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        let want = payload
            .len()
            .map_err(|e| Error::io(format!("cannot read staged data for {key}"), e))?;
        self.backoff
            .run_counted(&self.retries, &format!("store {key}"), || {
                self.inner.put(key, payload)?;
                match self.inner.stat(key)? {
                    Some(got) if got == want => Ok(()),
                    got => Err(Error::target(format!(
                        "stored object {key} has {} bytes, expected {want}",
                        got.map_or("no".to_string(), |g| g.to_string())
                    ))
                    .temporary()),
                }
            })
            .map_err(|e| self.node_err(e))
    }

    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        self.backoff
            .run_counted(&self.retries, &format!("store {key} if absent"), || {
                self.inner.put_if_absent(key, bytes)
            })
            .map_err(|e| self.node_err(e))
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        self.backoff
            .run_counted(&self.retries, &format!("read {key}"), || {
                self.inner.get(key)
            })
            .map_err(|e| self.node_err(e))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        self.backoff
            .run_counted(&self.retries, &format!("stat {key}"), || {
                self.inner.stat(key)
            })
            .map_err(|e| self.node_err(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.backoff
            .run_counted(&self.retries, &format!("list {prefix}"), || {
                self.inner.list(prefix)
            })
            .map_err(|e| self.node_err(e))
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.backoff
            .run_counted(&self.retries, &format!("delete {key}"), || {
                self.inner.delete(key)
            })
            .map_err(|e| self.node_err(e))
    }

    fn local_path(&self, key: &ObjectKey) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }

    fn remove_temporaries(&self) -> Result<usize> {
        self.inner.remove_temporaries()
    }

    fn storage_class(&self) -> Option<&str> {
        self.inner.storage_class()
    }

    fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed) + self.inner.retries()
    }

    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        self.backoff
            .run_counted(&self.retries, &format!("stat {key}"), || {
                self.inner.object_class(key)
            })
            .map_err(|e| self.node_err(e))
    }

    fn request_retrieval(
        &self,
        key: &ObjectKey,
        tier: RetrievalTier,
        days: u32,
    ) -> Result<RetrievalAnswer> {
        self.backoff
            .run_counted(
                &self.retries,
                &format!("request the retrieval of {key}"),
                || self.inner.request_retrieval(key, tier, days),
            )
            .map_err(|e| self.node_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let b = Backoff::new(10, Duration::from_millis(100));
        let d1 = b.delay(1);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d4 = b.delay(4);
        assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800));
        assert!(b.delay(30) <= Duration::from_secs(30));
    }

    #[test]
    fn temporary_errors_are_retried_then_given_up() {
        let b = Backoff::new(2, Duration::from_millis(1));
        let mut calls = 0;
        let r: Result<()> = b.run("op", || {
            calls += 1;
            Err(Error::target("flaky").temporary())
        });
        assert_eq!(calls, 3);
        let e = r.unwrap_err();
        assert_eq!(e.status(), Status::Persistent);
        assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let b = Backoff::new(5, Duration::from_millis(1));
        let mut calls = 0;
        let r: Result<()> = b.run("op", || {
            calls += 1;
            Err(Error::target("denied"))
        });
        assert_eq!(calls, 1);
        assert!(r.is_err());
    }
}
