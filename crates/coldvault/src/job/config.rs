//! The raw, serde-shaped mirror of a job file. Nothing here is checked beyond types; `validate()` in
//! the parent module turns it into a [`super::Job`].
//!
//! Every struct denies unknown keys. The source is an internally tagged enum whose variants each wrap
//! their own struct carrying `deny_unknown_fields`, because the attribute on the enum itself is not
//! honoured for internally tagged enums (serde #2123).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobConfig {
    pub name: String,
    pub source: SourceConfig,
    #[serde(default)]
    pub split: SplitConfig,
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub run: RunConfig,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum SourceConfig {
    Fs(FsSourceConfig),
    Sqlite(SqliteSourceConfig),
    Postgres(DbSourceConfig),
    Mysql(DbSourceConfig),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DbSourceConfig {
    pub url: String,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub tables: Option<Vec<String>>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// Per-table settings, keyed by table name (`schema.table` or a bare name in `public` for
    /// PostgreSQL).
    pub table: Option<std::collections::BTreeMap<String, TableConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableConfig {
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub columns: Option<Vec<String>>,
    pub split_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FsSourceConfig {
    pub path: String,
    pub exclude: Option<Vec<String>>,
    pub exclude_if_present: Option<Vec<String>>,
    pub one_file_system: Option<bool>,
    pub on_unreadable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqliteSourceConfig {
    pub path: String,
    pub tables: Option<Vec<String>>,
}

/// A size: a number of bytes, or a string such as "256MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeConfig {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitConfig {
    pub target_bytes: Option<SizeConfig>,
    pub max_rows: Option<u64>,
    pub rewrite_percent: Option<i64>,
    pub max_deltas: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepositoryConfig {
    pub directory: String,
    pub replicas: Option<i64>,
    pub nodes: Vec<NodeConfig>,
    pub encryption: Option<EncryptionConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncryptionConfig {
    pub recipients: Option<Vec<String>>,
    pub identity_file: Option<String>,
    pub identity_env: Option<String>,
    pub passphrase_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConfig {
    pub name: String,
    pub url: String,
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub access_key_id_file: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub ambient_credentials: Option<bool>,
    pub storage_class: Option<String>,
    pub max_rate: Option<String>,
    pub account_name_env: Option<String>,
    pub account_key_env: Option<String>,
    pub account_key_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunConfig {
    pub parallel: Option<i64>,
    pub staging: Option<String>,
    pub retries: Option<i64>,
    pub retry_delay: Option<String>,
    pub zstd_level: Option<i32>,
    pub engine: Option<String>,
    pub spark: Option<SparkConfig>,
    pub metrics_file: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SparkConfig {
    pub master: Option<String>,
    pub submit: Option<String>,
    pub binary: Option<String>,
    pub conf: Option<std::collections::BTreeMap<String, String>>,
}
