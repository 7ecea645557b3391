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

/// Where a node's credentials come from: S3 keys, an Azure account and key, an SSH key file.
/// Only names of variables and files: the secrets themselves are read when the node is opened
/// and never kept in the job. Each kind of node takes only its own fields.
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
    /// Azure: variable holding the storage account name (default: `AZURE_STORAGE_ACCOUNT`).
    pub account_name_env: Option<String>,
    /// Azure: variable holding the account key (default: `AZURE_STORAGE_KEY`).
    pub account_key_env: Option<String>,
    /// Azure: file holding the account key.
    pub account_key_file: Option<PathBuf>,
    /// SFTP: the private key file `ssh` logs in with (never read here, only checked readable).
    pub key_file: Option<PathBuf>,
}

/// The standard variable of an Azure storage account name.
pub(crate) const AZURE_ACCOUNT_VAR: &str = "AZURE_STORAGE_ACCOUNT";
/// The standard variable of an Azure storage account key.
pub(crate) const AZURE_KEY_VAR: &str = "AZURE_STORAGE_KEY";

/// The access key id and secret key of the S3 node `node`.
pub(crate) fn s3_credentials(node: &str, c: &CredentialSource) -> Result<(String, String)> {
    let id = one(
        node,
        "S3 access key id",
        c.access_key_id_file.as_deref(),
        c.access_key_id_env.as_deref(),
        "AWS_ACCESS_KEY_ID",
        if c.ambient { Some("") } else { None },
    )?;
    let secret = one(
        node,
        "S3 secret key",
        c.secret_access_key_file.as_deref(),
        c.secret_access_key_env.as_deref(),
        "AWS_SECRET_ACCESS_KEY",
        if c.ambient { Some("") } else { None },
    )?;
    Ok((id, secret))
}

/// The account name and key of the Azure node `node`. The name comes from the variable named in
/// the entry, else from the endpoint (`from_endpoint`), else from `AZURE_STORAGE_ACCOUNT`.
pub(crate) fn azure_credentials(
    node: &str,
    c: &CredentialSource,
    from_endpoint: Option<&str>,
) -> Result<(String, String)> {
    let account = match (&c.account_name_env, from_endpoint) {
        (None, Some(a)) => a.to_owned(),
        _ => one(
            node,
            "Azure storage account name",
            None,
            c.account_name_env.as_deref(),
            AZURE_ACCOUNT_VAR,
            None,
        )?,
    };
    let key = one(
        node,
        "Azure account key",
        c.account_key_file.as_deref(),
        c.account_key_env.as_deref(),
        AZURE_KEY_VAR,
        None,
    )?;
    Ok((account, key))
}

/// The SSH key file of the SFTP node `node`, checked readable (`ssh` reads it, not us); `None`
/// when the entry names none (then `ssh`'s own identities are tried).
pub(crate) fn sftp_key_file(node: &str, c: &CredentialSource) -> Result<Option<PathBuf>> {
    let Some(f) = &c.key_file else {
        return Ok(None);
    };
    std::fs::File::open(f).map_err(|e| {
        Error::config(format!("cannot read the SSH key file {}: {e}", f.display()))
            .with_context("node", node)
    })?;
    Ok(Some(f.clone()))
}

/// One secret, from `file`, else the variable `env`, else the variable `standard`, else
/// `fallback` (an empty key lets the S3 client look for its own).
fn one(
    node: &str,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
    standard: &str,
    fallback: Option<&str>,
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
    match (std::env::var(standard), fallback) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(v)) => Ok(v.to_owned()),
        (Err(_), None) => Err(err(format!(
            "no {what}: set {standard}, or name a variable or file for it in the node's entry"
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
