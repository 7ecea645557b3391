//! The OpenDAL services a node can be, each built from its options into an [`OpenDalTarget`]:
//! S3 (Garage, MinIO, AWS), Azure Blob (Azure, Azurite) and SFTP (any OpenSSH server).
//!
//! Secrets arrive here already resolved (by `crate::secrets`) and go straight into the service's
//! builder; no `Debug` of an options struct shows them, and the place named in messages is the
//! endpoint and container or path, never a key.

use std::path::PathBuf;

use opendal::services;

use super::{OpenDalTarget, Service};
use crate::error::{Error, Result};
use crate::store::s3_archive::ArchiveApi;
use crate::store::ARCHIVE_CLASSES;

/// What is needed to open an S3 node. `Debug` never shows the secret.
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside the bucket (the job's directory is appended to it).
    pub root: String,
    /// The endpoint, AWS's when `None`.
    pub endpoint: Option<String>,
    /// The signing region.
    pub region: String,
    /// Virtual-hosted-style addressing.
    pub virtual_host: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
    /// Let the client also read ~/.aws and the instance metadata service.
    pub ambient: bool,
    /// The storage class data files are written in; the bucket's default when `None`.
    pub storage_class: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("storage_class", &self.storage_class)
            .finish_non_exhaustive()
    }
}

/// What is needed to open an Azure Blob node. `Debug` never shows the key.
pub struct AzblobOptions {
    /// The container.
    pub container: String,
    /// The prefix inside the container (the job's directory is appended to it).
    pub root: String,
    /// The blob endpoint: `https://ACCOUNT.blob.core.windows.net`, or Azurite's
    /// `http://127.0.0.1:10000/ACCOUNT`.
    pub endpoint: String,
    /// The storage account.
    pub account_name: String,
    /// The account's shared key (base64).
    pub account_key: String,
}

impl std::fmt::Debug for AzblobOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzblobOptions")
            .field("container", &self.container)
            .field("root", &self.root)
            .field("endpoint", &self.endpoint)
            .field("account_name", &self.account_name)
            .finish_non_exhaustive()
    }
}

/// How the SSH client checks the server's host key against the known_hosts files of the user
/// running coldvault (`~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`), as `ssh` itself does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnownHosts {
    /// The host key must be there already (`StrictHostKeyChecking=yes`). The default.
    #[default]
    Strict,
    /// A host not there yet is trusted on first use and recorded; a changed key is refused
    /// (`StrictHostKeyChecking=accept-new`).
    Add,
    /// Any host key is accepted (`StrictHostKeyChecking=no`): only for throwaway test servers.
    Accept,
}

impl KnownHosts {
    /// The policy named `s` (`strict`, `add`, `accept`).
    pub fn parse(s: &str) -> Option<KnownHosts> {
        match s {
            "strict" => Some(KnownHosts::Strict),
            "add" => Some(KnownHosts::Add),
            "accept" => Some(KnownHosts::Accept),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            KnownHosts::Strict => "strict",
            KnownHosts::Add => "add",
            KnownHosts::Accept => "accept",
        }
    }
}

/// What is needed to open an SFTP node. The private key stays in its file: `ssh` reads it.
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// The server's host name or address.
    pub host: String,
    /// Its SSH port.
    pub port: u16,
    /// The login name; `ssh`'s default (the local user, or `~/.ssh/config`) when `None`.
    pub user: Option<String>,
    /// The absolute directory on the server (the job's directory is appended to it).
    pub root: String,
    /// The private key file; `ssh`'s own identities (agent, `~/.ssh/id_*`) when `None`.
    pub key_file: Option<PathBuf>,
    /// How the server's host key is checked.
    pub known_hosts: KnownHosts,
}

fn absolute_root(root: &str) -> String {
    format!("/{}", root.trim_matches('/'))
}

impl OpenDalTarget {
    /// Opens an S3 node called `name`. With a storage class, data files are written through a
    /// second operator in that class, and classes and retrievals go through [`ArchiveApi`].
    pub fn s3(name: &str, o: S3Options) -> Result<Self> {
        let place = format!(
            "{}/{}",
            o.endpoint.as_deref().unwrap_or("https://s3.amazonaws.com"),
            o.bucket
        );
        let mut t = Self::with_layers(name, place.clone(), s3_builder(&o, None), Service::S3)?;
        if let Some(class) = &o.storage_class {
            let archive = ARCHIVE_CLASSES.contains(&class.as_str());
            let keys = !o.access_key_id.is_empty() && !o.secret_access_key.is_empty();
            if archive && !keys {
                return Err(Error::config(format!(
                    "storage_class = {class:?}: its retrieval requests are signed with the node's \
                     own keys, so it needs them in variables or files (not ambient credentials)"
                ))
                .with_context("node", name));
            }
            t.data_op = Some(super::layered(name, &place, s3_builder(&o, Some(class)))?);
            t.storage_class = Some(class.clone());
            // Without keys (a class that never needs a retrieval) classes are not read.
            if keys {
                t.archive = Some(ArchiveApi::new(&o, &o.root)?);
            }
        }
        Ok(t)
    }
}

/// The S3 service for `o`, writing in `class` when given.
fn s3_builder(o: &S3Options, class: Option<&str>) -> services::S3 {
    let mut b = services::S3::default()
        .bucket(&o.bucket)
        .root(&absolute_root(&o.root))
        .region(&o.region)
        .access_key_id(&o.access_key_id)
        .secret_access_key(&o.secret_access_key);
    if let Some(e) = &o.endpoint {
        b = b.endpoint(e);
    }
    if o.virtual_host {
        b = b.enable_virtual_host_style();
    }
    if !o.ambient {
        b = b.disable_config_load().disable_ec2_metadata();
    }
    if let Some(class) = class {
        b = b.default_storage_class(class);
    }
    b
}

impl OpenDalTarget {
    /// Opens an Azure Blob node called `name`. Uploads are block blobs: one Put Blob, or blocks
    /// committed by one Put Block List, so a blob appears whole or not at all.
    pub fn azblob(name: &str, o: AzblobOptions) -> Result<Self> {
        let place = format!("{}/{}", o.endpoint.trim_end_matches('/'), o.container);
        // OpenDAL's own message for a bad key quotes a character of it: say it here instead.
        if !is_base64(&o.account_key) {
            return Err(Error::config(format!(
                "the account key for {place} is not base64 (an Azure storage account key is)"
            ))
            .with_context("node", name));
        }
        let b = services::Azblob::default()
            .container(&o.container)
            .root(&absolute_root(&o.root))
            .endpoint(&o.endpoint)
            .account_name(&o.account_name)
            .account_key(&o.account_key);
        Self::with_layers(name, place, b, Service::Azblob)
    }

    /// Opens an SFTP node called `name`. A write there lands in place, so a put writes a
    /// temporary file and renames it (`posix-rename`, atomic on OpenSSH's server).
    pub fn sftp(name: &str, o: SftpOptions) -> Result<Self> {
        let user = o
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let root = absolute_root(&o.root);
        let mut b = services::Sftp::default()
            .endpoint(&format!("ssh://{user}{}:{}", o.host, o.port))
            .root(&root)
            .known_hosts_strategy(o.known_hosts.as_str());
        if let Some(k) = &o.key_file {
            b = b.key(&k.to_string_lossy());
        }
        let place = format!("sftp://{user}{}:{}{root}", o.host, o.port);
        Self::with_layers(name, place, b, Service::Sftp)
    }
}

/// Standard base64 with padding, as Azure gives account keys.
fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.trim_end_matches('=').len() + 2 >= s.len()
        && s.trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_key_is_checked_as_base64_without_quoting_it() {
        assert!(is_base64("Zm9vYmFy"));
        assert!(is_base64("Zm9vYg=="));
        assert!(!is_base64("Zm9vYg="));
        assert!(!is_base64("not base64!"));
        assert!(!is_base64(""));
        let e = OpenDalTarget::azblob(
            "az",
            AzblobOptions {
                container: "c".into(),
                root: "x".into(),
                endpoint: "http://127.0.0.1:1/acct".into(),
                account_name: "acct".into(),
                account_key: "s3cr3t-value".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("node az") && e.contains("not base64"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn known_hosts_policies_read_as_their_names() {
        for k in [KnownHosts::Strict, KnownHosts::Add, KnownHosts::Accept] {
            assert_eq!(KnownHosts::parse(k.as_str()), Some(k));
        }
        assert_eq!(KnownHosts::parse("yes"), None);
        assert_eq!(KnownHosts::default(), KnownHosts::Strict);
    }
}
