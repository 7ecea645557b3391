//! Reading a data file back: from the first healthy replica, its BLAKE3 checked before a byte of
//! it is decoded. On a local node it is hashed in place; from a remote node, a data file of up to
//! [`IN_MEMORY`] bytes is read into memory and one larger through a checked copy in staging, so
//! memory stays bounded by the number of data files read at once. A missing or corrupt replica
//! is reported and the next one is tried; a corrupt one (wrong size or checksum) is also
//! recorded as damaged on its node, so that the next backup heals it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::stage::{check_digest, hash_stream, StagedFile, Staging};
use crate::store::{DamageRecord, FoundBy, Receipt, Target};

/// The buffer after the decoder: small reads are served from it, larger ones bypass it.
const DECODED_BUFFER: usize = 128 << 10;

/// What reading data files back needs: the repository's nodes, a spool for copies from remote
/// nodes, and the counters a progress display reads.
#[derive(Clone, Copy)]
pub(crate) struct Fetcher<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// The spool.
    pub staging: &'a Staging,
    /// Bytes and tasks done.
    pub progress: &'a Progress,
    /// For a data file only archive nodes can give: ask for its retrieval when none is under
    /// way, and wait for it; `None` to fail at once.
    pub retrieval: Option<crate::retrieve::Retrieval>,
}

/// The largest data file a remote replica is read into memory for; larger ones go through a
/// copy in staging.
const IN_MEMORY: u64 = 24 << 20;

/// A data file whose checksum has been checked, ready to decode.
pub(crate) struct Verified {
    body: Body,
    crypt: Option<Arc<crate::crypt::Crypt>>,
}

/// Where the checked bytes of a data file are.
enum Body {
    /// A local replica.
    Local(PathBuf),
    /// A copy in staging, removed when dropped.
    Staged(StagedFile),
    /// A remote replica read into memory.
    Memory(Arc<Vec<u8>>),
}

thread_local! {
    /// The memory of the last data file this thread read into memory, kept for the next one:
    /// one allocation per worker instead of one per data file, which the allocator may not
    /// give back.
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Verified {
    fn drop(&mut self) {
        if let Body::Memory(bytes) = &mut self.body {
            if let Some(bytes) = Arc::get_mut(bytes) {
                let spare = std::mem::take(bytes);
                // Not while the thread's locals are torn down: then the buffer is just freed.
                let _ = SPARE.try_with(|s| *s.borrow_mut() = spare);
            }
        }
    }
}

/// The bytes of a data file in memory, shared with a reader (a `Cursor` over them).
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn open_file(path: &std::path::Path) -> Result<Box<dyn BufRead + Send>> {
    let f =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}

impl Verified {
    /// The decompressed (and decrypted) bytes, buffered: readers of tar headers and COPY lines
    /// ask for little at a time.
    pub(crate) fn open(&self) -> Result<Box<dyn Read + Send>> {
        let f: Box<dyn BufRead + Send> = match &self.body {
            Body::Local(path) => open_file(path)?,
            Body::Staged(staged) => open_file(staged.path())?,
            Body::Memory(bytes) => Box::new(std::io::Cursor::new(Shared(Arc::clone(bytes)))),
        };
        let decoded: Box<dyn Read + Send> = match &self.crypt {
            None => Box::new(
                zstd::Decoder::with_buffer(f).map_err(|e| Error::io("cannot start zstd", e))?,
            ),
            Some(c) => {
                let plain = c.open_reader(f)?;
                Box::new(zstd::Decoder::new(plain).map_err(|e| Error::io("cannot start zstd", e))?)
            }
        };
        Ok(Box::new(BufReader::with_capacity(DECODED_BUFFER, decoded)))
    }
}

impl Fetcher<'_> {
    /// The first healthy replica of `data`, and the problems met before it; replicas on nodes
    /// in an archive class are tried last. A replica whose size or checksum is wrong is recorded
    /// as damaged on its node, for the next backup to heal.
    /// With `retrieval`, a data file that no replica can give now is retrieved from an archive
    /// node that holds it — asked for when no retrieval is under way (a copy expired, or the hot
    /// replica turned out bad) — and waited for.
    pub(crate) fn fetch(&self, data: &Receipt) -> Result<(Verified, Vec<String>)> {
        loop {
            let fetched = self.fetch_once(data);
            match &self.retrieval {
                Some(r) if fetched.is_err() && self.being_retrieved(data, r) => {
                    self.progress
                        .waiting_retrieval
                        .fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(r.poll());
                    self.progress
                        .waiting_retrieval
                        .fetch_sub(1, Ordering::Relaxed);
                }
                _ => return fetched,
            }
        }
    }

    /// True when a retrieval of `data` is under way on one of its archive nodes, asking for one
    /// where it is archived and none is.
    fn being_retrieved(&self, data: &Receipt, r: &crate::retrieve::Retrieval) -> bool {
        use crate::store::Readiness;
        let archive_nodes = data
            .nodes
            .iter()
            .filter_map(|name| self.repo.replicator().node(name))
            .filter(|node| crate::retrieve::is_archive(node.as_ref()));
        let mut archived = None;
        for node in archive_nodes {
            match node.object_class(&data.key) {
                Ok(Some(c)) if c.readiness == Readiness::Retrieving => return true,
                Ok(Some(c)) if c.readiness == Readiness::Archived => {
                    archived = archived.or(Some(node))
                }
                _ => {}
            }
        }
        archived.is_some_and(|node| {
            let answer = node.request_retrieval(&data.key, r.tier, r.days);
            crate::event::emit(
                "retrieval_requested",
                serde_json::json!({
                    "node": node.name(), "file": data.key.as_str(),
                    "answer": format!("{answer:?}"),
                }),
            );
            answer.is_ok()
        })
    }

    fn fetch_once(&self, data: &Receipt) -> Result<(Verified, Vec<String>)> {
        let mut problems = Vec::new();
        let mut order: Vec<&String> = data.nodes.iter().collect();
        order.sort_by_key(|name| {
            self.repo
                .replicator()
                .node(name)
                .is_some_and(|n| crate::retrieve::is_archive(n.as_ref()))
        });
        for name in order {
            let Some(node) = self.repo.replicator().node(name) else {
                problems.push(format!("{}: node {name} is no longer in the job", data.key));
                continue;
            };
            match self.checked_copy(node.as_ref(), data) {
                Ok(body) => {
                    let verified = Verified {
                        body,
                        crypt: self.repo.crypt()?,
                    };
                    return Ok((verified, problems));
                }
                Err(e) if e.kind() == ErrorKind::Integrity => {
                    let record = DamageRecord::new(data, name, FoundBy::Restore, e.message());
                    let note = match self
                        .repo
                        .replicator()
                        .damage()
                        .record(node.as_ref(), &record)
                    {
                        Ok(()) => "recorded as damaged for the next backup to heal".to_owned(),
                        Err(r) => format!("the damage could not be recorded: {r}"),
                    };
                    problems.push(format!("{} on node {name}: {e} ({note})", data.key));
                }
                Err(e) => problems.push(format!("{} on node {name}: {e}", data.key)),
            }
        }
        Err(Error::integrity(format!(
            "no healthy replica of {}: {}",
            data.key,
            problems.join("; ")
        )))
    }

    /// The replica of `data` on `node`, its size and BLAKE3 checked: hashed in place on a local
    /// node, read into memory or copied into staging otherwise. A mismatch is an integrity error.
    fn checked_copy(&self, node: &dyn Target, data: &Receipt) -> Result<Body> {
        if let Some(path) = node.local_path(&data.key) {
            let mut f = File::open(&path).map_err(|e| {
                Error::not_found(format!("replica {} is missing", path.display())).with_source(e)
            })?;
            let (n, hash) = hash_stream(&mut f)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            check_digest(n, &hash, data.size, &data.checksum)?;
            return Ok(Body::Local(path));
        }
        let mut r = node.get(&data.key)?;
        if data.size <= IN_MEMORY {
            // One byte more than the manifest says is enough to see that the replica is too long.
            let mut bytes = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
            bytes.clear();
            bytes.reserve_exact(data.size as usize + 1);
            r.take(data.size + 1).read_to_end(&mut bytes).map_err(|e| {
                Error::target("cannot read replica")
                    .with_source(e)
                    .temporary()
            })?;
            if bytes.len() as u64 > data.size {
                return Err(Error::integrity(format!(
                    "replica has more than {} bytes, the manifest says {}",
                    data.size, data.size
                )));
            }
            let hash = blake3::hash(&bytes).to_hex().to_string();
            check_digest(bytes.len() as u64, &hash, data.size, &data.checksum)?;
            return Ok(Body::Memory(Arc::new(bytes)));
        }
        let staged = self
            .staging
            .fetch(&data.checksum[..16], &mut r, data.size, &data.checksum)?;
        Ok(Body::Staged(staged))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::store::{ObjectKey, Payload, SharedTarget};

    /// A remote node in memory: no local path, so replicas come through `get`.
    #[derive(Debug, Default)]
    struct Remote(Mutex<HashMap<String, Vec<u8>>>);

    impl Target for Remote {
        fn name(&self) -> &str {
            "remote"
        }
        fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
            let mut bytes = Vec::new();
            payload.open().unwrap().read_to_end(&mut bytes).unwrap();
            self.0.lock().unwrap().insert(key.to_string(), bytes);
            Ok(())
        }
        fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
            let bytes = self.0.lock().unwrap().get(key.as_str()).cloned();
            let bytes = bytes.ok_or_else(|| Error::not_found(format!("no {key}")))?;
            Ok(Box::new(std::io::Cursor::new(bytes)))
        }
        fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(key.as_str())
                .map(|b| b.len() as u64))
        }
        fn list(&self, _prefix: &str) -> Result<Vec<ObjectKey>> {
            Ok(Vec::new())
        }
        fn delete(&self, key: &ObjectKey) -> Result<()> {
            self.0.lock().unwrap().remove(key.as_str());
            Ok(())
        }
    }

    /// A receipt for `bytes` stored under `key` on the remote node.
    fn receipt(key: &str, bytes: &[u8]) -> Receipt {
        Receipt {
            key: ObjectKey::new(key),
            size: bytes.len() as u64,
            checksum: blake3::hash(bytes).to_hex().to_string(),
            nodes: vec!["remote".to_owned()],
        }
    }

    fn bytes(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Runs `check` with a fetcher over one remote node, and that node.
    fn with_remote(check: impl FnOnce(&Fetcher<'_>, &Remote)) {
        with_node(Remote::default(), None, check);
    }

    /// Runs `check` with a fetcher (retrieving as `retrieval` says) over the one node `node`.
    fn with_node<T: Target + 'static>(
        node: T,
        retrieval: Option<crate::retrieve::Retrieval>,
        check: impl FnOnce(&Fetcher<'_>, &T),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let node = std::sync::Arc::new(node);
        let repo = Repository::with_nodes("j", vec![node.clone() as SharedTarget], 1);
        let staging = Staging::create(dir.path(), "j").unwrap();
        let progress = Progress::default();
        let fetch = Fetcher {
            repo: &repo,
            staging: &staging,
            progress: &progress,
            retrieval,
        };
        check(&fetch, &node);
    }

    #[test]
    fn a_remote_data_file_is_checked_in_memory_up_to_the_limit_and_in_staging_above_it() {
        with_remote(|fetch, remote| {
            let staging = fetch.staging;
            for (len, in_memory) in [(IN_MEMORY, true), (IN_MEMORY + 1, false)] {
                let data = bytes(len);
                let key = format!("data/{len}");
                remote
                    .put(&ObjectKey::new(&key), Payload::Bytes(&data))
                    .unwrap();
                let (verified, problems) = fetch.fetch(&receipt(&key, &data)).unwrap();
                assert!(problems.is_empty(), "{problems:?}");
                let spooled = std::fs::read_dir(staging.dir()).unwrap().count();
                match verified.body {
                    Body::Memory(ref b) => {
                        assert!(in_memory, "{len} bytes read into memory");
                        assert!(b[..] == data[..]);
                        assert_eq!(spooled, 0, "nothing spooled for a file read into memory");
                    }
                    Body::Staged(ref f) => {
                        assert!(!in_memory, "{len} bytes copied into staging");
                        assert!(std::fs::read(f.path()).unwrap() == data);
                        assert_eq!(spooled, 1);
                    }
                    Body::Local(_) => panic!("a remote node has no local path"),
                }
                drop(verified);
                let left = std::fs::read_dir(staging.dir()).unwrap().count();
                assert_eq!(left, 0, "the staged copy is removed once decoded");
            }
        });
    }

    #[test]
    fn a_remote_replica_too_long_or_too_short_is_refused_naming_its_size() {
        with_remote(|fetch, remote| {
            let data = bytes(1000);
            let r = receipt("data/x", &data);
            for (stored, says) in [
                (bytes(5000), "more than 1000 bytes"),
                (bytes(999), "has 999 bytes"),
            ] {
                remote.put(&r.key, Payload::Bytes(&stored)).unwrap();
                let e = fetch.fetch(&r).err().expect("refused");
                assert_eq!(e.kind(), ErrorKind::Integrity);
                assert!(e.to_string().contains(says), "{e}");
            }
        });
    }

    /// A node in an archive class: its objects are archived until a retrieval is requested
    /// (when `archived`), then under retrieval for `polls` questions; until then it refuses
    /// reads.
    #[derive(Debug)]
    struct Retrieving {
        inner: Remote,
        archived: std::sync::atomic::AtomicBool,
        polls: std::sync::atomic::AtomicU32,
        requests: std::sync::atomic::AtomicU32,
    }

    impl Target for Retrieving {
        fn name(&self) -> &str {
            "remote"
        }
        fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
            self.inner.put(key, payload)
        }
        fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
            if self.archived.load(Ordering::SeqCst) || self.polls.load(Ordering::SeqCst) > 0 {
                return Err(Error::target(format!(
                    "{key}: its retrieval is not done yet"
                )));
            }
            self.inner.get(key)
        }
        fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
            self.inner.stat(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &ObjectKey) -> Result<()> {
            self.inner.delete(key)
        }
        fn storage_class(&self) -> Option<&str> {
            Some("DEEP_ARCHIVE")
        }
        fn request_retrieval(
            &self,
            _key: &ObjectKey,
            _tier: crate::store::RetrievalTier,
            _days: u32,
        ) -> Result<crate::store::RetrievalAnswer> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            self.archived.store(false, Ordering::SeqCst);
            Ok(crate::store::RetrievalAnswer::Requested)
        }
        fn object_class(&self, key: &ObjectKey) -> Result<Option<crate::store::ObjectClass>> {
            let size = self.inner.stat(key)?.unwrap_or(0);
            if self.archived.load(Ordering::SeqCst) {
                return Ok(Some(crate::store::ObjectClass {
                    class: Some("DEEP_ARCHIVE".into()),
                    readiness: crate::store::Readiness::Archived,
                    size,
                }));
            }
            let left = self.polls.load(Ordering::SeqCst);
            self.polls.store(left.saturating_sub(1), Ordering::SeqCst);
            Ok(Some(crate::store::ObjectClass {
                class: Some("DEEP_ARCHIVE".into()),
                readiness: if left > 0 {
                    crate::store::Readiness::Retrieving
                } else {
                    crate::store::Readiness::Readable
                },
                size,
            }))
        }
    }

    #[test]
    fn a_data_file_only_an_archive_node_holds_is_retrieved_and_waited_for_when_asked() {
        let retrieval = crate::retrieve::Retrieval {
            tier: crate::store::RetrievalTier::Bulk,
            days: 1,
            poll_ms: 5,
        };
        // (archived at first, retrieval settings, requests expected, fetched)
        for (archived, settings, requests, ok) in [
            (false, None, 0, false),
            (false, Some(retrieval), 0, true),
            (true, None, 0, false),
            (true, Some(retrieval), 1, true),
        ] {
            let node = Retrieving {
                inner: Remote::default(),
                archived: archived.into(),
                polls: 3.into(),
                requests: 0.into(),
            };
            let data = bytes(1000);
            node.put(&ObjectKey::new("data/r"), Payload::Bytes(&data))
                .unwrap();
            with_node(node, settings, |fetch, node| {
                let fetched = fetch.fetch(&receipt("data/r", &data));
                let case = format!("archived {archived}, {settings:?}");
                assert_eq!(node.requests.load(Ordering::SeqCst), requests, "{case}");
                match fetched {
                    Ok((verified, _)) => {
                        assert!(ok, "{case}: fetched");
                        assert!(matches!(&verified.body, Body::Memory(b) if b[..] == data[..]));
                        let waiting = &fetch.progress.waiting_retrieval;
                        assert_eq!(waiting.load(Ordering::SeqCst), 0);
                    }
                    Err(e) => {
                        assert!(!ok, "{case}: {e}");
                        assert!(e.to_string().contains("not done yet"), "{e}");
                    }
                }
            });
        }
    }
}
