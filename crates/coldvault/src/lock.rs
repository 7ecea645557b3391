//! Repository locks: who is backing up or pruning a job, kept on the nodes so that every machine
//! sees them.
//!
//! A lock is a small JSON object `locks/<kind>-<id>.json` (kind `backup` or `prune`) written to
//! every node of the run, naming its holder: host, pid, start time. A holder rewrites it every few
//! minutes; a lock whose holder is a dead process on this host, or that has not been refreshed for
//! [`STALE_AFTER`], is stale and is removed by whoever finds it (and said so in its warnings).
//!
//! Both kinds first write their lock, then look for the other's — so of a backup and a prune that
//! start together, at least one sees the other:
//! - a second backup of the same job refuses, naming the holder (or waits, when asked);
//! - a backup that finds a prune deleting waits until the prune has seen it and stopped (one
//!   batch of deletions at most);
//! - a prune that finds a backup does not delete, and stops between batches as soon as one
//!   starts. So prune never deletes a data file that a running backup may still reference.
//!
//! Verify and restore take no lock: they only read committed snapshots.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::store::{put_on_any, ObjectKey, SharedTarget};
use crate::util::{now_rfc3339, process_alive, process_start};

/// Where locks live in a node's job directory.
pub const LOCKS_PREFIX: &str = "locks/";
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
const POLL: Duration = Duration::from_millis(200);

/// What a lock says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `backup` or `prune`.
    pub kind: String,
    /// Random id of this holder.
    pub id: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// When that process started (boot id and clock ticks): a live process with the same pid but
    /// another start is not the holder (the pid was reused after the holder died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<String>,
    /// When it took the lock (RFC 3339).
    pub started: String,
    /// When it last rewrote the lock (RFC 3339).
    pub refreshed: String,
}

impl LockInfo {
    fn key(&self) -> ObjectKey {
        ObjectKey::new(format!("{LOCKS_PREFIX}{}-{}.json", self.kind, self.id))
    }

    fn describe(&self) -> String {
        format!("host {} pid {} since {}", self.host, self.pid, self.started)
    }

    fn is_stale(&self, here: &str) -> bool {
        if self.host == here {
            if !process_alive(self.pid) {
                return true;
            }
            if let Some(recorded) = &self.pid_start {
                if process_start(self.pid).is_some_and(|now| &now != recorded) {
                    return true;
                }
            }
        }
        humantime::parse_rfc3339(&self.refreshed)
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER)
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A held lock; dropping it removes it from the nodes.
pub struct Lock {
    nodes: Vec<SharedTarget>,
    info: LockInfo,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<std::thread::JoinHandle<()>>,
    /// Stale locks removed while taking this one.
    pub broken: Vec<String>,
}

impl Lock {
    /// Takes the backup lock of a job: refuses (naming the holder) when another backup holds
    /// it, unless `wait` allows waiting for it; waits while a prune is deleting.
    pub fn backup(nodes: &[SharedTarget], wait: Option<Duration>) -> Result<Lock> {
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        let mut lock = Lock::write(nodes, "backup")?;
        loop {
            let others = lock.others()?;
            let rival = others
                .iter()
                .filter(|o| o.kind == "backup")
                .find(|o| (&o.started, &o.id) < (&lock.info.started, &lock.info.id));
            if let Some(r) = rival {
                if deadline.is_some_and(|d| std::time::Instant::now() < d) {
                    std::thread::sleep(POLL * 5);
                    continue;
                }
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "another backup of this job is running ({}); wait for it, or pass --wait DURATION",
                        r.describe()
                    ),
                ));
            }
            if others.iter().any(|o| o.kind == "prune") {
                // The prune sees our lock and stops at its next batch.
                std::thread::sleep(POLL);
                continue;
            }
            lock.start_refresher();
            return Ok(lock);
        }
    }

    /// Takes the prune lock, or `None` when a backup is running (then nothing may be deleted).
    pub fn prune(nodes: &[SharedTarget]) -> Result<Option<Lock>> {
        let mut lock = Lock::write(nodes, "prune")?;
        let others = lock.others()?;
        if others.iter().any(|o| o.kind == "backup") {
            return Ok(None);
        }
        if let Some(p) = others.iter().find(|o| o.kind == "prune") {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("another prune is running ({})", p.describe()),
            ));
        }
        lock.start_refresher();
        Ok(Some(lock))
    }

    /// True when a backup has taken its lock since (a prune checks between batches).
    pub fn backup_started(&mut self) -> Result<bool> {
        Ok(self.others()?.iter().any(|o| o.kind == "backup"))
    }

    fn write(nodes: &[SharedTarget], kind: &str) -> Result<Lock> {
        let now = now_rfc3339();
        let id =
            blake3::hash(format!("{now}{}{}", std::process::id(), fastrand::u64(..)).as_bytes())
                .to_hex()[..16]
                .to_string();
        let info = LockInfo {
            kind: kind.into(),
            id,
            host: hostname(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            started: now.clone(),
            refreshed: now,
        };
        put_everywhere(nodes, &info)?;
        Ok(Lock {
            nodes: nodes.to_vec(),
            info,
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            refresher: None,
            broken: Vec::new(),
        })
    }

    /// Every live lock but ours; stale ones are removed and remembered in `broken`.
    fn others(&mut self) -> Result<Vec<LockInfo>> {
        let here = hostname();
        let mut found: Vec<LockInfo> = Vec::new();
        let mut listed = 0;
        let mut last = None;
        for node in &self.nodes {
            let keys = match node.list(LOCKS_PREFIX) {
                Ok(k) => k,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            listed += 1;
            for key in keys {
                let Ok(bytes) = crate::store::read_small(node.as_ref(), &key) else {
                    continue; // removed meanwhile
                };
                let Ok(info) = serde_json::from_slice::<LockInfo>(&bytes) else {
                    continue;
                };
                if info.id == self.info.id || found.iter().any(|f| f.id == info.id) {
                    continue;
                }
                if info.is_stale(&here) {
                    for n in &self.nodes {
                        let _ = n.delete(&info.key());
                    }
                    self.broken.push(format!(
                        "removed the stale {} lock of {}",
                        info.kind,
                        info.describe()
                    ));
                    continue;
                }
                found.push(info);
            }
        }
        match (listed, last) {
            (0, Some(e)) => Err(e),
            _ => Ok(found),
        }
    }

    fn start_refresher(&mut self) {
        let (nodes, mut info, stop) = (self.nodes.clone(), self.info.clone(), self.stop.clone());
        self.refresher = Some(std::thread::spawn(move || {
            let (lock, cv) = &*stop;
            let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*stopped {
                let (guard, timeout) = cv
                    .wait_timeout(stopped, REFRESH_EVERY)
                    .unwrap_or_else(|p| p.into_inner());
                stopped = guard;
                if timeout.timed_out() && !*stopped {
                    info.refreshed = now_rfc3339();
                    let _ = put_everywhere(&nodes, &info);
                }
            }
        }));
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        for n in &self.nodes {
            let _ = n.delete(&self.info.key());
        }
    }
}

/// Writes the lock to every node that takes it; an error only when none does (a node that
/// refuses writes gets no data either, and every other holder looks on all nodes).
fn put_everywhere(nodes: &[SharedTarget], info: &LockInfo) -> Result<()> {
    let bytes = crate::util::to_json(info, "a lock")?;
    put_on_any(nodes, &info.key(), &bytes).map_err(|e| e.with_context("lock", info.key()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsTarget;

    fn nodes() -> (tempfile::TempDir, Vec<SharedTarget>) {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ["n1", "n2"]
            .iter()
            .map(|n| {
                let t = FsTarget::new(n, &dir.path().join(n), "cold");
                t.create_root().unwrap();
                Arc::new(t) as SharedTarget
            })
            .collect();
        (dir, nodes)
    }

    #[test]
    fn a_second_backup_is_refused_naming_the_holder() {
        let (_dir, n) = nodes();
        let first = Lock::backup(&n, None).unwrap();
        let e = Lock::backup(&n, None).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains(&first.info.started), "{e}");
        drop(first);
        assert!(n[0].list(LOCKS_PREFIX).unwrap().is_empty());
        Lock::backup(&n, None).unwrap();
    }

    #[test]
    fn prune_yields_to_a_running_backup() {
        let (_dir, n) = nodes();
        let b = Lock::backup(&n, None).unwrap();
        assert!(Lock::prune(&n).unwrap().is_none());
        drop(b);
        let mut p = Lock::prune(&n).unwrap().unwrap();
        assert!(!p.backup_started().unwrap());
    }

    #[test]
    fn a_dead_holders_lock_is_broken() {
        let (_dir, n) = nodes();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let info = LockInfo {
            kind: "backup".into(),
            id: "deadbeef".into(),
            host: hostname(),
            pid: dead,
            pid_start: None,
            started: now_rfc3339(),
            refreshed: now_rfc3339(),
        };
        put_everywhere(&n, &info).unwrap();
        let l = Lock::backup(&n, None).unwrap();
        assert_eq!(l.broken.len(), 1, "{:?}", l.broken);
        assert!(l.broken[0].contains(&format!("pid {dead}")));
    }

    /// A lock whose pid now belongs to another live process (the holder died and the pid was
    /// reused) is stale at once, not after half an hour; the holder's own start keeps it.
    #[test]
    fn a_lock_whose_pid_was_reused_is_broken_and_a_live_holders_is_kept() {
        let (_dir, n) = nodes();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(
            process_start(pid).is_some(),
            "the start of a live process reads"
        );
        let planted = |id: &str, pid_start: Option<String>| LockInfo {
            kind: "backup".into(),
            id: id.into(),
            host: hostname(),
            pid,
            pid_start,
            started: "2000-01-01T00:00:00Z".into(),
            refreshed: now_rfc3339(),
        };
        put_everywhere(&n, &planted("reused00", Some("another-boot/42".into()))).unwrap();
        let l = Lock::backup(&n, None).unwrap();
        assert_eq!(l.broken.len(), 1, "{:?}", l.broken);
        drop(l);
        put_everywhere(&n, &planted("holder00", process_start(pid))).unwrap();
        let e = Lock::backup(&n, None)
            .err()
            .expect("the live holder's lock is kept");
        assert!(e.to_string().contains(&format!("pid {pid}")), "{e}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
