//! The OpenSSH server that `scripts/test` starts for SFTP nodes: where it is, its throwaway
//! client key, and its data directory. A test that needs it fails (never skips) when it is not
//! running.
//!
//! Its host key is new on every start, and OpenDAL 0.59's SFTP service cannot be pointed at a
//! known_hosts file of our own (only at the user's), so test nodes use `known_hosts=accept`:
//! `ssh` then records the throwaway key in the test user's `~/.ssh/known_hosts` as it connects.

use std::collections::HashMap;
use std::path::PathBuf;

/// The running server, as written by `scripts/sshd start` into `$COLDVAULT_SFTP_DIR/env`.
#[derive(Debug, Clone)]
pub struct Sftp {
    /// The server's directory.
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Sftp {
    /// The server started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Sftp {
        let (dir, vars) =
            crate::service_env("COLDVAULT_SFTP_DIR", "SSH server", "scripts/sshd start DIR");
        Sftp { dir, vars }
    }

    /// A value from the env file (`SFTP_PORT`, `SFTP_USER`, `SFTP_KEY`, `SFTP_ROOT`, ...).
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is missing from the SSH server's env file"))
    }

    /// The throwaway client's private key.
    pub fn key_file(&self) -> PathBuf {
        PathBuf::from(self.var("SFTP_KEY"))
    }

    /// The server-side directory under which `prefix` lives.
    pub fn path(&self, prefix: &str) -> PathBuf {
        PathBuf::from(self.var("SFTP_ROOT")).join(prefix)
    }

    /// A node URL for a fresh directory `prefix` on the server, reached as `host` (`127.0.0.1`,
    /// or `localhost` to be a host `ssh` has never seen), accepting the throwaway host key.
    pub fn url_via(&self, host: &str, prefix: &str, known_hosts: &str) -> String {
        format!(
            "sftp://{}@{host}:{}{}?known_hosts={known_hosts}",
            self.var("SFTP_USER"),
            self.var("SFTP_PORT"),
            self.path(prefix).display()
        )
    }

    /// A node URL for a fresh directory `prefix` on the server.
    pub fn url(&self, prefix: &str) -> String {
        self.url_via(&self.var("SFTP_HOST"), prefix, "accept")
    }

    /// A target on the server under `prefix`, to check and damage objects directly.
    pub fn target(&self, name: &str, prefix: &str) -> coldvault::store::OpenDalTarget {
        coldvault::store::OpenDalTarget::sftp(
            name,
            coldvault::store::SftpOptions {
                host: self.var("SFTP_HOST"),
                port: self.var("SFTP_PORT").parse().unwrap(),
                user: Some(self.var("SFTP_USER")),
                root: self.path(prefix).display().to_string(),
                key_file: Some(self.key_file()),
                known_hosts: coldvault::store::KnownHosts::Accept,
            },
        )
        .unwrap()
    }
}
