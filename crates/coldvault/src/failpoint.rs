//! Failpoints for crash tests: `COLDVAULT_FAILPOINT=NAME` (or `NAME:N`, the N-th time) makes the
//! process abort at that point, as `kill -9` would — no destructor runs, nothing is cleaned up.
//! Names, in pipeline order: `read` (a task's source read, before its staged file is finished),
//! `staged`, `stored-some` (one copy written, the others maybe not), `stored` (all copies),
//! `receipt` (the task's receipt written), `manifest` (the manifest written, run receipts not yet
//! cleared). Unset, a failpoint costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process when the failpoint `name` is armed and this is its N-th hit.
pub fn hit(name: &str) {
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("COLDVAULT_FAILPOINT").ok()?;
        let (n, nth) = match v.split_once(':') {
            Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((n, nth))
    });
    if let Some((armed, nth)) = spec {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
            eprintln!("coldvault: failpoint {name} hit; aborting");
            std::process::abort();
        }
    }
}
