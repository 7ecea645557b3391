//! coldvault makes cold backups: a declared [`Job`] is split into map tasks ([`Plan`]), the tasks
//! run in parallel, each reads its share of the source, stages it (encoded, zstd-compressed and
//! BLAKE3-hashed in one pass) and sends it to the storage layer, which writes it as a data file
//! into the job's directory on `replicas` nodes. Then the snapshot's manifest is committed, and the
//! snapshot can be listed, verified, repaired and restored.
//!
//! Everything the `coldvault` command does is a function here:
//!
//! ```no_run
//! use coldvault::{backup, restore, Job, Progress, RestoreOptions, RestoreTarget};
//! # fn main() -> coldvault::Result<()> {
//! let job = Job::load("examples/quickstart.toml".as_ref())?;
//! let progress = Progress::default();
//! let report = backup::backup(&job, job.run.parallel, &progress)?;
//! assert!(report.failed_tasks.is_empty());
//! let opts = RestoreOptions { parallel: 2, ..Default::default() };
//! let to = RestoreTarget::Path("/tmp/restored".into());
//! restore::restore(&job, "latest", &to, &opts, &progress)?;
//! # Ok(()) }
//! ```
//!
//! Data files are open formats: a tar (pax) stream in zstd for a share of a file tree, zstd of raw
//! bytes for a part of a large file, `.dump`-style SQL in zstd for a range of a SQLite table; the
//! manifest is JSON. See the README for restoring by hand.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod backup;
pub mod catalog;
pub mod check;
pub mod crypt;
pub mod engine;
mod error;
pub mod event;
pub mod failpoint;
mod fetch;
pub mod forget;
pub mod job;
pub mod lock;
pub mod ops;
pub mod path;
pub mod plan;
pub mod progress;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retrieve;
mod secrets;
pub mod source;
pub mod stage;
pub mod store;
pub mod task;
pub mod util;
pub mod verify;
pub mod worker;

pub use error::{Error, ErrorKind, Result, Status};
pub use job::Job;
pub use plan::{Plan, TaskSpec};
pub use progress::Progress;
pub use repo::Repository;
pub use restore::{RestoreOptions, RestoreTarget};
