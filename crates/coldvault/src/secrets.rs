//! Secrets are resolved here and nowhere else: from a file or an environment variable named in the
//! job, or from the standard variables. They go straight into the node's client and never reach a
//! job, plan, manifest, log line or error message (errors name the variable or file, not the value).

use crate::error::{Error, Result};
use crate::job::NodeSpec;

/// The access key id and secret key of an S3 node.
pub(crate) fn s3_credentials(node: &NodeSpec) -> Result<(String, String)> {
    let c = &node.credentials;
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
    node: &NodeSpec,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
    standard: &str,
    ambient: bool,
) -> Result<String> {
    let err = |m: String| Error::config(m).with_context("node", &node.name);
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
pub(crate) fn db_password(
    source: &crate::job::PasswordSource,
    standard: &str,
) -> Result<Option<String>> {
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
