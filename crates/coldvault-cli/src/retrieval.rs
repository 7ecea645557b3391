//! `restore`'s retrieval flags, and the step that runs before a restore reads: the data files
//! only archive nodes hold are requested back and waited for.

use std::time::Duration;

use coldvault::repo::Repository;
use coldvault::retrieve::{retrieve, Retrieval, RetrievalReport};
use coldvault::store::RetrievalTier;

#[derive(clap::Args)]
pub struct RetrievalArgs {
    /// For data files only archive-class nodes hold: how fast (and at what price) to retrieve
    #[arg(long, value_name = "TIER", default_value = "bulk", value_parser = ["bulk", "standard", "expedited"])]
    retrieval: String,
    /// How many days retrieved copies stay readable
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    retrieval_days: u32,
    /// Request the retrievals and return, without waiting or restoring; a later restore reads
    #[arg(long)]
    retrieval_only: bool,
    /// How often to ask the store again about a data file whose retrieval is under way
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    retrieval_poll: Duration,
}

impl RetrievalArgs {
    /// True when the command should stop after requesting.
    pub fn only(&self) -> bool {
        self.retrieval_only
    }

    /// The retrieval settings a restore's workers use.
    pub fn settings(&self) -> Retrieval {
        Retrieval {
            tier: match self.retrieval.as_str() {
                "standard" => RetrievalTier::Standard,
                "expedited" => RetrievalTier::Expedited,
                _ => RetrievalTier::Bulk,
            },
            days: self.retrieval_days,
            poll_ms: self.retrieval_poll.as_millis() as u64,
        }
    }

    /// Requests what a restore with `include` must retrieve and says where it stands on stderr.
    pub fn run(
        &self,
        repo: &Repository,
        manifest: &coldvault::catalog::Manifest,
        include: &[String],
        parallel: usize,
    ) -> coldvault::Result<RetrievalReport> {
        let r = retrieve(repo, manifest, include, &self.settings(), parallel.max(4))?;
        for p in &r.problems {
            crate::logs::warn(format!("no node can give {p}"));
        }
        if r.archived > 0 {
            crate::logs::event(
                "retrieval",
                serde_json::json!({
                    "archived": r.archived, "data_files": r.data_files, "ready": r.ready,
                    "requested": r.requested, "already_requested": r.already_requested,
                }),
            );
            crate::logs::human(format!(
                "coldvault: retrieval: {} of {} data files only on archive nodes; {} of them \
                 readable now, {} requested now, {} already requested",
                r.archived, r.data_files, r.ready, r.requested, r.already_requested
            ));
        }
        Ok(r)
    }
}
