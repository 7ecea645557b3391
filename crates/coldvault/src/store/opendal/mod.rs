//! `OpenDalTarget`: a node reached through Apache OpenDAL — an S3-compatible bucket (Garage,
//! MinIO, Ceph RGW, AWS S3), an Azure Blob container (Azure, Azurite) or a directory on an SFTP
//! server. How each is configured is in [`services`]; this file is what they share.
//!
//! Sync at the seam, async inside: every call runs on one shared, private Tokio runtime. Stock
//! layers, in this order: a timeout per attempt (and per I/O step), then OpenDAL's own retry of
//! temporary errors for single requests; our [`super::RetryingTarget`] outside re-puts whole files.
//! Large payloads go up streamed from the staged file in 8 MiB chunks (S3 multipart parts and
//! Azure blocks, two at a time), reads come down in 4 MiB ranges, the next one requested while
//! the last is consumed: memory is bounded per transfer, never by object size.
//!
//! An S3 node with a `storage_class` writes data files (`data/…`) in that class and everything
//! else (markers, manifests, receipts, locks, keys, records, and the file-tree indexes a backup
//! reads) in the bucket's default class, so planning, backing up, listing and verifying without
//! reading data never need a retrieval. Its objects'
//! classes and retrievals go through [`super::s3_archive`].
//!
//! A put is atomic on every service: an S3 multipart upload and an Azure block list become
//! visible only when committed; SFTP writes in place, so there a put writes `.NAME.tmp.RANDOM`
//! beside the key and renames it over the key (OpenSSH's `posix-rename`, atomic). `list` never
//! returns such a temporary, and a backup removes those older than [`TEMP_MAX_AGE`] (their
//! writer died: a live writer's temporary is written to all the time).

mod reader;
mod services;

use std::io::{self, Read};
use std::sync::OnceLock;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::Operator;

use super::s3_archive::{ArchiveApi, RetrievalAnswer};
use super::{ObjectClass, ObjectKey, Payload, Readiness, RetrievalTier, Target};
use crate::error::{Error, ErrorKind, Result, Status};
use reader::RangeReader;
pub use services::{AzblobOptions, KnownHosts, S3Options, SftpOptions};

const PART_BYTES: usize = 8 << 20;
/// A temporary older than this was left by a writer that died.
const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// The runtime shared by every OpenDAL node of the process.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("coldvault-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::target(format!("cannot start the I/O runtime: {e}")))
}

/// The kinds of service, for what differs between them here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Commits an upload atomically.
    S3,
    /// Commits an upload atomically (a block list).
    Azblob,
    /// Writes in place (so a put writes a temporary name and renames it), over connections
    /// that are `ssh` processes.
    Sftp,
}

/// A node backed by an OpenDAL operator.
#[derive(Debug)]
pub struct OpenDalTarget {
    name: String,
    /// Where, for messages: endpoint and bucket, container or path (never a secret).
    place: String,
    /// `None` only while the target is dropped.
    op: Option<Operator>,
    service: Service,
    /// S3: writes data files in the node's storage class; `None` when it has none.
    data_op: Option<Operator>,
    storage_class: Option<String>,
    /// S3: classes and retrievals, for a node with a storage class and its own keys.
    archive: Option<ArchiveApi>,
}

/// An operator over the service built by `builder`, with the stock layers.
fn layered(name: &str, place: &str, builder: impl opendal::Builder) -> Result<Operator> {
    Ok(Operator::new(builder)
        .map_err(|e| map_err(e, "cannot configure", place, name))?
        .layer(
            TimeoutLayer::new()
                .with_timeout(Duration::from_secs(60))
                .with_io_timeout(Duration::from_secs(30)),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(2)
                .with_min_delay(Duration::from_millis(100))
                .with_jitter(),
        ))
}

impl OpenDalTarget {
    /// The target over the service built by `builder`, with the stock layers.
    fn with_layers(
        name: &str,
        place: String,
        builder: impl opendal::Builder,
        service: Service,
    ) -> Result<Self> {
        let op = layered(name, &place, builder)?;
        Ok(OpenDalTarget {
            name: name.to_owned(),
            place,
            op: Some(op),
            service,
            data_op: None,
            storage_class: None,
            archive: None,
        })
    }

    fn op(&self) -> &Operator {
        self.op
            .as_ref()
            .expect("the operator is taken only by drop")
    }

    fn err(&self, e: opendal::Error, what: &str) -> Error {
        map_err(e, what, &self.place, &self.name)
    }

    fn archive(&self) -> Result<&ArchiveApi> {
        self.archive.as_ref().ok_or_else(|| {
            Error::config(format!(
                "node {} keeps no archive class: nothing to retrieve",
                self.name
            ))
        })
    }

    async fn upload(&self, key: &str, payload: Payload<'_>) -> opendal::Result<()> {
        let op = match &self.data_op {
            Some(data_op) if super::archived(key) => data_op,
            _ => self.op(),
        };
        match payload {
            Payload::Bytes(b) => op.write(key, b.to_vec()).await.map(|_| ()),
            Payload::File(_) | Payload::Paced(..) => {
                let mut file = payload.open().map_err(io_to_opendal)?;
                let mut w = op.writer_with(key).chunk(PART_BYTES).concurrent(2).await?;
                loop {
                    let mut buf = vec![0u8; PART_BYTES];
                    let n = read_full(&mut file, &mut buf).map_err(io_to_opendal)?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    w.write(buf).await?;
                }
                w.close().await.map(|_| ())
            }
        }
    }

    /// Uploads under a temporary name beside `key`, then renames it over `key`.
    async fn upload_and_rename(&self, key: &str, payload: Payload<'_>) -> opendal::Result<()> {
        let tmp = temp_key(key);
        let done = match self.upload(&tmp, payload).await {
            Ok(()) => self.op().rename(&tmp, key).await,
            Err(e) => Err(e),
        };
        if done.is_err() {
            let _ = self.op().delete(&tmp).await;
        }
        done
    }
}

/// `dir/.NAME.tmp.RANDOM` for `dir/NAME`: unique across processes and machines.
fn temp_key(key: &str) -> String {
    let (dir, file) = key.rsplit_once('/').unwrap_or(("", key));
    let tmp = format!(".{file}.tmp.{:016x}", fastrand::u64(..));
    if dir.is_empty() {
        tmp
    } else {
        format!("{dir}/{tmp}")
    }
}

/// Whether `key` names a temporary of [`temp_key`]'s form (no stored key starts with a dot).
fn is_temp(key: &str) -> bool {
    let file = key.rsplit('/').next().unwrap_or(key);
    file.starts_with('.') && file.contains(".tmp.")
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn io_to_opendal(e: io::Error) -> opendal::Error {
    opendal::Error::new(
        opendal::ErrorKind::Unexpected,
        "cannot read the staged file",
    )
    .set_source(e)
}

/// Maps an OpenDAL error to ours, keeping not-found and temporary.
fn map_err(e: opendal::Error, what: &str, place: &str, node: &str) -> Error {
    let kind = match e.kind() {
        opendal::ErrorKind::NotFound => ErrorKind::NotFound,
        opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
        _ => ErrorKind::Target,
    };
    let status = if e.is_temporary() {
        Status::Temporary
    } else {
        Status::Permanent
    };
    let hint = match e.kind() {
        _ if format!("{e:?}").contains("InvalidObjectState") => {
            " (the object is in an archive storage class, perhaps moved there by a lifecycle \
             rule: set storage_class on the node so that restore retrieves it)"
        }
        opendal::ErrorKind::PermissionDenied => " (access denied: check the node's credentials)",
        _ => ssh_hint(&e),
    };
    Error::new(kind, format!("{what} on {place}{hint}"))
        .with_status(status)
        .with_context("node", node)
        .with_source(e)
}

/// What `ssh` said when it could not log in, in a user's words.
fn ssh_hint(e: &opendal::Error) -> &'static str {
    let text = format!("{e:?}");
    if text.contains("Host key verification failed") {
        " (the server's host key is not in known_hosts, or changed: add it with ssh-keyscan, \
         or see known_hosts in the node's URL)"
    } else if text.contains("Permission denied") {
        " (the server refused the SSH key: check key_file and the server's authorized_keys)"
    } else {
        ""
    }
}

impl Target for OpenDalTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        let rt = runtime()?;
        match self.service {
            Service::S3 | Service::Azblob => rt.block_on(self.upload(key.as_str(), payload)),
            Service::Sftp => rt.block_on(self.upload_and_rename(key.as_str(), payload)),
        }
        .map_err(|e| self.err(e, &format!("cannot store {key}")))
    }

    /// Checked first, then written with `If-None-Match: *` (S3, Azure) or `O_EXCL` (SFTP),
    /// which makes it atomic on stores that honour it (AWS S3, MinIO, R2, Azure, Azurite,
    /// OpenSSH). Garage 2.5 ignores the header (tried here: a second conditional put replaced
    /// the object), so there two writers racing past the check both write; the repository
    /// marker is therefore written under the backup lock, whose protocol needs only
    /// read-after-write. On SFTP the new file is written in place, so a reader racing the
    /// writer may find it short; the marker checks itself.
    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        if self.stat(key)?.is_some() {
            return Ok(false);
        }
        let written = runtime()?.block_on(async {
            self.op()
                .write_with(key.as_str(), bytes.to_vec())
                .if_not_exists(true)
                .await
        });
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.err(e, &format!("cannot store {key}"))),
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        let missing = || {
            Error::not_found(format!("no object {key} on {}", self.place))
                .with_context("node", &self.name)
        };
        // On an archive node one HEAD says both whether it can be read and how long it is.
        let size = if self.archive.is_some() {
            let class = self.object_class(key)?.ok_or_else(missing)?;
            if class.readiness != Readiness::Readable {
                return Err(Error::target(format!(
                    "{key} is in the archive class {} on {} and {}: `coldvault restore` \
                     requests its retrieval and waits for it",
                    class.class.as_deref().unwrap_or("?"),
                    self.place,
                    match class.readiness {
                        Readiness::Retrieving => "its retrieval is not done yet",
                        _ => "has not been retrieved",
                    }
                ))
                .with_context("node", &self.name));
            }
            class.size
        } else {
            self.stat(key)?.ok_or_else(missing)?
        };
        Ok(Box::new(RangeReader::new(
            self.op().clone(),
            key.as_str().to_owned(),
            size,
        )))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        match runtime()?.block_on(self.op().stat(key.as_str())) {
            Ok(m) if m.mode().is_dir() => Ok(None),
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e, &format!("cannot stat {key}"))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        Ok(self
            .list_entries(prefix)?
            .into_iter()
            .map(|e| e.path().trim_start_matches('/').to_owned())
            .filter(|k| !is_temp(k))
            .map(ObjectKey::new)
            .collect())
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        match runtime()?.block_on(self.op().delete(key.as_str())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(e, &format!("cannot delete {key}"))),
        }
    }

    fn storage_class(&self) -> Option<&str> {
        self.storage_class.as_deref()
    }

    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        match &self.archive {
            Some(api) => runtime()?
                .block_on(api.head(key.as_str()))
                .map_err(|e| e.with_context("node", &self.name)),
            None => Ok(self.stat(key)?.map(ObjectClass::readable)),
        }
    }

    fn request_retrieval(
        &self,
        key: &ObjectKey,
        tier: RetrievalTier,
        days: u32,
    ) -> Result<RetrievalAnswer> {
        let api = self.archive()?;
        runtime()?
            .block_on(api.restore(key.as_str(), tier, days))
            .map_err(|e| e.with_context("node", &self.name))
    }

    fn remove_temporaries(&self) -> Result<usize> {
        if self.service != Service::Sftp {
            return Ok(0);
        }
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for e in self.list_entries("")? {
            let old = e
                .metadata()
                .last_modified()
                .and_then(|t| now.duration_since(t.into()).ok())
                .is_some_and(|age| age > TEMP_MAX_AGE);
            if is_temp(e.path()) && old {
                self.delete(&ObjectKey::new(e.path().trim_start_matches('/')))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl OpenDalTarget {
    /// Every file under `prefix`, recursively, with what the listing says of it.
    fn list_entries(&self, prefix: &str) -> Result<Vec<opendal::Entry>> {
        let entries = runtime()?
            .block_on(async { self.op().list_with(prefix).recursive(true).await })
            .map_err(|e| self.err(e, &format!("cannot list {prefix}")))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .collect())
    }
}

impl Drop for OpenDalTarget {
    /// An SFTP node's connections are `ssh` master processes that OpenDAL starts with
    /// `ControlPersist=yes`: they exit when told to by tasks on the runtime, which run once the
    /// operator is gone. A process ending right after this drop would leave them running for
    /// good, so the operator is dropped on the runtime and its tasks get up to 3 s to finish.
    fn drop(&mut self) {
        let Some(op) = self.op.take() else {
            return;
        };
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        let (Service::Sftp, false, Ok(rt)) = (self.service, in_runtime, runtime()) else {
            return;
        };
        rt.block_on(async {
            drop(op);
            let metrics = tokio::runtime::Handle::current().metrics();
            for _ in 0..300 {
                if metrics.num_alive_tasks() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_name_sits_beside_its_key_and_is_known_as_one() {
        let t = temp_key("data/ab/abc.tar.zst");
        assert!(t.starts_with("data/ab/.abc.tar.zst.tmp."), "{t}");
        assert!(is_temp(&t));
        assert!(is_temp(&temp_key("config.json")));
        assert_ne!(temp_key("config.json"), temp_key("config.json"));
        for key in ["data/ab/abc.tar.zst", "config.json", "snapshots/x.tmp.json"] {
            assert!(!is_temp(key), "{key}");
        }
    }
}
