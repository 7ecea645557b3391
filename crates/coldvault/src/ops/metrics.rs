//! A backup's figures in Prometheus's text format, for node_exporter's textfile collector:
//! written whole to a temporary name in the same directory, then renamed, so the collector
//! never reads half a file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use super::RunOutcome;
use crate::error::{Error, Result};

/// The metrics of `outcome`, in the text exposition format.
pub fn render(outcome: &RunOutcome<'_>) -> String {
    let job = label(outcome.job);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP coldvault_{name} {help}");
        let _ = writeln!(out, "# TYPE coldvault_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(
                out,
                "coldvault_{name}{{coldvault_job=\"{job}\"{labels}}} {value}"
            );
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "last_run_timestamp_seconds",
        "When the last backup run of the job ended.",
        &one(epoch(outcome.ended)),
    );
    metric(
        "last_run_success",
        "1 when the last backup run saved a snapshot, else 0.",
        &one(f64::from(u8::from(outcome.saved()))),
    );
    metric(
        "last_run_exit_code",
        "Exit code of the last backup run (0 saved, 1 tasks failed, 2 could not run, 3 saved with entries left out).",
        &one(f64::from(outcome.exit_code)),
    );
    metric(
        "last_run_duration_seconds",
        "How long the last backup run took.",
        &one(outcome.duration.as_secs_f64()),
    );
    if let Some(t) = outcome.newest_snapshot {
        metric(
            "newest_snapshot_timestamp_seconds",
            "When the job's newest snapshot was taken: alert on time() minus this.",
            &one(epoch(t)),
        );
    }
    let Some(r) = outcome.report else {
        return out;
    };
    metric(
        "last_run_bytes_read",
        "Bytes the last backup run read from the source.",
        &one(r.bytes_read as f64),
    );
    metric(
        "last_run_bytes_stored",
        "Bytes of the data files the last backup run's snapshot holds (one copy each).",
        &one(r.bytes_stored as f64),
    );
    let failed = r.failed_tasks.len() as u64;
    let reused = r.reused_tasks + r.unchanged_tasks;
    metric(
        "last_run_tasks",
        "Tasks of the last backup run, by state: read (done), failed, reused (unchanged or stored by an interrupted run).",
        &[
            (
                ",state=\"done\"".into(),
                r.tasks.saturating_sub(failed + reused) as f64,
            ),
            (",state=\"failed\"".into(), failed as f64),
            (",state=\"reused\"".into(), reused as f64),
        ],
    );
    metric(
        "last_run_warnings",
        "Warnings of the last backup run (entries left out or changing, nodes left out).",
        &one(r.warnings.len() as f64),
    );
    metric(
        "last_run_left_out",
        "Entries the last backup run's snapshot should hold but does not.",
        &one(r.left_out as f64),
    );
    let per_node = |f: &dyn Fn(&crate::backup::NodeRun) -> u64| -> Vec<(String, f64)> {
        r.nodes
            .iter()
            .map(|n| (format!(",node=\"{}\"", label(&n.node)), f(n) as f64))
            .collect()
    };
    metric(
        "last_run_node_bytes_written",
        "Bytes of data files the last backup run placed on each node.",
        &per_node(&|n| n.bytes_written),
    );
    metric(
        "last_run_node_retries",
        "Requests the last backup run sent again to each node after a temporary failure.",
        &per_node(&|n| n.retries),
    );
    out
}

/// Writes `text` to `path` atomically: a temporary file beside it, then a rename.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map_or("metrics".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            format!(
                "cannot write the metrics file {} (in {})",
                path.display(),
                dir.map_or_else(|| ".".into(), |d| d.display().to_string())
            ),
            e,
        ));
    }
    Ok(())
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The newest snapshot's time in an earlier metrics file at `path`, to carry forward when the
/// repository cannot say (every node down): the alert on its age must keep firing then.
pub fn newest_snapshot_in(path: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("coldvault_newest_snapshot_timestamp_seconds{"))?;
    let secs: f64 = line.rsplit(' ').next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
}

/// A label value with `\`, `"` and newlines escaped, as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
