//! `coldvault backup`: the run itself, and around it what unattended operation needs — the
//! `before` hook (a failure stops the run, exit 2), then `after` or `on_failure` with the
//! outcome, and the metrics file for Prometheus.

use std::io::IsTerminal;
use std::time::{Instant, SystemTime};

use coldvault::ops::{hooks, metrics, RunOutcome};
use coldvault::{backup, Job, Progress, Repository};

use crate::output::{self, print_json, with_progress};
use crate::Failure;

/// Runs the backup of `job`; returns the exit code, or the failure of a run that could not run.
pub fn run(
    job: &Job,
    parallel: usize,
    json: bool,
    metrics_file: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let started = Instant::now();
    let outcome = Ended {
        job,
        started,
        metrics_file,
    };
    if let Some(before) = &job.run.hooks.before {
        if let Err(e) = hooks::run("before", before, &hooks::variables(&job.name, None)) {
            let message = format!("{e}; the backup did not run");
            outcome.finish(2, None, Some(message.clone()));
            return Err(anyhow::anyhow!(message).into());
        }
    }
    let show = !json && !crate::logs::json() && std::io::stdout().is_terminal();
    let result = with_progress(show, "backup", |p: &Progress| {
        backup::backup(job, parallel, p)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            outcome.finish(2, None, Some(e.to_string()));
            return Err(e.into());
        }
    };
    if json {
        print_json(&report);
    } else {
        output::print_backup(job, &report, started.elapsed());
    }
    let code = match (&report.snapshot, report.left_out) {
        (None, _) => 1,
        (Some(_), 0) => 0,
        // Saved, but some entries could not be read: restic's "incomplete snapshot".
        (Some(_), _) => 3,
    };
    for w in report.warnings.iter().filter(|w| !w.path.is_empty()) {
        crate::logs::event(
            "warning",
            serde_json::json!({ "path": w.path, "problem": w.problem.name(), "detail": w.detail }),
        );
    }
    crate::logs::event(
        "run_finished",
        serde_json::json!({ "exit_code": code, "snapshot": report.snapshot }),
    );
    outcome.finish(code, Some(&report), None);
    Ok(code)
}

/// What is done once the run ended, whatever the way.
struct Ended<'a> {
    job: &'a Job,
    started: Instant,
    metrics_file: Option<&'a std::path::Path>,
}

impl Ended<'_> {
    /// Writes the metrics and runs `after` or `on_failure`; their own failures are warnings:
    /// the backup's outcome stays what it was.
    fn finish(&self, code: u8, report: Option<&backup::BackupReport>, error: Option<String>) {
        let saved = report.is_some_and(|r| r.snapshot.is_some());
        let mut outcome = RunOutcome {
            job: &self.job.name,
            exit_code: code,
            ended: SystemTime::now(),
            duration: self.started.elapsed(),
            report,
            error,
            newest_snapshot: None,
        };
        if let Some(path) = self.metrics_file.or(self.job.run.metrics_file.as_deref()) {
            outcome.newest_snapshot = match report {
                Some(r) if saved => humantime::parse_rfc3339(&r.time).ok(),
                _ => newest_snapshot(self.job).or_else(|| metrics::newest_snapshot_in(path)),
            };
            if let Err(e) = metrics::write(path, &metrics::render(&outcome)) {
                crate::logs::warn(e);
            }
        }
        let (which, command) = if saved {
            ("after", &self.job.run.hooks.after)
        } else {
            ("on_failure", &self.job.run.hooks.on_failure)
        };
        if let Some(command) = command {
            let vars = hooks::variables(&self.job.name, Some(&outcome));
            if let Err(e) = hooks::run(which, command, &vars) {
                crate::logs::warn(e);
            }
        }
    }
}

/// When the newest snapshot of the job was taken, if the repository can say.
fn newest_snapshot(job: &Job) -> Option<SystemTime> {
    let listing = Repository::open(job).ok()?.list();
    let (newest, _) = listing.snapshots.last()?;
    humantime::parse_rfc3339(&newest.time).ok()
}
