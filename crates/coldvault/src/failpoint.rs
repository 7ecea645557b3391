//! Failpoints for crash tests: `COLDVAULT_FAILPOINT=NAME` (or `NAME:N`, the N-th time) makes the
//! process abort at that point, as `kill -9` would — no destructor runs, nothing is cleaned up.
//! Names, in pipeline order: `planned` (the backup planned, no task read yet), `read` (a task's
//! source read, before its staged file is finished), `staged`, `stored-some` (one copy written,
//! the others maybe not), `stored` (all copies), `receipt` (the task's receipt written),
//! `manifest` (the manifest written, run receipts not yet cleared); in a PostgreSQL restore,
//! `pg-rows-loaded` (the rows loaded, post-data not yet built); in a MySQL restore,
//! `my-rows-loaded` (the rows loaded, secondary indexes not yet built). Unset, a failpoint costs one
//! atomic load.
//!
//! `COLDVAULT_PAUSE=NAME[:N]` with `COLDVAULT_PAUSE_FILE=PATH` pauses instead: at that hit the
//! process creates PATH and waits until someone removes it, so a test can change the source at an
//! exact point of a run (remove a directory after planning, a file after its first part).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);
static PAUSE: OnceLock<Option<(String, u64, String)>> = OnceLock::new();
static PAUSE_HITS: AtomicU64 = AtomicU64::new(0);

/// `NAME` or `NAME:N` as (name, N).
fn parse(v: String) -> (String, u64) {
    match v.split_once(':') {
        Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1)),
        None => (v, 1),
    }
}

/// Aborts the process when the failpoint `name` is armed and this is its N-th hit.
pub fn hit(name: &str) {
    pause(name);
    let spec = SPEC.get_or_init(|| std::env::var("COLDVAULT_FAILPOINT").ok().map(parse));
    if let Some((armed, nth)) = spec {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
            eprintln!("coldvault: failpoint {name} hit; aborting");
            std::process::abort();
        }
    }
}

/// Pauses at the armed hit of `name` until the pause file is removed (at most ten minutes).
fn pause(name: &str) {
    let armed = PAUSE.get_or_init(|| {
        let (n, nth) = parse(std::env::var("COLDVAULT_PAUSE").ok()?);
        Some((n, nth, std::env::var("COLDVAULT_PAUSE_FILE").ok()?))
    });
    let Some((armed, nth, file)) = armed else {
        return;
    };
    if armed != name || PAUSE_HITS.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    if std::fs::write(file, name).is_err() {
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while std::path::Path::new(file).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
