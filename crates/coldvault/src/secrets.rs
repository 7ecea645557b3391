//! Secrets are resolved here and nowhere else: from a file or an environment variable named in the
//! job, or from the standard variables. They go straight into the node's client and never reach a
//! job, plan, manifest, log line or error message (errors name the variable or file, not the value).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a database password comes from: the names of a variable or a file, never the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordSource {
    /// A variable holding it.
    pub env: Option<String>,
    /// A file holding it.
    pub file: Option<PathBuf>,
}

/// Where a node's S3 credentials come from. Only names of variables and files: the secrets
/// themselves are read when the node is opened and never kept in the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSource {
    /// Variable holding the access key id (default: `AWS_ACCESS_KEY_ID`).
    pub access_key_id_env: Option<String>,
    /// Variable holding the secret key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key_env: Option<String>,
    /// File holding the access key id.
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret key.
    pub secret_access_key_file: Option<PathBuf>,
    /// Let the S3 client also look in ~/.aws and the instance metadata service.
    pub ambient: bool,
}

/// The access key id and secret key of the S3 node `node`.
pub(crate) fn s3_credentials(node: &str, c: &CredentialSource) -> Result<(String, String)> {
    let id = one(
        node,
        "access key id",
        c.access_key_id_file.as_deref(),
        c.access_key_id_env.as_deref(),
        "AWS_ACCESS_KEY_ID",
        c.ambient,
    )?;
    let secret = one(
        node,
        "secret key",
        c.secret_access_key_file.as_deref(),
        c.secret_access_key_env.as_deref(),
        "AWS_SECRET_ACCESS_KEY",
        c.ambient,
    )?;
    Ok((id, secret))
}

fn one(
    node: &str,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
    standard: &str,
    ambient: bool,
) -> Result<String> {
    let err = |m: String| Error::config(m).with_context("node", node);
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| err(format!("cannot read the {what} file {}: {e}", f.display())))?;
        return Ok(text.trim().to_owned());
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map_err(|_| err(format!("the {what} variable {var} is not set")));
    }
    match std::env::var(standard) {
        Ok(v) => Ok(v),
        Err(_) if ambient => Ok(String::new()),
        Err(_) => Err(err(format!(
            "no S3 {what}: set {standard}, or name a variable or file for it in the node's entry"
        ))),
    }
}

/// A database password: from the file or variable named in the job, else the standard variable
/// (`PGPASSWORD`, `MYSQL_PWD`); `None` when there is none (trust or peer authentication).
pub(crate) fn db_password(source: &PasswordSource, standard: &str) -> Result<Option<String>> {
    if let Some(f) = &source.file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            Error::config(format!(
                "cannot read the password file {}: {e}",
                f.display()
            ))
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some(var) = &source.env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| Error::config(format!("the password variable {var} is not set")));
    }
    Ok(std::env::var(standard).ok())
}
