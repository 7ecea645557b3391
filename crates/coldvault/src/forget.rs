//! `forget` and `prune`: retention by policy, then deleting the data files no snapshot needs.
//!
//! `forget` removes the manifests of the snapshots a policy does not keep (restic's
//! `--keep-last`, `--keep-daily`, `--keep-weekly`, `--keep-monthly`: a snapshot is kept when any
//! rule keeps it). `prune` then deletes, on every node, the data files that no remaining manifest
//! names. It is safe against a backup running at the same time without blocking it: prune takes
//! the prune lock, reads the manifests only after that, and deletes in batches, checking before
//! each batch that no backup has started; when one has (or was running already), prune stops and
//! says the rest is left for the next prune (see [`crate::lock`]). Damage records of data files no
//! snapshot names (`damaged/`, see [`crate::store::DamageRecord`]) go with them, after the data
//! files, and only when prune deleted every data file it meant to.

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::repo::Repository;
use crate::store::{damaged_data_key, manifest_key, ObjectKey, DAMAGED_PREFIX, DATA_PREFIX};

/// Which snapshots to keep; each rule that is set keeps what it selects.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The newest N.
    pub keep_last: Option<usize>,
    /// The newest of each of the last N days that have snapshots.
    pub keep_daily: Option<usize>,
    /// The newest of each of the last N ISO weeks that have snapshots.
    pub keep_weekly: Option<usize>,
    /// The newest of each of the last N months that have snapshots.
    pub keep_monthly: Option<usize>,
}

impl Policy {
    fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
    }
}

/// What forget (and prune) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    /// Snapshots kept.
    pub keep: Vec<String>,
    /// Snapshots removed (or that would be, with `dry_run`).
    pub remove: Vec<String>,
    /// Nothing was changed.
    pub dry_run: bool,
    /// What prune did, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
    /// Problems that did not stop it.
    pub warnings: Vec<String>,
}

/// What prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Data files the remaining snapshots need.
    pub referenced: usize,
    /// Replicas of data files no snapshot needs (found on the nodes).
    pub unreferenced: usize,
    /// Of those, deleted now.
    pub deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Damage records of data files no snapshot needs, deleted (or that would be, dry).
    pub damage_records: usize,
    /// Why some were left for the next prune (a backup was running), if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred: Option<String>,
}

/// Applies `policy` to the snapshots of `repo`; with `prune`, deletes unneeded data files.
pub fn forget(
    repo: &Repository,
    policy: &Policy,
    dry_run: bool,
    prune: bool,
) -> Result<ForgetReport> {
    if policy.is_empty() && !prune {
        return Err(Error::config(
            "say what to keep: --keep-last, --keep-daily, --keep-weekly or --keep-monthly",
        ));
    }
    let listing = repo.list();
    if let Some(w) = listing.warnings.first() {
        return Err(Error::target(format!(
            "forget needs every node's snapshot list: {w}"
        )));
    }
    let mut report = ForgetReport {
        dry_run,
        ..ForgetReport::default()
    };
    let times: Vec<&str> = listing
        .snapshots
        .iter()
        .map(|(m, _)| m.time.as_str())
        .collect();
    let kept = if policy.is_empty() {
        vec![true; times.len()]
    } else {
        keep(&times, policy)
    };
    for ((m, _), k) in listing.snapshots.iter().zip(kept) {
        if k {
            report.keep.push(m.id.to_string());
        } else {
            report.remove.push(m.id.to_string());
        }
    }
    if !dry_run {
        for id in &report.remove {
            let key = manifest_key(id);
            for node in repo.nodes() {
                if let Err(e) = node.delete(&key) {
                    report
                        .warnings
                        .push(format!("{key} on node {}: {e}", node.name()));
                }
            }
        }
    }
    if prune {
        report.prune = Some(run_prune(repo, dry_run, &report.remove)?);
    }
    Ok(report)
}

/// Which of the snapshots taken at `times` (RFC 3339, oldest first) `policy` keeps.
pub(crate) fn keep(times: &[&str], policy: &Policy) -> Vec<bool> {
    let mut kept = vec![false; times.len()];
    type Bucket = fn(&str) -> String;
    let rules: [(Option<usize>, Bucket); 4] = [
        (policy.keep_last, |t| t.to_owned()),
        (policy.keep_daily, |t| t.get(..10).unwrap_or(t).to_owned()),
        (policy.keep_weekly, iso_week),
        (policy.keep_monthly, |t| t.get(..7).unwrap_or(t).to_owned()),
    ];
    for (n, bucket) in rules {
        let Some(n) = n else { continue };
        let mut seen = BTreeSet::new();
        for i in (0..times.len()).rev() {
            if seen.len() >= n {
                break;
            }
            if seen.insert(bucket(times[i])) {
                kept[i] = true;
            }
        }
    }
    kept
}

/// `YYYY-Www` of an RFC 3339 time (ISO 8601 week).
fn iso_week(t: &str) -> String {
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday; 1970-01-01 was a Thursday
    let thursday = days - weekday + 3;
    let year = civil_year(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    format!("{year}-W{week:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day counted from 1970-01-01.
fn civil_year(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

/// Deletes, on every node, the data files no snapshot needs, unless a backup runs.
fn run_prune(repo: &Repository, dry_run: bool, forgotten: &[String]) -> Result<PruneReport> {
    const BATCH: usize = 200;
    let mut report = PruneReport::default();
    let mut lock = if dry_run {
        None
    } else {
        match Lock::prune(repo.nodes())? {
            Some(l) => Some(l),
            None => {
                report.deferred = Some("a backup is running; nothing was deleted".into());
                return Ok(report);
            }
        }
    };
    // Manifests are read after the lock is held: a backup that commits from now on started
    // after it, and prune stops when one starts.
    let listing = repo.list();
    if let Some(w) = listing.warnings.first() {
        return Err(Error::target(format!(
            "prune needs every node's snapshot list: {w}"
        )));
    }
    let referenced: HashSet<String> = listing
        .snapshots
        .iter()
        .filter(|(m, _)| !(dry_run && forgotten.iter().any(|f| f == m.id.as_str())))
        .flat_map(|(m, _)| m.receipts().into_iter().map(|r| r.key.to_string()))
        .collect();
    report.referenced = referenced.len();
    let mut doomed: Vec<(usize, ObjectKey)> = Vec::new();
    for (i, node) in repo.nodes().iter().enumerate() {
        let keys = node
            .list(DATA_PREFIX)
            .map_err(|e| e.with_context("node", node.name()))?;
        doomed.extend(
            keys.into_iter()
                .filter(|k| !referenced.contains(k.as_str()))
                .map(|k| (i, k)),
        );
    }
    report.unreferenced = doomed.len();
    let records = stale_records(repo, &referenced);
    let Some(lock) = lock.as_mut() else {
        report.damage_records = records.len();
        return Ok(report);
    };
    for batch in doomed.chunks(BATCH) {
        if lock.backup_started()? {
            report.deferred = Some(format!(
                "a backup started; {} replicas are left for the next prune",
                report.unreferenced - report.deleted
            ));
            break;
        }
        for (i, key) in batch {
            let node = &repo.nodes()[*i];
            let size = node.stat(key).ok().flatten().unwrap_or(0);
            node.delete(key)
                .map_err(|e| e.with_context("node", node.name()))?;
            report.deleted += 1;
            report.bytes_freed += size;
        }
    }
    if report.deferred.is_none() && !lock.backup_started()? {
        for (i, key) in &records {
            // A record left behind names a file no snapshot needs: harmless, the next prune retries.
            if repo.nodes()[*i].delete(key).is_ok() {
                report.damage_records += 1;
            }
        }
    }
    Ok(report)
}

/// The damage records, by node index, of data files no snapshot in `referenced` names. A node
/// whose records cannot be listed is passed over: its records wait for the next prune.
fn stale_records(repo: &Repository, referenced: &HashSet<String>) -> Vec<(usize, ObjectKey)> {
    let mut out = Vec::new();
    for (i, node) in repo.nodes().iter().enumerate() {
        let Ok(keys) = node.list(DAMAGED_PREFIX) else {
            continue;
        };
        out.extend(
            keys.into_iter()
                .filter(|k| damaged_data_key(k).is_some_and(|d| !referenced.contains(d.as_str())))
                .map(|k| (i, k)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks_match_the_calendar() {
        assert_eq!(iso_week("2026-11-25T10:00:00Z"), "2026-W48");
        assert_eq!(iso_week("2021-01-03T00:00:00Z"), "2020-W53");
        assert_eq!(iso_week("2024-12-30T00:00:00Z"), "2025-W01");
        assert_eq!(iso_week("1970-01-01T00:00:00Z"), "1970-W01");
    }

    #[test]
    fn each_rule_keeps_the_newest_of_its_buckets() {
        let times = [
            "2026-09-30T10:00:00Z",
            "2026-10-31T10:00:00Z",
            "2026-11-20T08:00:00Z",
            "2026-11-24T08:00:00Z",
            "2026-11-24T20:00:00Z",
            "2026-11-25T08:00:00Z",
        ];
        let keep_last = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        assert_eq!(
            keep(&times, &keep_last),
            [false, false, false, false, true, true]
        );
        let daily = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            keep(&times, &daily),
            [false, false, true, false, true, true]
        );
        let monthly = Policy {
            keep_monthly: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            keep(&times, &monthly),
            [true, true, false, false, false, true]
        );
        let weekly = Policy {
            keep_weekly: Some(2),
            ..Policy::default()
        };
        assert_eq!(
            keep(&times, &weekly),
            [false, false, true, false, false, true]
        );
    }
}
