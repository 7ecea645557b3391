//! Phase two of reading a job: every value of the raw [`super::config::JobConfig`] checked, with
//! a message that names the key, and turned into the typed [`super::Job`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{self, JobConfig, SizeConfig, SourceConfig};
use super::{
    default_parallel, CredentialSource, Database, Encryption, EngineKind, Hooks, Job, NodeSpec,
    NodeUrl, OnUnreadable, PasswordSource, RepositorySettings, Run, Source, SparkSettings, Split,
    TableSettings, TreeSelection,
};
use crate::error::{Error, Result};

pub(super) fn validate(raw: JobConfig, base: &Path) -> Result<Job> {
    if raw.name.is_empty() || !raw.name.chars().all(is_name_char) {
        return Err(Error::config(format!(
            "name = {:?}: a job name is letters, digits, '-', '_' and '.'",
            raw.name
        )));
    }
    let source = match raw.source {
        SourceConfig::Fs(fs) => {
            let path = existing_path(base, &fs.path, "[source] path")?;
            if !path.is_dir() {
                return Err(Error::config(format!(
                    "[source] path = {:?}: {} is not a directory",
                    fs.path,
                    path.display()
                )));
            }
            let select = validate_selection(fs)?;
            Source::Fs { path, select }
        }
        SourceConfig::Sqlite(sq) => {
            let path = existing_path(base, &sq.path, "[source] path")?;
            let tables = sq.tables.unwrap_or_default();
            for t in &tables {
                glob::Pattern::new(t).map_err(|e| {
                    Error::config(format!(
                        "[source] tables: {t:?} is not a valid pattern: {e}"
                    ))
                })?;
            }
            Source::Sqlite { path, tables }
        }
        SourceConfig::Postgres(db) => {
            Source::Postgres(validate_database(db, base, Dialect::Postgres)?)
        }
        SourceConfig::Mysql(db) => Source::Mysql(validate_database(db, base, Dialect::Mysql)?),
    };
    let target_bytes = match raw.split.target_bytes {
        None => 256 << 20,
        Some(SizeConfig::Bytes(n)) => n,
        Some(SizeConfig::Text(t)) => parse_size(&t)
            .map_err(|e| Error::config(format!("[split] target_bytes = {t:?}: {e}")))?,
    };
    if target_bytes < 4096 {
        return Err(Error::config(format!(
            "[split] target_bytes = {target_bytes}: must be at least 4KiB"
        )));
    }
    let max_rows = raw.split.max_rows.unwrap_or(1_000_000);
    if max_rows == 0 {
        return Err(Error::config("[split] max_rows must be at least 1"));
    }
    let rewrite_percent = match raw.split.rewrite_percent.unwrap_or(25) {
        n @ 1..=1000 => n as u64,
        n => {
            return Err(Error::config(format!(
                "[split] rewrite_percent = {n}: must be between 1 and 1000"
            )))
        }
    };
    let max_deltas = match raw.split.max_deltas.unwrap_or(32) {
        n @ 0..=1000 => n as u64,
        n => {
            return Err(Error::config(format!(
                "[split] max_deltas = {n}: must be between 0 and 1000"
            )))
        }
    };
    let repository = validate_repository(raw.repository, base)?;
    let run = validate_run(raw.run, base)?;
    Ok(Job {
        name: raw.name,
        source,
        split: Split {
            target_bytes,
            max_rows,
            rewrite_percent,
            max_deltas,
        },
        repository,
        run,
    })
}

fn validate_selection(fs: config::FsSourceConfig) -> Result<TreeSelection> {
    let exclude = fs.exclude.unwrap_or_default();
    crate::source::fs::compile_excludes(&exclude)?;
    let exclude_if_present = fs.exclude_if_present.unwrap_or_default();
    if let Some(bad) = exclude_if_present
        .iter()
        .find(|n| n.is_empty() || n.contains('/') || *n == "." || *n == "..")
    {
        return Err(Error::config(format!(
            "[source] exclude_if_present: {bad:?} is not a file name (no '/', not empty)"
        )));
    }
    let on_unreadable = match fs.on_unreadable.as_deref() {
        None | Some("warn") => OnUnreadable::Warn,
        Some("fail") => OnUnreadable::Fail,
        Some(other) => {
            return Err(Error::config(format!(
                "[source] on_unreadable = {other:?}: expected \"warn\" or \"fail\""
            )))
        }
    };
    Ok(TreeSelection {
        exclude,
        exclude_if_present,
        one_file_system: fs.one_file_system.unwrap_or(false),
        on_unreadable,
    })
}

fn validate_repository(raw: config::RepositoryConfig, base: &Path) -> Result<RepositorySettings> {
    let directory = raw.directory.trim_matches('/').to_owned();
    if directory.is_empty()
        || directory
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::config(format!(
            "[repository] directory = {:?}: must be a relative path without '.' or '..'",
            raw.directory
        )));
    }
    if raw.nodes.is_empty() {
        return Err(Error::config(
            "[repository] nodes: at least one node is needed",
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(raw.nodes.len());
    for n in raw.nodes {
        if n.name.is_empty() || !n.name.chars().all(is_name_char) {
            return Err(Error::config(format!(
                "[repository] nodes: name = {:?}: a node name is letters, digits, '-', '_' and '.'",
                n.name
            )));
        }
        if nodes.iter().any(|m| m.name == n.name) {
            return Err(Error::config(format!(
                "[repository] nodes: the node name {:?} is used twice",
                n.name
            )));
        }
        let url = NodeUrl::parse(&n.url, base)
            .map_err(|e| Error::config(format!("[repository] nodes: {}", e.message())))?;
        if let Some(m) = nodes.iter().find(|m| m.url == url) {
            return Err(Error::config(format!(
                "[repository] nodes: {:?} and {:?} have the same URL",
                m.name, n.name
            )));
        }
        let credentials = CredentialSource {
            access_key_id_env: n.access_key_id_env,
            secret_access_key_env: n.secret_access_key_env,
            access_key_id_file: n.access_key_id_file.map(|f| base.join(f)),
            secret_access_key_file: n.secret_access_key_file.map(|f| base.join(f)),
            ambient: n.ambient_credentials.unwrap_or(false),
            account_name_env: n.account_name_env,
            account_key_env: n.account_key_env,
            account_key_file: n.account_key_file.map(|f| base.join(f)),
            key_file: n.key_file.map(|f| base.join(f)),
        };
        if let Some((field, owner)) = url.foreign_credentials(&credentials).first() {
            return Err(Error::config(format!(
                "[repository] nodes: node {:?}: {field} is only for {owner}:// nodes",
                n.name
            )));
        }
        let storage_class = match n.storage_class {
            Some(_) if url.scheme() != "s3" => {
                return Err(Error::config(format!(
                    "[repository] nodes: node {:?}: storage_class is only for s3:// nodes",
                    n.name
                )))
            }
            Some(c) if c.is_empty() || !c.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                return Err(Error::config(format!(
                    "[repository] nodes: node {:?}: storage_class = {c:?}: expected a class \
                     name such as STANDARD_IA, GLACIER or DEEP_ARCHIVE",
                    n.name
                )))
            }
            c => c,
        };
        let max_rate = n
            .max_rate
            .map(|r| parse_rate(&r))
            .transpose()
            .map_err(|e| {
                Error::config(format!(
                    "[repository] nodes: node {:?}: max_rate: {e}",
                    n.name
                ))
            })?;
        nodes.push(NodeSpec {
            name: n.name,
            url,
            credentials,
            storage_class,
            max_rate,
        });
    }
    let replicas = raw.replicas.unwrap_or(nodes.len().min(2) as i64);
    if replicas < 1 || replicas > nodes.len() as i64 {
        return Err(Error::config(format!(
            "[repository] replicas = {replicas}: must be between 1 and the number of nodes ({})",
            nodes.len()
        )));
    }
    let encryption =
        match raw.encryption {
            None => None,
            Some(e) => {
                let recipients = e.recipients.unwrap_or_default();
                let keyed =
                    !recipients.is_empty() || e.identity_file.is_some() || e.identity_env.is_some();
                match (&e.passphrase_env, keyed) {
                    (Some(_), true) => return Err(Error::config(
                        "[repository.encryption]: passphrase_env or recipients/identity, not both",
                    )),
                    (None, _) if recipients.is_empty() => return Err(Error::config(
                        "[repository.encryption]: name recipients = [\"age1…\"] or passphrase_env",
                    )),
                    _ => {}
                }
                for r in &recipients {
                    if !r.starts_with("age1") {
                        return Err(Error::config(format!(
                        "[repository.encryption] recipients: {r:?} is not an age public key (age1…)"
                    )));
                    }
                }
                Some(Encryption {
                    recipients,
                    identity_file: e.identity_file.map(|f| base.join(f)),
                    identity_env: e.identity_env,
                    passphrase_env: e.passphrase_env,
                })
            }
        };
    Ok(RepositorySettings {
        directory,
        replicas: replicas as usize,
        nodes,
        encryption,
    })
}

fn validate_run(raw: config::RunConfig, base: &Path) -> Result<Run> {
    let parallel = match raw.parallel {
        None => default_parallel(),
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            return Err(Error::config(format!(
                "[run] parallel = {n}: must be between 1 and 1024"
            )))
        }
    };
    let retries = match raw.retries {
        None => 5,
        Some(n) if (0..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(Error::config(format!(
                "[run] retries = {n}: must be between 0 and 100"
            )))
        }
    };
    let retry_delay = match raw.retry_delay {
        None => Duration::from_millis(200),
        Some(t) => humantime::parse_duration(&t)
            .map_err(|e| Error::config(format!("[run] retry_delay = {t:?}: {e}")))?,
    };
    let zstd_level = raw.zstd_level.unwrap_or(3);
    if !(1..=19).contains(&zstd_level) {
        return Err(Error::config(format!(
            "[run] zstd_level = {zstd_level}: must be between 1 and 19"
        )));
    }
    let staging = match raw.staging {
        Some(s) => base.join(s),
        None => std::env::temp_dir().join("coldvault"),
    };
    let engine = match raw.engine.as_deref() {
        None | Some("local") => EngineKind::Local,
        Some("spark") => EngineKind::Spark,
        Some(other) => {
            return Err(Error::config(format!(
                "[run] engine = {other:?}: expected \"local\" or \"spark\""
            )))
        }
    };
    let spark = raw
        .spark
        .map(|sc| SparkSettings {
            master: sc.master,
            submit: sc.submit.map(|p| base.join(p)),
            binary: sc.binary.map(|p| base.join(p)),
            conf: sc.conf.unwrap_or_default().into_iter().collect(),
        })
        .unwrap_or_default();
    if engine == EngineKind::Spark {
        spark
            .master()
            .map_err(|e| Error::config(format!("[run] engine = \"spark\": {}", e.message())))?;
    }
    Ok(Run {
        parallel,
        staging,
        retries,
        retry_delay,
        zstd_level,
        engine,
        spark,
        metrics_file: raw.metrics_file.map(|f| base.join(f)),
        hooks: Hooks {
            before: hook(raw.before, "before")?,
            after: hook(raw.after, "after")?,
            on_failure: hook(raw.on_failure, "on_failure")?,
        },
        lock_wait: None,
    })
}

fn hook(command: Option<String>, key: &str) -> Result<Option<String>> {
    match command {
        Some(c) if c.trim().is_empty() => Err(Error::config(format!(
            "[run] {key} is empty: give a shell command, or leave the key out"
        ))),
        c => Ok(c),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn existing_path(base: &Path, raw: &str, key: &str) -> Result<PathBuf> {
    if raw.is_empty() {
        return Err(Error::config(format!("{key} is empty")));
    }
    let path = base.join(raw);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(Error::config(format!(
            "{key} = {raw:?}: {} does not exist or cannot be read ({e})",
            path.display()
        ))),
    }
}

/// A rate such as `50MiB/s` (or a bare size, per second), in bytes per second; at least 1 KiB/s.
pub fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    let size = text.trim().strip_suffix("/s").unwrap_or(text);
    let rate =
        parse_size(size).map_err(|e| format!("{text:?}: {e} (expected e.g. \"50MiB/s\")"))?;
    if rate < 1024 {
        return Err(format!("{text:?}: below 1KiB/s"));
    }
    Ok(rate)
}

/// Parses "256MiB", "1G", "512k", "1000000", "10MB" (decimal), into bytes.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 256MiB".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("unknown size unit {u:?} (use KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_string())
}

#[derive(Clone, Copy)]
enum Dialect {
    Postgres,
    Mysql,
}

/// Checks a database source: the URL's scheme, no password in it, valid table patterns.
fn validate_database(
    db: config::DbSourceConfig,
    base: &Path,
    dialect: Dialect,
) -> Result<Database> {
    let (schemes, example, standard): (&[&str], _, _) = match dialect {
        Dialect::Postgres => (
            &["postgres://", "postgresql://"],
            "postgres://user@host:port/database",
            "PGPASSWORD",
        ),
        Dialect::Mysql => (
            &["mysql://", "mariadb://"],
            "mysql://user@host:port/database",
            "MYSQL_PWD",
        ),
    };
    if !schemes.iter().any(|s| db.url.starts_with(s)) {
        return Err(Error::config(format!(
            "[source] url = {:?}: expected {example}",
            db.url
        )));
    }
    let rest = db.url.split("://").nth(1).unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    if authority
        .split('@')
        .next()
        .is_some_and(|user| authority.contains('@') && user.contains(':'))
    {
        return Err(Error::config(format!(
            "[source] url: put the password in password_env, password_file or {standard}, not in the URL"
        )));
    }
    if matches!(dialect, Dialect::Mysql)
        && rest
            .split_once('/')
            .is_none_or(|(_, d)| d.split('?').next().unwrap_or("").is_empty())
    {
        return Err(Error::config(format!(
            "[source] url = {:?}: name the database, as in {example}",
            db.url
        )));
    }
    let tables = db.tables.unwrap_or_default();
    for t in &tables {
        glob::Pattern::new(t).map_err(|e| {
            Error::config(format!(
                "[source] tables: {t:?} is not a valid pattern: {e}"
            ))
        })?;
    }
    let table_settings = db
        .table
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            let name = match dialect {
                Dialect::Postgres if !name.contains('.') => format!("public.{name}"),
                _ => name,
            };
            let settings = TableSettings {
                filter: t.filter,
                columns: t.columns.unwrap_or_default(),
                split_by: t.split_by,
            };
            (name, settings)
        })
        .collect();
    Ok(Database {
        url: db.url,
        password: PasswordSource {
            env: db.password_env,
            file: db.password_file.map(|f| base.join(f)),
        },
        tables,
        filter: db.filter,
        table_settings,
    })
}
