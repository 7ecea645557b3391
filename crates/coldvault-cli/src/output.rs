//! Human and JSON output, and the progress bar.

use std::sync::atomic::Ordering;
use std::time::Duration;

use coldvault::backup::BackupReport;
use coldvault::catalog::Warning;
use coldvault::repo::Listing;
use coldvault::verify::VerifyReport;
use coldvault::{Job, Plan, Progress};
use serde::Serialize;

/// Prints one JSON document on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("coldvault: cannot encode JSON: {e}"),
    }
}

/// Bytes for people.
pub fn bytes(n: u64) -> String {
    coldvault::util::human_bytes(n)
}

/// Runs `f` with a progress bar on stderr when `show` is set.
pub fn with_progress<T>(show: bool, what: &str, f: impl FnOnce(&Progress) -> T) -> T {
    let progress = Progress::default();
    if !show {
        return f(&progress);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    let done = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let total = progress.bytes_total.load(Ordering::Relaxed);
                let now = progress.bytes_done.load(Ordering::Relaxed);
                bar.set_length(total.max(now));
                bar.set_position(now);
                let waiting = progress.waiting_retrieval.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "tasks {}/{}{}",
                    progress.tasks_done.load(Ordering::Relaxed),
                    progress.tasks_total.load(Ordering::Relaxed),
                    if waiting > 0 {
                        format!(", {waiting} waiting for their retrieval")
                    } else {
                        String::new()
                    }
                ));
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        let out = f(&progress);
        done.store(true, Ordering::Relaxed);
        out
    });
    bar.finish_and_clear();
    out
}

pub fn print_plan(job: &Job, plan: &Plan) {
    println!(
        "job {}: {} tasks, about {} ({} source)",
        job.name,
        plan.tasks.len(),
        bytes(plan.estimated_bytes()),
        job.source.type_name()
    );
    for n in &plan.notes {
        println!("  note: {n}");
    }
    for t in &plan.tasks {
        let what = &t.kind;
        println!(
            "  {}  {:>10}  {:>8} items  {what}",
            t.id,
            bytes(t.estimated_bytes),
            t.estimated_items
        );
    }
}

pub fn print_backup(job: &Job, r: &BackupReport, took: Duration) {
    for f in &r.failed_tasks {
        crate::logs::human(format!(
            "coldvault: task {} ({}) failed: {}",
            f.task, f.kind, f.error
        ));
    }
    for w in r.warnings.iter().filter(|w| w.path.is_empty()) {
        crate::logs::warn(w);
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    let secs = took.as_secs_f64().max(0.001);
    match &r.snapshot {
        Some(id) => println!(
            "snapshot {} of job {} saved: {} tasks, {} files, {} rows, {} read, {} stored x{} copies, manifest on {} ({:.1}s, {}/s)",
            id.short(),
            job.name,
            r.tasks,
            r.files,
            r.rows,
            bytes(r.bytes_read),
            bytes(r.bytes_stored),
            job.repository.replicas,
            r.manifest_nodes.join(", "),
            secs,
            bytes((r.bytes_read as f64 / secs) as u64)
        ),
        None => crate::logs::human(format!(
            "coldvault: backup failed: {} of {} tasks failed; no snapshot was committed",
            r.failed_tasks.len(),
            r.tasks
        )),
    }
    if r.unchanged_tasks > 0 {
        println!(
            "{} of {} tasks unchanged since the last snapshot (same sizes, times and inodes): not read",
            r.unchanged_tasks, r.tasks
        );
    }
    if r.damaged_tasks > 0 {
        println!(
            "{} of {} tasks read again from the source because their data files are recorded \
             damaged on a node",
            r.damaged_tasks, r.tasks
        );
    }
    if let Some(run) = &r.resumed_run {
        println!(
            "resumed the interrupted run of {run}: {} of {} tasks reused, not read again",
            r.reused_tasks, r.tasks
        );
    }
    if let (Some(_), Some(c)) = (&r.snapshot, &r.consistency) {
        println!("consistency: {c}");
    }
    print_entry_warnings(job, r);
}

/// How many entries to name in the summary of what a backup left out or found changing.
const NAMED: usize = 10;

/// The summary of what a backup left out or found changing: counts, the first paths, and where
/// the full list is.
fn print_entry_warnings(job: &Job, r: &BackupReport) {
    let entries: Vec<&Warning> = r.warnings.iter().filter(|w| !w.path.is_empty()).collect();
    if entries.is_empty() {
        return;
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for w in &entries {
        *counts.entry(w.problem.name()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(p, n)| format!("{n} {p}")).collect();
    crate::logs::human(format!(
        "coldvault: warning: {} entries left out or changed while read ({}):",
        entries.len(),
        counts.join(", ")
    ));
    for w in entries.iter().take(NAMED) {
        crate::logs::human(format!("  {w}"));
    }
    if entries.len() > NAMED {
        crate::logs::human(format!("  … and {} more", entries.len() - NAMED));
    }
    if let Some(id) = &r.snapshot {
        crate::logs::human(format!(
            "  the full list: coldvault snapshots {} --json (snapshot {}, field \"warnings\")",
            job.name,
            id.short()
        ));
    }
    if r.left_out > 0 && r.snapshot.is_some() {
        crate::logs::human(format!(
            "coldvault: snapshot saved but incomplete: {} entries could not be read (exit 3)",
            r.left_out
        ));
    }
}

#[derive(Serialize)]
struct SnapshotRow<'a> {
    id: &'a str,
    time: &'a str,
    job: &'a str,
    source: &'a str,
    tasks: u64,
    files: u64,
    rows: u64,
    bytes_read: u64,
    bytes_stored: u64,
    nodes: &'a [String],
    /// Entries the snapshot should hold but does not (unreadable, kept changing).
    left_out: usize,
    /// Everything its backup left out or found changing.
    warnings: Vec<&'a Warning>,
}

fn rows(listing: &Listing) -> Vec<SnapshotRow<'_>> {
    listing
        .snapshots
        .iter()
        .map(|(m, nodes)| SnapshotRow {
            id: m.id.as_str(),
            time: &m.time,
            job: &m.job,
            source: &m.source.location,
            tasks: m.totals.tasks,
            files: m.totals.read.files,
            rows: m.totals.read.rows,
            bytes_read: m.totals.read.bytes_read,
            bytes_stored: m.totals.bytes_stored,
            nodes,
            left_out: m.left_out(),
            warnings: m.warnings(),
        })
        .collect()
}

pub fn print_snapshots_json(listing: &Listing) {
    #[derive(Serialize)]
    struct Doc<'a> {
        snapshots: Vec<SnapshotRow<'a>>,
        /// Manifests found but readable on no node.
        unreadable: &'a [String],
    }
    print_json(&Doc {
        snapshots: rows(listing),
        unreadable: &listing.unreadable,
    });
}

pub fn print_snapshots(listing: &Listing) {
    println!(
        "{:<8}  {:<19}  {:<12}  {:>6}  {:>9}  {:>9}  {:>10}  {:>10}  nodes",
        "id", "time", "job", "tasks", "files", "rows", "read", "stored"
    );
    for r in rows(listing) {
        println!(
            "{:<8}  {:<19}  {:<12}  {:>6}  {:>9}  {:>9}  {:>10}  {:>10}  {}",
            &r.id[..8],
            r.time.get(..19).unwrap_or(r.time).replace('T', " "),
            r.job,
            r.tasks,
            r.files,
            r.rows,
            bytes(r.bytes_read),
            bytes(r.bytes_stored),
            r.nodes.join(","),
        );
        if r.left_out > 0 {
            println!(
                "          incomplete: {} entries left out (unreadable or kept changing)",
                r.left_out
            );
        }
    }
    println!("{} snapshots", listing.snapshots.len());
}

pub fn print_verify(r: &VerifyReport) {
    for w in &r.warnings {
        crate::logs::warn(w);
    }
    for p in &r.problems {
        println!(
            "{:<11} node {:<10} {}  ({})",
            p.problem, p.node, p.file, p.detail
        );
    }
    for u in &r.unread {
        println!("not read    node {:<10} {}  ({})", u.node, u.file, u.reason);
    }
    if r.damage_recorded > 0 {
        println!(
            "{} damaged replicas recorded on their nodes: the next backup reads their tasks again \
             from the source and stores good copies (repair mends now those with a healthy replica)",
            r.damage_recorded
        );
    }
    if let Some(c) = &r.coverage {
        if c.not_reached > 0 {
            println!(
                "{} chosen replicas not read: --max-duration ran out (the next run reads them first)",
                c.not_reached
            );
        }
        println!(
            "coverage: {:.0}% of the bytes of {} readable replicas read in the last 30 days \
             ({} replicas); {} never read{}",
            if c.bytes == 0 {
                100.0
            } else {
                c.read_30d_bytes as f64 * 100.0 / c.bytes as f64
            },
            c.replicas,
            c.read_30d_replicas,
            c.never_read,
            c.oldest_read
                .as_ref()
                .map(|t| format!("; oldest read {t}"))
                .unwrap_or_default()
        );
    }
    println!(
        "snapshot {}: {} data files, {} replicas checked{}: {}",
        &r.snapshot[..8],
        r.data_files,
        r.replicas_checked,
        if r.read_data {
            format!(", {} read and checksummed", bytes(r.bytes_read))
        } else {
            " (presence and size; --read-data checks checksums)".into()
        },
        if r.ok {
            "no problems".to_string()
        } else {
            format!("{} problems", r.problems.len())
        }
    );
}

pub fn print_forget(r: &coldvault::forget::ForgetReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for id in &r.remove {
        println!("{verb} snapshot {id}");
    }
    for w in &r.warnings {
        crate::logs::warn(w);
    }
    println!("{} snapshots kept, {} {verb}", r.keep.len(), r.remove.len());
    if let Some(p) = &r.prune {
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        println!(
            "prune: {} data files needed; {} replicas unneeded, {} {verb} ({})",
            p.referenced,
            p.unreferenced,
            if r.dry_run { p.unreferenced } else { p.deleted },
            bytes(p.bytes_freed)
        );
        if p.damage_records > 0 {
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            println!(
                "prune: {verb} {} damage records of data files no snapshot needs",
                p.damage_records
            );
        }
        if let Some(d) = &p.deferred {
            println!("prune: {d}");
        }
    }
}
