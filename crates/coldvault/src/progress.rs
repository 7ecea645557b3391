//! Live counters of a run that a progress display reads while the work goes on.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters that a progress display can read while an engine runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read (backup) or written (restore) so far.
    pub bytes_done: AtomicU64,
    /// Bytes expected in all.
    pub bytes_total: AtomicU64,
    /// Tasks finished.
    pub tasks_done: AtomicU64,
    /// Tasks in all.
    pub tasks_total: AtomicU64,
    /// Data files waiting for their retrieval from an archive node.
    pub waiting_retrieval: AtomicU64,
}

impl Progress {
    /// Adds `n` bytes done.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one task done.
    pub fn task_done(&self) {
        self.tasks_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the totals.
    pub fn start(&self, tasks: u64, bytes: u64) {
        self.tasks_total.store(tasks, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }
}

/// A writer that counts the bytes passing through it into a [`Progress`].
pub(crate) struct CountingWriter<'a, W> {
    pub inner: W,
    pub progress: &'a Progress,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add_bytes(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
