//! Encryption at rest with age (<https://age-encryption.org>): data files, manifests and run
//! receipts are age files, so `age -d -i KEY FILE | zstd -d` reads any of them without coldvault.
//!
//! Two modes, from `[repository.encryption]`:
//! - `recipients = ["age1…"]` (X25519 public keys): a backup needs only the public keys; restore,
//!   `snapshots` and anything that reads a manifest need an identity (`identity_file` or
//!   `identity_env`). Without one, a backup still runs, but cannot reuse a parent snapshot or
//!   resume an interrupted run (it cannot read them).
//! - `passphrase_env = "VAR"`: the repository gets its own X25519 key, stored on every node as
//!   `keys/repository.age`, encrypted with the passphrase (age's scrypt); data files are encrypted
//!   to that key. By hand: `age -d keys/repository.age > key.txt`, then `age -d -i key.txt FILE`.
//!
//! The checksum of a data file is that of its stored (encrypted) bytes, so `verify` and `repair`
//! work without any key. age authenticates every 64 KiB chunk: a changed byte fails decryption.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;

use age::secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, ErrorKind, Result};
use crate::job::Encryption;
use crate::store::{ObjectKey, SharedTarget};

/// Where the passphrase mode keeps the repository's key.
pub const KEY_FILE: &str = "keys/repository.age";
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

type Recipients = Vec<Box<dyn age::Recipient + Send + Sync>>;
type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// The keys of an encrypted repository.
pub struct Crypt {
    recipients: Recipients,
    identities: Identities,
    /// Why there is no identity, when one was named but cannot be had.
    missing: Option<String>,
    /// Passphrase mode: the stored copy of the repository key that decrypted, which every node
    /// holds byte for byte when its copy is sound.
    key_copy: Option<Vec<u8>>,
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Crypt({} recipients, {} identities)",
            self.recipients.len(),
            self.identities.len()
        )
    }
}

impl Crypt {
    /// The keys named by the job; in passphrase mode the repository key is read from (or, the
    /// first time, created on) `nodes`.
    pub fn open(enc: &Encryption, nodes: &[SharedTarget]) -> Result<Arc<Crypt>> {
        if let Some(var) = &enc.passphrase_env {
            let pass = std::env::var(var).map_err(|_| {
                Error::config(format!(
                    "[repository.encryption] passphrase_env: the variable {var} is not set"
                ))
            })?;
            return repository_key(SecretString::from(pass), nodes);
        }
        let mut recipients: Recipients = Vec::new();
        for r in &enc.recipients {
            let parsed: age::x25519::Recipient = r.parse().map_err(|e| {
                Error::config(format!(
                    "[repository.encryption] recipients: {r:?} is not an age X25519 public key: {e}"
                ))
            })?;
            recipients.push(Box::new(parsed));
        }
        // A backup needs only the recipients: an identity that cannot be had is an error only
        // when something must be decrypted.
        let text = match (&enc.identity_file, &enc.identity_env) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the identity file {}: {e}", f.display())),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!("[repository.encryption] identity_env: the variable {var} is not set")
            }),
            (None, None) => {
                Err("name the key in [repository.encryption] identity_file or identity_env".into())
            }
        };
        let (identities, missing) = match text {
            Ok(t) => (parse_identities(&t)?, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        Ok(Arc::new(Crypt {
            recipients,
            identities,
            missing,
            key_copy: None,
        }))
    }

    /// Wraps `out` so that what is written is encrypted to the recipients.
    pub fn seal_writer<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        if self.recipients.is_empty() {
            return Err(Error::config(
                "[repository.encryption] has no recipients to encrypt to",
            ));
        }
        let enc = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| Error::config(format!("cannot encrypt: {e}")))?;
        enc.wrap_output(out)
            .map_err(|e| Error::io("cannot start encrypting", e))
    }

    /// Reads an encrypted stream as plaintext.
    pub fn open_reader<R: Read + Send + 'static>(&self, input: R) -> Result<Box<dyn Read + Send>> {
        if self.identities.is_empty() {
            return Err(Error::config(format!(
                "the repository is encrypted and its key is not available: {}",
                self.missing.as_deref().unwrap_or("no identity")
            )));
        }
        let dec = age::Decryptor::new_buffered(BufReader::new(input)).map_err(decrypt_err)?;
        let r = dec
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(decrypt_err)?;
        Ok(Box::new(r))
    }

    /// Encrypts a small object (a manifest, a receipt).
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut w = self.seal_writer(Vec::new())?;
        w.write_all(plain)
            .map_err(|e| Error::io("cannot encrypt", e))?;
        w.finish().map_err(|e| Error::io("cannot encrypt", e))
    }

    /// Decrypts a small object; plaintext written before encryption was enabled is refused.
    pub fn unseal(&self, stored: &[u8]) -> Result<Vec<u8>> {
        if !stored.starts_with(AGE_MAGIC) {
            return Err(Error::integrity(
                "an object of an encrypted repository is not encrypted",
            ));
        }
        let mut out = Vec::new();
        self.open_reader(std::io::Cursor::new(stored.to_vec()))?
            .read_to_end(&mut out)
            .map_err(|e| Error::integrity("cannot decrypt").with_source(e))?;
        Ok(out)
    }
}

fn decrypt_err(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::config(
            "cannot decrypt: the identity (or passphrase) does not match the repository's recipients",
        ),
        other => Error::integrity(format!("cannot decrypt: {other}")),
    }
}

fn parse_identities(text: &str) -> Result<Identities> {
    let mut out: Identities = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("AGE-SECRET-KEY-") {
            let id: age::x25519::Identity = line
                .parse()
                .map_err(|e| Error::config(format!("the age identity cannot be read: {e}")))?;
            out.push(Box::new(id));
        }
    }
    if out.is_empty() {
        return Err(Error::config(
            "the age identity holds no AGE-SECRET-KEY- line",
        ));
    }
    Ok(out)
}

/// The passphrase mode's repository key: from the first node whose copy decrypts (a damaged copy
/// on one node never blocks while another node holds a good one), else, only for a repository
/// that has no snapshot yet and whose every node answered, made and written to every node.
fn repository_key(pass: SecretString, nodes: &[SharedTarget]) -> Result<Arc<Crypt>> {
    let key = ObjectKey::new(KEY_FILE);
    let with = |id: age::x25519::Identity, copy: Vec<u8>| {
        Arc::new(Crypt {
            recipients: vec![Box::new(id.to_public())],
            identities: vec![Box::new(id)],
            missing: None,
            key_copy: Some(copy),
        })
    };
    let mut failures: Vec<Error> = Vec::new();
    let mut unanswered = Vec::new();
    for node in nodes {
        let bytes = match crate::store::read_small(node.as_ref(), &key) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                unanswered.push(node.name().to_owned());
                failures.push(e);
                continue;
            }
        };
        match open_key(&bytes, &pass) {
            Ok(id) => return Ok(with(id, bytes)),
            Err(e) => failures.push(e.with_context("node", node.name())),
        }
    }
    if let Some(first) = failures.into_iter().reduce(|a, b| {
        // A wrong passphrase says more than a damaged copy: report it when any copy says so.
        if b.kind() == ErrorKind::Config {
            b
        } else {
            a
        }
    }) {
        return Err(first);
    }
    let has_snapshots = nodes.iter().any(|n| {
        n.list(crate::store::SNAPSHOTS_PREFIX)
            .is_ok_and(|keys| !keys.is_empty())
    });
    if has_snapshots || !unanswered.is_empty() {
        return Err(Error::not_found(format!(
            "the repository key ({KEY_FILE}) is on no node{}, but the repository holds snapshots \
             encrypted with it: put a copy of the key back on a node (a new key would not read \
             them)",
            if unanswered.is_empty() {
                String::new()
            } else {
                format!(" that answered (not: {})", unanswered.join(", "))
            }
        )));
    }
    let id = age::x25519::Identity::generate();
    let sealed = {
        let enc = age::Encryptor::with_user_passphrase(pass);
        let mut w = enc
            .wrap_output(Vec::new())
            .map_err(|e| Error::io("cannot encrypt the repository key", e))?;
        w.write_all(id.to_string().expose_secret().as_bytes())
            .and_then(|_| w.flush())
            .map_err(|e| Error::io("cannot encrypt the repository key", e))?;
        w.finish()
            .map_err(|e| Error::io("cannot encrypt the repository key", e))?
    };
    crate::store::put_on_any(nodes, &key, &sealed)
        .map_err(|e| Error::target("cannot store the repository key on any node").with_source(e))?;
    Ok(with(id, sealed))
}

/// What is wrong with each node's copy of the passphrase mode's repository key, as (node,
/// problem, detail): `missing`, or `damaged` (it differs from the copy that decrypts). Empty in
/// the other modes, which keep no key on the nodes.
pub(crate) fn key_copy_problems(
    crypt: &Crypt,
    nodes: &[SharedTarget],
) -> Vec<(String, &'static str, String)> {
    let Some(good) = &crypt.key_copy else {
        return Vec::new();
    };
    let key = ObjectKey::new(KEY_FILE);
    let mut out = Vec::new();
    for node in nodes {
        let problem = match crate::store::read_small(node.as_ref(), &key) {
            Ok(b) if &b == good => continue,
            Ok(_) => (
                "damaged",
                "it differs from the copy that decrypts".to_owned(),
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => ("missing", "no copy".to_owned()),
            Err(e) => ("unreachable", e.to_string()),
        };
        out.push((node.name().to_owned(), problem.0, problem.1));
    }
    out
}

/// Writes the copy of the repository key that decrypts to `nodes` (`repair`).
pub(crate) fn rewrite_key_copy(crypt: &Crypt, node: &SharedTarget) -> Result<()> {
    match &crypt.key_copy {
        Some(good) => node.put(
            &ObjectKey::new(KEY_FILE),
            crate::store::Payload::Bytes(good),
        ),
        None => Ok(()),
    }
}

/// The repository key sealed in `bytes` with the passphrase.
fn open_key(bytes: &[u8], pass: &SecretString) -> Result<age::x25519::Identity> {
    let dec = age::Decryptor::new_buffered(bytes).map_err(decrypt_err)?;
    let mut text = String::new();
    dec.decrypt(std::iter::once(
        &age::scrypt::Identity::new(pass.clone()) as _
    ))
    .map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => {
            Error::config("cannot decrypt the repository key: wrong passphrase")
        }
        // A wrong passphrase and a damaged copy both fail the header's MAC.
        age::DecryptError::DecryptionFailed => {
            Error::config("cannot decrypt the repository key: wrong passphrase, or a damaged copy")
        }
        other => decrypt_err(other),
    })?
    .read_to_string(&mut text)
    .map_err(|e| Error::integrity("cannot decrypt the repository key").with_source(e))?;
    text.trim()
        .parse()
        .map_err(|e| Error::integrity(format!("the repository key is malformed: {e}")))
}

/// True when `bytes` start like an age file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// Plain pass-through when `crypt` is `None`.
pub(crate) fn seal_opt(crypt: Option<&Arc<Crypt>>, plain: Vec<u8>) -> Result<Vec<u8>> {
    match crypt {
        Some(c) => c.seal(&plain),
        None => Ok(plain),
    }
}

/// Plain pass-through when `crypt` is `None`.
pub(crate) fn unseal_opt(crypt: Option<&Arc<Crypt>>, stored: Vec<u8>) -> Result<Vec<u8>> {
    match crypt {
        Some(c) => c.unseal(&stored),
        None if is_sealed(&stored) => Err(Error::config(
            "this repository is encrypted, but the job has no [repository.encryption]",
        )),
        None => Ok(stored),
    }
}
