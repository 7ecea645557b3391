//! Kinds of storage node, in one place: how a node URL reads (`file:`, `s3://`, `azblob://`,
//! `sftp://`; the schemes with a query in [`parse`]), how a node of each kind is opened as a
//! [`Target`], which credential fields of its entry it takes and which environment variables
//! they come from (what a Spark worker must be given), and whether its root can be created.
//! Adding a kind of node is a variant of [`NodeUrl`] and its arms here, plus its service in
//! `opendal/services.rs` (or a `Target` in a file of its own).

pub(crate) mod parse;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    AzblobOptions, FsTarget, KnownHosts, OpenDalTarget, S3Options, SftpOptions, SharedTarget,
};
use crate::error::{Error, Result};
use crate::secrets::{self, CredentialSource};

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
    /// An Azure Blob container: `azblob://container/prefix?endpoint=https://ACCOUNT.blob.core.windows.net`
    /// (Azurite: `endpoint=http://127.0.0.1:10000/ACCOUNT`).
    Azblob {
        /// The container.
        container: String,
        /// A prefix inside the container (may be empty).
        prefix: String,
        /// The blob endpoint; `https://ACCOUNT.blob.core.windows.net` when absent.
        endpoint: Option<String>,
    },
    /// A directory on an SFTP server: `sftp://user@host:port/absolute/path?known_hosts=…`.
    Sftp {
        /// The login name; `ssh`'s default when absent.
        user: Option<String>,
        /// The server.
        host: String,
        /// Its SSH port (22 by default).
        port: u16,
        /// The absolute directory on the server.
        path: String,
        /// How the server's host key is checked (strict by default).
        known_hosts: KnownHosts,
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
            "s3" => parse::s3(url, rest),
            "azblob" => parse::azblob(url, rest),
            "sftp" => parse::sftp(url, rest),
            other => Err(Error::config(format!(
                "node URL {url:?} has an unknown scheme {other:?} (supported: file, s3, azblob, sftp)"
            ))),
        }
    }
}

impl NodeUrl {
    /// The URL's scheme.
    pub fn scheme(&self) -> &'static str {
        match self {
            NodeUrl::File { .. } => "file",
            NodeUrl::S3 { .. } => "s3",
            NodeUrl::Azblob { .. } => "azblob",
            NodeUrl::Sftp { .. } => "sftp",
        }
    }

    /// The credential fields set in `c` that a node of this kind does not take, by their names
    /// in the job file, each with the scheme that takes it.
    pub(crate) fn foreign_credentials(
        &self,
        c: &CredentialSource,
    ) -> Vec<(&'static str, &'static str)> {
        let kind = self.scheme();
        [
            ("access_key_id_env", c.access_key_id_env.is_some(), "s3"),
            (
                "secret_access_key_env",
                c.secret_access_key_env.is_some(),
                "s3",
            ),
            ("access_key_id_file", c.access_key_id_file.is_some(), "s3"),
            (
                "secret_access_key_file",
                c.secret_access_key_file.is_some(),
                "s3",
            ),
            ("ambient_credentials", c.ambient, "s3"),
            ("account_name_env", c.account_name_env.is_some(), "azblob"),
            ("account_key_env", c.account_key_env.is_some(), "azblob"),
            ("account_key_file", c.account_key_file.is_some(), "azblob"),
            ("key_file", c.key_file.is_some(), "sftp"),
        ]
        .into_iter()
        .filter(|(_, set, owner)| *set && *owner != kind)
        .map(|(field, _, owner)| (field, owner))
        .collect()
    }
}

/// `prefix/directory`, either part possibly empty.
fn join(prefix: &str, directory: &str) -> String {
    [prefix.trim_matches('/'), directory]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
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
            let (access_key_id, secret_access_key) = secrets::s3_credentials(name, credentials)?;
            Arc::new(OpenDalTarget::s3(
                name,
                S3Options {
                    bucket: bucket.clone(),
                    root: join(prefix, directory),
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
        NodeUrl::Azblob {
            container,
            prefix,
            endpoint,
        } => {
            let named = endpoint.as_deref().and_then(parse::azure_account);
            let (account_name, account_key) =
                secrets::azure_credentials(name, credentials, named.as_deref())?;
            let endpoint = endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account_name}.blob.core.windows.net"));
            Arc::new(OpenDalTarget::azblob(
                name,
                AzblobOptions {
                    container: container.clone(),
                    root: join(prefix, directory),
                    endpoint,
                    account_name,
                    account_key,
                },
            )?)
        }
        NodeUrl::Sftp {
            user,
            host,
            port,
            path,
            known_hosts,
        } => Arc::new(OpenDalTarget::sftp(
            name,
            SftpOptions {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                root: format!("/{}", join(path, directory)),
                key_file: secrets::sftp_key_file(name, credentials)?,
                known_hosts: *known_hosts,
            },
        )?),
    })
}

/// Creates the node's root directory where its kind allows it; `Ok(false)` for kinds whose root
/// is made by an administrator (a bucket or container is not created by a backup tool) or by
/// the service itself (OpenDAL makes an SFTP node's directory when it connects).
pub(crate) fn create_root(name: &str, url: &NodeUrl, directory: &str) -> Result<bool> {
    match url {
        NodeUrl::File { path } => FsTarget::new(name, path, directory)
            .create_root()
            .map(|_| true),
        NodeUrl::S3 { .. } | NodeUrl::Azblob { .. } | NodeUrl::Sftp { .. } => Ok(false),
    }
}

/// The environment variables a node's credentials may be read from, by name.
pub(crate) fn credential_vars(url: &NodeUrl, credentials: &CredentialSource) -> Vec<String> {
    match url {
        // An SFTP key is a file, which a worker must hold itself.
        NodeUrl::File { .. } | NodeUrl::Sftp { .. } => Vec::new(),
        NodeUrl::Azblob { .. } => {
            let mut v = vec![
                secrets::AZURE_ACCOUNT_VAR.to_owned(),
                secrets::AZURE_KEY_VAR.to_owned(),
            ];
            v.extend(credentials.account_name_env.clone());
            v.extend(credentials.account_key_env.clone());
            v
        }
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
