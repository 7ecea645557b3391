//! Reading a data file back: from the first healthy replica, its BLAKE3 checked before a byte of
//! it is decoded (in place on a local node, through a checked copy in staging otherwise). A
//! missing or corrupt replica is reported and the next one is tried; a corrupt one (wrong size or
//! checksum) is also recorded as damaged on its node, so that the next backup heals it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::stage::{check_digest, hash_stream, StagedFile, Staging};
use crate::store::{DamageRecord, FoundBy, Receipt, Target};

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
}

/// A data file whose checksum has been checked, ready to decode.
pub(crate) struct Verified {
    path: PathBuf,
    _staged: Option<StagedFile>,
    crypt: Option<std::sync::Arc<crate::crypt::Crypt>>,
}

impl Verified {
    /// The decompressed (and decrypted) bytes.
    pub(crate) fn open(&self) -> Result<Box<dyn Read + Send>> {
        let f = File::open(&self.path)
            .map_err(|e| Error::io(format!("cannot open {}", self.path.display()), e))?;
        let f = BufReader::with_capacity(1 << 20, f);
        match &self.crypt {
            None => Ok(Box::new(
                zstd::Decoder::with_buffer(f).map_err(|e| Error::io("cannot start zstd", e))?,
            )),
            Some(c) => {
                let plain = c.open_reader(f)?;
                Ok(Box::new(
                    zstd::Decoder::new(plain).map_err(|e| Error::io("cannot start zstd", e))?,
                ))
            }
        }
    }
}

impl Fetcher<'_> {
    /// The first healthy replica of `data`, and the problems met before it. A replica whose size
    /// or checksum is wrong is recorded as damaged on its node, for the next backup to heal.
    pub(crate) fn fetch(&self, data: &Receipt) -> Result<(Verified, Vec<String>)> {
        let mut problems = Vec::new();
        for name in &data.nodes {
            let Some(node) = self.repo.replicator().node(name) else {
                problems.push(format!("{}: node {name} is no longer in the job", data.key));
                continue;
            };
            match self.checked_copy(node.as_ref(), data) {
                Ok((path, staged)) => {
                    let verified = Verified {
                        path,
                        _staged: staged,
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
    /// node, copied into staging while hashed otherwise. A mismatch is an integrity error.
    fn checked_copy(
        &self,
        node: &dyn Target,
        data: &Receipt,
    ) -> Result<(PathBuf, Option<StagedFile>)> {
        if let Some(path) = node.local_path(&data.key) {
            let mut f = File::open(&path).map_err(|e| {
                Error::not_found(format!("replica {} is missing", path.display())).with_source(e)
            })?;
            let (n, hash) = hash_stream(&mut f)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            check_digest(n, &hash, data.size, &data.checksum)?;
            return Ok((path, None));
        }
        let mut r = node.get(&data.key)?;
        let staged = self
            .staging
            .fetch(&data.checksum[..16], &mut r, data.size, &data.checksum)?;
        Ok((staged.path().to_path_buf(), Some(staged)))
    }
}
