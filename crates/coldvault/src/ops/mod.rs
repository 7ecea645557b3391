//! What people who run coldvault unattended look at: the figures of a backup for Prometheus
//! ([`metrics`]) and the commands run around it ([`hooks`]). Both read one [`RunOutcome`], made
//! once a backup has ended (or could not start).

pub mod hooks;
pub mod metrics;

use std::time::{Duration, SystemTime};

use crate::backup::BackupReport;

/// How a backup run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The command's exit code (0 saved, 1 tasks failed, 2 could not run, 3 saved with entries
    /// left out).
    pub exit_code: u8,
    /// When it ended.
    pub ended: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// What it did, when it ran at all.
    pub report: Option<&'a BackupReport>,
    /// Why it could not run, when it could not.
    pub error: Option<String>,
    /// When the newest snapshot of the job was taken, when one is known.
    pub newest_snapshot: Option<SystemTime>,
}

impl RunOutcome<'_> {
    /// True when the run saved a snapshot.
    pub fn saved(&self) -> bool {
        self.report.is_some_and(|r| r.snapshot.is_some())
    }
}
