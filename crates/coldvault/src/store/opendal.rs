//! `OpenDalTarget`: a node that is an S3-compatible bucket (Garage, MinIO, Ceph RGW, AWS S3),
//! through Apache OpenDAL.
//!
//! Sync at the seam, async inside: every call runs on one shared, private Tokio runtime. Stock
//! layers, in this order: a timeout per attempt (and per I/O step), then OpenDAL's own retry of
//! temporary errors for single requests; our [`super::RetryingTarget`] outside re-puts whole files.
//! Large payloads go up as multipart uploads streamed from the staged file (8 MiB parts, two at a
//! time), reads come down in 4 MiB ranges, the next one requested while the last is consumed:
//! memory is bounded per transfer (two ranges), never by object size.
//! An upload only becomes visible when it completes, so a put is atomic.
//!
//! A node with a `storage_class` writes data files (`data/…`) in that class and everything else
//! (markers, manifests, receipts, locks, keys, records) in the bucket's default class, so that
//! planning, listing and verifying without reading data never need a retrieval. Its objects'
//! classes and retrievals go through [`super::s3_archive`].

use std::io::{self, Read};
use std::sync::OnceLock;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{services, Operator};

use super::s3_archive::{ArchiveApi, RetrievalAnswer};
use super::{ObjectClass, ObjectKey, Payload, RetrievalTier, Target, DATA_PREFIX};
use crate::error::{Error, ErrorKind, Result, Status};

const PART_BYTES: usize = 8 << 20;
/// The size of one ranged read.
const RANGE_BYTES: u64 = 4 << 20;

/// The runtime shared by every S3 node of the process.
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

/// A node backed by an OpenDAL operator.
#[derive(Debug)]
pub struct OpenDalTarget {
    name: String,
    /// Where, for messages: endpoint and bucket (never a secret).
    place: String,
    op: Operator,
    /// Writes data files in the node's storage class; `None` when it has none.
    data_op: Option<Operator>,
    storage_class: Option<String>,
    /// Classes and retrievals, for a node with a storage class.
    archive: Option<ArchiveApi>,
}

impl OpenDalTarget {
    /// Opens an S3 node called `name`.
    pub fn s3(name: &str, o: S3Options) -> Result<Self> {
        let place = format!(
            "{}/{}",
            o.endpoint.as_deref().unwrap_or("https://s3.amazonaws.com"),
            o.bucket
        );
        let op = s3_operator(&o, None, &place, name)?;
        let (data_op, archive) = match &o.storage_class {
            Some(class) => (
                Some(s3_operator(&o, Some(class), &place, name)?),
                Some(ArchiveApi::new(&o, &o.root)?),
            ),
            None => (None, None),
        };
        Ok(OpenDalTarget {
            name: name.to_owned(),
            place,
            op,
            data_op,
            storage_class: o.storage_class,
            archive,
        })
    }

    fn err(&self, e: opendal::Error, what: &str) -> Error {
        map_err(e, what, &self.place, &self.name)
    }

    fn archive(&self) -> Result<&ArchiveApi> {
        self.archive.as_ref().ok_or_else(|| {
            Error::config(format!(
                "node {} has no storage_class: nothing to retrieve",
                self.name
            ))
        })
    }

    async fn upload(&self, key: &str, payload: Payload<'_>) -> opendal::Result<()> {
        let op = match &self.data_op {
            Some(data_op) if key.starts_with(DATA_PREFIX) => data_op,
            _ => &self.op,
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
}

/// An S3 operator with its layers; `class` is the storage class it writes in.
fn s3_operator(o: &S3Options, class: Option<&str>, place: &str, name: &str) -> Result<Operator> {
    let mut b = services::S3::default()
        .bucket(&o.bucket)
        .root(&format!("/{}", o.root.trim_matches('/')))
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
    let op = Operator::new(b)
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
        );
    Ok(op)
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
        opendal::ErrorKind::PermissionDenied => " (access denied: check the node's credentials)",
        _ => "",
    };
    Error::new(kind, format!("{what} on {place}{hint}"))
        .with_status(status)
        .with_context("node", node)
        .with_source(e)
}

impl Target for OpenDalTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        runtime()?
            .block_on(self.upload(key.as_str(), payload))
            .map_err(|e| self.err(e, &format!("cannot store {key}")))
    }

    /// Checked first, then written with `If-None-Match: *`, which makes it atomic on stores that
    /// honour the header (AWS S3, MinIO, R2). Garage 2.5 ignores it (tried here: a second
    /// conditional put replaced the object), so there two writers racing past the check both
    /// write; the repository marker is therefore written under the backup lock, whose protocol
    /// needs only read-after-write.
    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        if self.stat(key)?.is_some() {
            return Ok(false);
        }
        let written = runtime()?.block_on(async {
            self.op
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
        if self.archive.is_some() {
            let class = self.object_class(key)?.ok_or_else(missing)?;
            if class.readiness != super::Readiness::Readable {
                return Err(Error::target(format!(
                    "{key} is in the archive class {} on {} and {}: `coldvault restore` \
                     requests its retrieval and waits for it",
                    class.class.as_deref().unwrap_or("?"),
                    self.place,
                    match class.readiness {
                        super::Readiness::Retrieving => "its retrieval is not done yet",
                        _ => "has not been retrieved",
                    }
                ))
                .with_context("node", &self.name));
            }
        }
        let size = self.stat(key)?.ok_or_else(missing)?;
        Ok(Box::new(RangeReader {
            op: self.op.clone(),
            key: key.as_str().to_owned(),
            size,
            pos: 0,
            next: None,
            buf: opendal::Buffer::new(),
        }))
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        match runtime()?.block_on(self.op.stat(key.as_str())) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e, &format!("cannot stat {key}"))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        let entries = runtime()?
            .block_on(async { self.op.list_with(prefix).recursive(true).await })
            .map_err(|e| self.err(e, &format!("cannot list {prefix}")))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| ObjectKey::new(e.path().trim_start_matches('/').to_owned()))
            .collect())
    }

    fn storage_class(&self) -> Option<&str> {
        self.storage_class.as_deref()
    }

    fn object_class(&self, key: &ObjectKey) -> Result<Option<ObjectClass>> {
        match &self.archive {
            Some(api) => runtime()?
                .block_on(api.head(key.as_str()))
                .map_err(|e| e.with_context("node", &self.name)),
            None => Ok(self.stat(key)?.map(|_| ObjectClass::readable())),
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

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        match runtime()?.block_on(self.op.delete(key.as_str())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(e, &format!("cannot delete {key}"))),
        }
    }
}

/// Reads an object in ranges of `RANGE_BYTES`, the next range requested before this one is read.
struct RangeReader {
    op: Operator,
    key: String,
    size: u64,
    /// Where the range after `buf` (the one in flight, if any) starts.
    pos: u64,
    /// The request for the range at `pos`, sent before `buf` is consumed.
    next: Option<Pending>,
    /// What is left of the range read last (as it came, not copied).
    buf: opendal::Buffer,
}

/// A ranged read sent to the runtime.
type Pending = tokio::task::JoinHandle<opendal::Result<opendal::Buffer>>;

impl RangeReader {
    /// Sends the request for the range at `pos`; none when the object ends there.
    fn request(&self, rt: &tokio::runtime::Runtime) -> Option<Pending> {
        if self.pos >= self.size {
            return None;
        }
        let range = self.pos..(self.pos + RANGE_BYTES).min(self.size);
        let (op, key) = (self.op.clone(), self.key.clone());
        Some(rt.spawn(async move { op.read_with(&key).range(range).await }))
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            let rt = runtime().map_err(io::Error::other)?;
            let Some(pending) = self.next.take().or_else(|| self.request(rt)) else {
                return Ok(0);
            };
            let data = rt
                .block_on(pending)
                .map_err(io::Error::other)?
                .map_err(|e| {
                    let kind = if e.is_temporary() {
                        io::ErrorKind::TimedOut
                    } else {
                        io::ErrorKind::Other
                    };
                    io::Error::new(kind, e)
                })?;
            self.buf = data;
            if self.buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended early at byte {}", self.key, self.pos),
                ));
            }
            self.pos += self.buf.len() as u64;
            self.next = self.request(rt);
        }
        // Across the chunks the response came in, however they are cut.
        let n = out.len().min(self.buf.len());
        bytes::Buf::copy_to_slice(&mut self.buf, &mut out[..n]);
        Ok(n)
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        if let Some(pending) = self.next.take() {
            pending.abort();
        }
    }
}
