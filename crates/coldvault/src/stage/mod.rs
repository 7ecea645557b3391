//! The storage module: the local spool where fetched data waits until it is stored.
//!
//! A [`Stager`] takes the encoded bytes of one task, compresses them with zstd (with zstd's own
//! frame checksum) and hashes the compressed bytes with BLAKE3 in the same pass. Invariant: a staged
//! file is never visible under its final name until its hash is known, and it is deleted when its
//! [`StagedFile`] is dropped, stored or not. The whole run's spool is one directory, removed at the
//! end of the run, so staging holds at most `parallel` tasks' worth of data and is empty afterwards.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// One run's spool directory, removed when dropped.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    /// Creates a fresh spool directory below `base`, first removing the spool directories of
    /// this job's runs whose process is gone (killed runs leave theirs).
    pub fn create(base: &Path, job: &str) -> Result<Staging> {
        remove_dead_spools(base, job);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "{job}-{}-{nanos:x}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("cannot create staging directory {}", dir.display()),
                e,
            )
        })?;
        Ok(Staging { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts staging a data file for task `name`, compressing at `level` (and encrypting with
    /// `crypt`, after compression, when the repository is encrypted).
    pub fn stager(
        &self,
        name: &str,
        level: i32,
        crypt: Option<&std::sync::Arc<crate::crypt::Crypt>>,
    ) -> Result<Stager> {
        let path = self.dir.join(format!("{name}.partial"));
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("cannot create staged file {}", path.display()), e))?;
        let mut compressor =
            zstd::bulk::Compressor::new(level).map_err(|e| Error::io("cannot start zstd", e))?;
        compressor
            .include_checksum(true)
            .map_err(|e| Error::io("cannot configure zstd", e))?;
        Ok(Stager {
            compressor,
            input: Vec::with_capacity(FRAME_BYTES),
            output: Vec::with_capacity(zstd::zstd_safe::compress_bound(FRAME_BYTES)),
            out: Some(match crypt {
                None => Sink::Plain(Box::new(HashingWriter::new(file))),
                Some(c) => Sink::Sealed(Box::new(c.seal_writer(HashingWriter::new(file))?)),
            }),
            path,
            raw_bytes: 0,
            frames: 0,
        })
    }

    /// Copies `src` into the spool while hashing it; fails unless it has `size` bytes and BLAKE3
    /// `checksum`. Used to read a remote replica once, checked, before decoding it.
    pub fn fetch(
        &self,
        name: &str,
        src: &mut dyn Read,
        size: u64,
        checksum: &str,
    ) -> Result<StagedFile> {
        let path = self.dir.join(format!("{name}.fetch"));
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("cannot create staged file {}", path.display()), e))?;
        let mut staged = StagedFile {
            path,
            size: 0,
            checksum: String::new(),
        };
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        io::copy(src, &mut w).map_err(|e| {
            Error::target("cannot read replica")
                .with_source(e)
                .temporary()
        })?;
        let (inner, hash, count) = w.finish();
        inner
            .into_inner()
            .map_err(|e| Error::io("cannot write staged file", e.into_error()))?;
        check_digest(count, &hash, size, checksum)?;
        staged.size = count;
        staged.checksum = hash;
        Ok(staged)
    }
}

/// Removes `JOB-PID-…` spool directories below `base` whose process no longer runs.
fn remove_dead_spools(base: &Path, job: &str) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{job}-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !crate::util::process_alive(p)) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Fails with an integrity error unless `count` and `hash` match the expected values.
pub fn check_digest(count: u64, hash: &str, size: u64, checksum: &str) -> Result<()> {
    if count != size {
        return Err(Error::integrity(format!(
            "replica has {count} bytes, the manifest says {size}"
        )));
    }
    if hash != checksum {
        return Err(Error::integrity(format!(
            "replica checksum {} does not match the manifest's {}",
            &hash[..16.min(hash.len())],
            &checksum[..16.min(checksum.len())]
        )));
    }
    Ok(())
}

/// Hashes a whole stream with BLAKE3; returns (bytes, hex).
pub fn hash_stream(r: &mut dyn Read) -> io::Result<(u64, String)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize().to_hex().to_string()))
}

/// A writer that counts and hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            self.hasher.finalize().to_hex().to_string(),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Raw bytes per zstd frame. A data file is a sequence of independent zstd frames (which every
/// zstd decoder reads as one stream); compressing whole, contiguous chunks lets zstd use its fast
/// prefix path instead of the slower streaming "external dictionary" path.
const FRAME_BYTES: usize = 4 << 20;

/// Where compressed frames go: the staged file (hashed), through age when encrypted.
enum Sink {
    Plain(Box<HashingWriter<File>>),
    Sealed(Box<age::stream::StreamWriter<HashingWriter<File>>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}

/// The data of one task being staged: write the encoded bytes, then [`Stager::finish`].
pub struct Stager {
    compressor: zstd::bulk::Compressor<'static>,
    input: Vec<u8>,
    output: Vec<u8>,
    out: Option<Sink>,
    path: PathBuf,
    raw_bytes: u64,
    frames: u64,
}

impl Write for Stager {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(FRAME_BYTES - self.input.len());
        self.input.extend_from_slice(&buf[..take]);
        if self.input.len() == FRAME_BYTES {
            self.emit_frame()?;
        }
        self.raw_bytes += take as u64;
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stager {
    fn emit_frame(&mut self) -> io::Result<()> {
        self.output.clear();
        self.compressor
            .compress_to_buffer(&self.input, &mut self.output)?;
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the staged file is already finished"))?
            .write_all(&self.output)?;
        self.input.clear();
        self.frames += 1;
        Ok(())
    }

    /// Bytes written so far, before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Compresses what is left and returns the staged file with its size and checksum.
    pub fn finish(mut self) -> Result<StagedFile> {
        let path = self.path.clone();
        let result = (|| {
            if !self.input.is_empty() || self.frames == 0 {
                self.emit_frame()?;
            }
            let out = self
                .out
                .take()
                .ok_or_else(|| io::Error::other("the staged file is already finished"))?;
            let hashed = match out {
                Sink::Plain(h) => *h,
                Sink::Sealed(w) => w.finish()?,
            };
            let (file, checksum, size) = hashed.finish();
            drop(file);
            Ok::<_, io::Error>((checksum, size))
        })();
        let (checksum, size) = result.map_err(|e| {
            let _ = fs::remove_file(&path);
            Error::io(format!("cannot write staged file {}", path.display()), e)
        })?;
        let final_path = path.with_extension("zst");
        fs::rename(&path, &final_path).map_err(|e| {
            let _ = fs::remove_file(&path);
            Error::io(format!("cannot finalize staged file {}", path.display()), e)
        })?;
        Ok(StagedFile {
            path: final_path,
            size,
            checksum,
        })
    }
}

impl Drop for Stager {
    fn drop(&mut self) {
        // A stager dropped before `finish` (an error while reading the source) leaves nothing.
        let _ = fs::remove_file(&self.path);
    }
}

/// A complete staged file, deleted when dropped.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    size: u64,
    checksum: String,
}

impl StagedFile {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// BLAKE3 of its bytes, hex.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn staged_bytes_decompress_and_hash_as_one_shot(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 0..8)
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let staging = Staging::create(tmp.path(), "t").unwrap();
            let mut s = staging.stager("task", 3, None).unwrap();
            let mut all = Vec::new();
            for c in &chunks { s.write_all(c).unwrap(); all.extend_from_slice(c); }
            prop_assert_eq!(s.raw_bytes(), all.len() as u64);
            let staged = s.finish().unwrap();
            let stored = fs::read(staged.path()).unwrap();
            prop_assert_eq!(staged.size(), stored.len() as u64);
            let want = blake3::hash(&stored).to_hex().to_string();
            prop_assert_eq!(staged.checksum(), want.as_str());
            prop_assert_eq!(zstd::decode_all(&stored[..]).unwrap(), all);
        }
    }

    #[test]
    fn a_data_file_of_several_frames_reads_back_as_one_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::create(tmp.path(), "t").unwrap();
        let mut s = staging.stager("big", 1, None).unwrap();
        let data: Vec<u8> = (0..FRAME_BYTES * 2 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        s.write_all(&data).unwrap();
        let staged = s.finish().unwrap();
        let stored = fs::read(staged.path()).unwrap();
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), data);
    }

    #[test]
    fn an_empty_data_file_is_a_valid_zstd_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::create(tmp.path(), "t").unwrap();
        let staged = staging.stager("empty", 3, None).unwrap().finish().unwrap();
        let stored = fs::read(staged.path()).unwrap();
        assert!(!stored.is_empty());
        assert!(zstd::decode_all(&stored[..]).unwrap().is_empty());
    }

    #[test]
    fn staging_is_empty_after_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::create(tmp.path(), "t").unwrap();
        let dir = staging.dir().to_path_buf();
        let mut s = staging.stager("a", 1, None).unwrap();
        s.write_all(b"hello").unwrap();
        let staged = s.finish().unwrap();
        let mut unfinished = staging.stager("b", 1, None).unwrap();
        unfinished.write_all(b"x").unwrap();
        drop(unfinished);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        drop(staged);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        drop(staging);
        assert!(!dir.exists());
    }

    #[test]
    fn fetch_checks_the_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::create(tmp.path(), "t").unwrap();
        let data = b"some replica bytes".to_vec();
        let sum = blake3::hash(&data).to_hex().to_string();
        let ok = staging
            .fetch("x", &mut &data[..], data.len() as u64, &sum)
            .unwrap();
        assert_eq!(fs::read(ok.path()).unwrap(), data);
        let mut bad = data.clone();
        bad[3] ^= 1;
        let e = staging
            .fetch("y", &mut &bad[..], data.len() as u64, &sum)
            .unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
