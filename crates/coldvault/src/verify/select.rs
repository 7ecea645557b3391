//! Which replicas a `verify` reads: all of them, the N-th of M fixed groups of data files
//! (restic's `--read-data-subset N/M`: a data file's group follows from its name, a BLAKE3, so
//! the M groups split every snapshot the same way), or a share of the bytes (`10%`) — and in
//! which order: the replicas read longest ago (never read first) come first, so that a
//! time-boxed or partial run goes on where the last one stopped.

use std::time::Duration;

use super::coverage::Coverage;
use crate::store::Receipt;

/// Which data files to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Every one.
    All,
    /// Group `n` (1-based) of `m`.
    Group {
        /// Which group, from 1.
        n: u32,
        /// How many groups.
        m: u32,
    },
    /// This share of the bytes, in percent, least recently read first.
    Percent(f64),
}

impl std::str::FromStr for Subset {
    type Err = String;

    /// `N/M` or `P%`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected N/M (for example 1/5) or a percentage (10%)");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("{s:?}: a percentage above 0 and at most 100"));
            }
            return Ok(Subset::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(format!("{s:?}: N must be between 1 and M"));
        }
        Ok(Subset::Group { n, m })
    }
}

/// What to read of a snapshot's data, and for how long at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataReads {
    /// Which data files.
    pub subset: Subset,
    /// No read starts after this much time; the rest waits for the next run.
    pub max_duration: Option<Duration>,
}

/// The group (0-based, of `m`) of a data file: from the first 8 hex digits of its checksum.
pub(crate) fn group(data: &Receipt, m: u32) -> u32 {
    let head = data.checksum.get(..8).unwrap_or("0");
    u32::from_str_radix(head, 16).unwrap_or(0) % m
}

/// The replicas to read, in the order to read them: `candidates` are (data file, node) pairs
/// whose replicas can be read.
pub(crate) fn choose<'a>(
    candidates: &[(&'a Receipt, &'a str)],
    coverage: &Coverage,
    subset: Subset,
) -> Vec<(&'a Receipt, &'a str)> {
    let mut chosen: Vec<(&Receipt, &str)> = candidates
        .iter()
        .copied()
        .filter(|(data, _)| match subset {
            Subset::Group { n, m } => group(data, m) == n - 1,
            _ => true,
        })
        .collect();
    chosen.sort_by_key(|(data, node)| {
        (
            coverage.last_read(node, data.key.as_str()),
            data.checksum.clone(),
            node.to_string(),
        )
    });
    if let Subset::Percent(p) = subset {
        let total: u64 = candidates.iter().map(|(d, _)| d.size).sum();
        let want = (total as f64 * p / 100.0).ceil() as u64;
        let mut sum = 0;
        let take = chosen
            .iter()
            .take_while(|(d, _)| {
                let before = sum;
                sum += d.size;
                before < want
            })
            .count();
        chosen.truncate(take);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(i: u32, size: u64) -> Receipt {
        let checksum = blake3::hash(&i.to_le_bytes()).to_hex().to_string();
        Receipt {
            key: crate::store::data_key(&checksum, "tar.zst"),
            size,
            checksum,
            nodes: vec!["a".into()],
        }
    }

    #[test]
    fn subsets_parse_as_restic_writes_them() {
        assert_eq!("2/5".parse(), Ok(Subset::Group { n: 2, m: 5 }));
        assert_eq!("10%".parse(), Ok(Subset::Percent(10.0)));
        assert!("0/5".parse::<Subset>().is_err());
        assert!("6/5".parse::<Subset>().is_err());
        assert!("0%".parse::<Subset>().is_err());
        assert!("101%".parse::<Subset>().is_err());
        assert!("half".parse::<Subset>().is_err());
    }

    #[test]
    fn the_m_groups_cover_every_data_file_once() {
        let all: Vec<Receipt> = (0..200).map(|i| receipt(i, 10)).collect();
        let pairs: Vec<(&Receipt, &str)> = all.iter().map(|r| (r, "a")).collect();
        let c = Coverage::default();
        let mut seen = std::collections::BTreeMap::new();
        for n in 1..=7 {
            let chosen = choose(&pairs, &c, Subset::Group { n, m: 7 });
            assert!(!chosen.is_empty());
            for (d, _) in chosen {
                *seen.entry(d.key.to_string()).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 200);
        assert!(seen.values().all(|&n| n == 1));
    }

    #[test]
    fn a_share_reads_the_least_recently_read_first_and_enough_bytes() {
        let all: Vec<Receipt> = (0..10).map(|i| receipt(i, 100)).collect();
        let pairs: Vec<(&Receipt, &str)> = all.iter().map(|r| (r, "a")).collect();
        let mut c = Coverage::default();
        for (i, r) in all.iter().enumerate().skip(3) {
            c.note("a", r.key.as_str(), 1_000 + i as u64);
        }
        let chosen = choose(&pairs, &c, Subset::Percent(35.0));
        // 35% of 1000 bytes: four files of 100; the three never read, then the oldest read.
        assert_eq!(chosen.len(), 4);
        let keys: Vec<&str> = chosen.iter().map(|(d, _)| d.key.as_str()).collect();
        for r in &all[..4] {
            assert!(keys.contains(&r.key.as_str()), "{keys:?}");
        }
    }
}
