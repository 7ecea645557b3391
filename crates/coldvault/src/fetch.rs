//! Reading a data file back: from the first healthy replica, its BLAKE3 checked before a byte of
//! it is decoded (in place on a local node, through a checked copy in staging otherwise). A
//! missing or corrupt replica is reported and the next one is tried.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::stage::{check_digest, hash_stream, StagedFile, Staging};
use crate::store::Receipt;

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
    /// The first healthy replica of `data`, and the problems met before it.
    pub(crate) fn fetch(&self, data: &Receipt) -> Result<(Verified, Vec<String>)> {
        let mut problems = Vec::new();
        for name in &data.nodes {
            let Some(node) = self.repo.replicator().node(name) else {
                problems.push(format!("{}: node {name} is no longer in the job", data.key));
                continue;
            };
            let attempt = || -> Result<Verified> {
                if let Some(path) = node.local_path(&data.key) {
                    let mut f = File::open(&path).map_err(|e| {
                        Error::not_found(format!("replica {} is missing", path.display()))
                            .with_source(e)
                    })?;
                    let (n, hash) = hash_stream(&mut f)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                    check_digest(n, &hash, data.size, &data.checksum)?;
                    return Ok(Verified {
                        path,
                        _staged: None,
                        crypt: self.repo.crypt()?,
                    });
                }
                let mut r = node.get(&data.key)?;
                let staged =
                    self.staging
                        .fetch(&data.checksum[..16], &mut r, data.size, &data.checksum)?;
                Ok(Verified {
                    path: staged.path().to_path_buf(),
                    _staged: Some(staged),
                    crypt: self.repo.crypt()?,
                })
            };
            match attempt() {
                Ok(v) => return Ok((v, problems)),
                Err(e) => problems.push(format!("{} on node {name}: {e}", data.key)),
            }
        }
        Err(Error::integrity(format!(
            "no healthy replica of {}: {}",
            data.key,
            problems.join("; ")
        )))
    }
}
