//! The job: a TOML file parsed in two phases.
//!
//! Phase one ([`config`]) is a raw serde mirror of the file; syntax errors, unknown keys and wrong
//! types are reported there with the file's line and column. Phase two ([`validate`]) checks every
//! value and builds the typed [`Job`]: sizes parsed, paths made absolute (relative paths are taken
//! from the job file's directory), node URLs parsed, replicas checked against the nodes.

mod config;
mod validate;

pub use validate::{parse_rate, parse_size};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use config::JobConfig;

pub use crate::secrets::{CredentialSource, PasswordSource};
pub use crate::store::NodeUrl;

/// A validated backup job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Snapshots are grouped by this name.
    pub name: String,
    /// What to back up.
    pub source: Source,
    /// How to split it into map tasks.
    pub split: Split,
    /// Where to store it.
    pub repository: RepositorySettings,
    /// How to run it.
    pub run: Run,
}

/// What to back up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    /// A file tree.
    Fs {
        /// Root of the tree.
        path: PathBuf,
        /// What of the tree is left out, and what an unreadable entry does.
        #[serde(default)]
        select: TreeSelection,
    },
    /// A SQLite database file.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Table names or glob patterns; every table when empty.
        tables: Vec<String>,
    },
    /// A PostgreSQL database.
    Postgres(Database),
    /// A MySQL or MariaDB database.
    Mysql(Database),
}

/// A database source: where it is and what to take of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Database {
    /// `postgres://user@host:port/db` or `mysql://user@host:port/db`, never with a password.
    pub url: String,
    /// Where the password comes from (default: `PGPASSWORD` / `MYSQL_PWD`).
    pub password: PasswordSource,
    /// Table names or glob patterns (`schema.table` for PostgreSQL); every user table when empty.
    pub tables: Vec<String>,
    /// A condition every selected row must meet (the cold-data case).
    pub filter: Option<String>,
    /// Per-table `where`, `columns` and `split_by`, keyed by table name.
    pub table_settings: std::collections::BTreeMap<String, TableSettings>,
}

/// `[source.table."name"]`: what to take of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSettings {
    /// This table's condition, instead of the source's `where`.
    pub filter: Option<String>,
    /// Only these columns (the others are left to their defaults on restore).
    pub columns: Vec<String>,
    /// An integer column to split by instead of the primary key (NULLs get a task of their own).
    pub split_by: Option<String>,
}

impl Source {
    /// The source type's name as in the job file.
    pub fn type_name(&self) -> &'static str {
        match self {
            Source::Fs { .. } => "fs",
            Source::Sqlite { .. } => "sqlite",
            Source::Postgres(_) => "postgres",
            Source::Mysql(_) => "mysql",
        }
    }

    /// Where the data comes from, for manifests: the path or the URL (never with a secret).
    pub fn location(&self) -> String {
        match self {
            Source::Fs { path, .. } | Source::Sqlite { path, .. } => path.display().to_string(),
            Source::Postgres(db) | Source::Mysql(db) => db.url.clone(),
        }
    }

    /// The database of a `postgres` or `mysql` source.
    pub fn database(&self) -> Option<&Database> {
        match self {
            Source::Postgres(db) | Source::Mysql(db) => Some(db),
            Source::Fs { .. } | Source::Sqlite { .. } => None,
        }
    }
}

/// What of a file tree a backup reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSelection {
    /// Gitignore-style patterns relative to the root: `*.tmp`, `/cache/`, `**/node_modules/`.
    pub exclude: Vec<String>,
    /// Names of files whose presence leaves out the directory holding them (`.nobackup`).
    pub exclude_if_present: Vec<String>,
    /// Whether to stay on the root's file system (mount points are stored, their contents not).
    pub one_file_system: bool,
    /// What an entry that cannot be read does to the backup.
    pub on_unreadable: OnUnreadable,
}

/// What an entry that cannot be read (permission denied, an I/O error) does to a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnreadable {
    /// Leave it out with a warning naming it; the snapshot is saved, marked incomplete (exit 3).
    #[default]
    Warn,
    /// Fail its task: no snapshot (exit 1).
    Fail,
}

/// How a job splits into map tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Split {
    /// About this many bytes of a file tree per task; larger files are split into parts of this size.
    pub target_bytes: u64,
    /// About this many rows of a table per task.
    pub max_rows: u64,
    /// A file-tree range whose layers hold more than this percentage of its size in files
    /// since deleted or replaced is read whole again by the next backup.
    pub rewrite_percent: u64,
    /// A file-tree range with this many deltas is read whole again by the next backup; 0 reads
    /// every changed range whole.
    pub max_deltas: u64,
}

/// `[repository]`: the job's directory on each of several nodes (the repository itself, opened,
/// is [`crate::Repository`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositorySettings {
    /// The job's cold-backup directory on every node.
    pub directory: String,
    /// Each data file is stored on this many nodes.
    pub replicas: usize,
    /// The storage nodes.
    pub nodes: Vec<NodeSpec>,
    /// `[repository.encryption]`: age keys, when the repository is encrypted.
    pub encryption: Option<Encryption>,
}

/// `[repository.encryption]`: names of keys, never a secret itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// age X25519 public keys (`age1…`) every data file is encrypted to.
    pub recipients: Vec<String>,
    /// A file holding an age identity (`AGE-SECRET-KEY-1…`), to read the repository.
    pub identity_file: Option<PathBuf>,
    /// A variable holding an age identity.
    pub identity_env: Option<String>,
    /// A variable holding the passphrase of the repository's own key (instead of recipients).
    pub passphrase_env: Option<String>,
}

impl NodeSpec {
    /// Opens the node, rooted at `directory` on it.
    pub(crate) fn open(&self, directory: &str) -> Result<crate::store::SharedTarget> {
        let node = crate::store::node::open(
            &self.name,
            &self.url,
            &self.credentials,
            self.storage_class.as_deref(),
            directory,
        )?;
        Ok(match self.max_rate {
            Some(rate) => std::sync::Arc::new(crate::store::LimitedTarget::new(node, rate)),
            None => node,
        })
    }

    /// Creates the node's root where its kind allows it (`Ok(false)` where it does not).
    pub(crate) fn create_root(&self, directory: &str) -> Result<bool> {
        crate::store::node::create_root(&self.name, &self.url, directory)
    }

    /// The environment variables its credentials may come from.
    pub(crate) fn credential_vars(&self) -> Vec<String> {
        crate::store::node::credential_vars(&self.url, &self.credentials)
    }
}

/// One storage node as declared in the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name, used in receipts and messages.
    pub name: String,
    /// Where it is.
    pub url: NodeUrl,
    /// For S3 nodes: where the credentials come from.
    pub credentials: CredentialSource,
    /// For S3 nodes: the storage class data files are written in (`DEEP_ARCHIVE`, …).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// The most bytes per second moved to or from the node, uploads and downloads together.
    #[serde(default)]
    pub max_rate: Option<u64>,
}

/// How to run a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Tasks running at once.
    pub parallel: usize,
    /// The local spool directory.
    pub staging: PathBuf,
    /// How many times a failed store request is sent again to one node.
    pub retries: u32,
    /// The first pause before sending again; it doubles each time, with jitter.
    #[serde(with = "duration_text")]
    pub retry_delay: Duration,
    /// zstd compression level of data files.
    pub zstd_level: i32,
    /// Where the tasks run.
    pub engine: EngineKind,
    /// How to reach a Spark cluster, for `engine = "spark"`.
    pub spark: SparkSettings,
    /// Where a backup writes its figures for Prometheus (node_exporter's textfile collector).
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Shell commands run around a backup (`sh -c`), with its outcome in the environment.
    #[serde(default)]
    pub hooks: Hooks,
    /// How long a backup waits for another backup of the job to finish (`--wait`); `None`
    /// refuses at once.
    #[serde(skip)]
    pub lock_wait: Option<Duration>,
}

/// `[run] before`, `after`, `on_failure`: shell commands run around a backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hooks {
    /// Before the backup; when it fails the backup does not run (exit 2).
    pub before: Option<String>,
    /// After a backup that saved its snapshot.
    pub after: Option<String>,
    /// After a backup (or a `before` hook) that failed.
    pub on_failure: Option<String>,
}

/// Where a job's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// A pool of worker threads on this machine.
    Local,
    /// The executors of an Apache Spark cluster, through spark-submit.
    Spark,
}

/// `[run.spark]`: how to submit to a Spark cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparkSettings {
    /// The master URL: `spark://host:7077`, `yarn`, `k8s://…`, `local-cluster[2,1,1024]`.
    pub master: Option<String>,
    /// The `spark-submit` to run (default: `$SPARK_HOME/bin/spark-submit`, else from PATH).
    pub submit: Option<PathBuf>,
    /// The coldvault binary on every executor; when unset the running binary is shipped with
    /// `spark-submit --files`.
    pub binary: Option<PathBuf>,
    /// More `--conf key=value` settings for spark-submit.
    pub conf: Vec<(String, String)>,
}

impl SparkSettings {
    /// The master URL; an error when there is none. The one place the Spark engine's need for a
    /// master is checked.
    pub fn master(&self) -> Result<&str> {
        self.master.as_deref().ok_or_else(|| {
            Error::config("the spark engine needs a master: [run.spark] master or --spark-master")
        })
    }
}

mod duration_text {
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The default parallelism: the machine's cores.
pub fn default_parallel() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Job {
    /// Reads, parses and validates a job file. Errors name the file and the line or key.
    pub fn load(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read job file {}", path.display())).with_source(e)
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).map_err(|e| {
            Error::config(format!("cannot resolve {}", base.display())).with_source(e)
        })?;
        Job::parse(&text, &base)
            .map_err(|e| Error::config(format!("job file {}: {}", path.display(), e.message())))
    }

    /// Parses and validates job text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Job> {
        let raw: JobConfig = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        validate::validate(raw, base)
    }
}

#[cfg(test)]
mod tests;
