//! Kinds of storage node, in one place: how a node URL reads (`file:`, `s3://`), how a node of
//! each kind is opened as a [`Target`], which environment variables its credentials come from
//! (what a Spark worker must be given), and whether its root can be created. Adding a kind of
//! node is a variant of [`NodeUrl`] and its arms here, plus its `Target` in a file of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{FsTarget, OpenDalTarget, S3Options, SharedTarget};
use crate::error::{Error, Result};
use crate::secrets::CredentialSource;

/// Where a node is. One variant per kind of storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
pub enum NodeUrl {
    /// A local directory (`file:///abs/path`, or `file:rel/path` from the job file's directory).
    File {
        /// The node's root directory.
        path: PathBuf,
    },
    /// An S3-compatible bucket: `s3://bucket/prefix?endpoint=http://host:port&region=…`.
    S3 {
        /// The bucket.
        bucket: String,
        /// A key prefix inside the bucket (may be empty).
        prefix: String,
        /// The endpoint; AWS's when absent.
        endpoint: Option<String>,
        /// The signing region (Garage checks it: "garage" by default there).
        region: String,
        /// Virtual-hosted-style addressing instead of path style.
        virtual_host: bool,
    },
}

impl NodeUrl {
    /// Parses a node URL. Relative `file:` paths are taken from `base`.
    pub fn parse(url: &str, base: &Path) -> Result<NodeUrl> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(Error::config(format!(
                "node URL {url:?} has no scheme (expected file:///path)"
            )));
        };
        match scheme {
            "file" => {
                let path = if let Some(abs) = rest.strip_prefix("//") {
                    if !abs.starts_with('/') {
                        return Err(Error::config(format!(
                            "node URL {url:?}: a file URL with a host is not supported; use file:///path"
                        )));
                    }
                    PathBuf::from(abs)
                } else {
                    base.join(rest)
                };
                if path.as_os_str().is_empty() || rest.is_empty() {
                    return Err(Error::config(format!("node URL {url:?} has no path")));
                }
                Ok(NodeUrl::File { path })
            }
            "s3" => parse_s3(url, rest),
            other => Err(Error::config(format!(
                "node URL {url:?} has an unknown scheme {other:?} (supported: file, s3)"
            ))),
        }
    }
}

fn parse_s3(url: &str, rest: &str) -> Result<NodeUrl> {
    let bad = |why: &str| Error::config(format!("node URL {url:?}: {why}"));
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| bad("expected s3://bucket/prefix?endpoint=…&region=…"))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    let mut endpoint = None;
    let mut region = None;
    let mut virtual_host = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "endpoint" => {
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(bad("endpoint must start with http:// or https://"));
                }
                endpoint = Some(v.to_owned());
            }
            "region" => region = Some(v.to_owned()),
            "virtual_host" => virtual_host = v == "true",
            other => {
                return Err(bad(&format!(
                    "unknown parameter {other:?} (endpoint, region, virtual_host)"
                )))
            }
        }
    }
    Ok(NodeUrl::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
        endpoint,
        region: region.unwrap_or_else(|| "us-east-1".to_owned()),
        virtual_host,
    })
}

impl NodeUrl {
    /// Whether nodes of this kind take credentials.
    pub fn takes_credentials(&self) -> bool {
        match self {
            NodeUrl::File { .. } => false,
            NodeUrl::S3 { .. } => true,
        }
    }
}

/// The node `name` at `url`, rooted at the job's `directory` on it.
pub(crate) fn open(
    name: &str,
    url: &NodeUrl,
    credentials: &CredentialSource,
    storage_class: Option<&str>,
    directory: &str,
) -> Result<SharedTarget> {
    Ok(match url {
        NodeUrl::File { path } => Arc::new(FsTarget::new(name, path, directory)),
        NodeUrl::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            virtual_host,
        } => {
            let (access_key_id, secret_access_key) =
                crate::secrets::s3_credentials(name, credentials)?;
            let root = [prefix.as_str(), directory]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            Arc::new(OpenDalTarget::s3(
                name,
                S3Options {
                    bucket: bucket.clone(),
                    root,
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    virtual_host: *virtual_host,
                    access_key_id,
                    secret_access_key,
                    ambient: credentials.ambient,
                    storage_class: storage_class.map(str::to_owned),
                },
            )?)
        }
    })
}

/// Creates the node's root directory where its kind allows it; `Ok(false)` for kinds whose root
/// is made by an administrator (a bucket is not created by a backup tool).
pub(crate) fn create_root(name: &str, url: &NodeUrl, directory: &str) -> Result<bool> {
    match url {
        NodeUrl::File { path } => FsTarget::new(name, path, directory)
            .create_root()
            .map(|_| true),
        NodeUrl::S3 { .. } => Ok(false),
    }
}

/// The environment variables a node's credentials may be read from, by name.
pub(crate) fn credential_vars(url: &NodeUrl, credentials: &CredentialSource) -> Vec<String> {
    match url {
        NodeUrl::File { .. } => Vec::new(),
        NodeUrl::S3 { .. } => {
            let mut v = vec![
                "AWS_ACCESS_KEY_ID".to_owned(),
                "AWS_SECRET_ACCESS_KEY".to_owned(),
            ];
            v.extend(credentials.access_key_id_env.clone());
            v.extend(credentials.secret_access_key_env.clone());
            v
        }
    }
}
