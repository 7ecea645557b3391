//! The Azurite (Azure Blob emulator) that `scripts/test` starts: where it is and its account.
//! A test that needs it fails (never skips) when it is not running.

use std::collections::HashMap;
use std::path::PathBuf;

/// The running emulator, as written by `scripts/azurite start` into `$COLDVAULT_AZURITE_DIR/env`.
#[derive(Debug, Clone)]
pub struct Azurite {
    /// The emulator's directory.
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Azurite {
    /// The emulator started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Azurite {
        let (dir, vars) = crate::service_env(
            "COLDVAULT_AZURITE_DIR",
            "Azurite blob service",
            "scripts/azurite start DIR",
        );
        Azurite { dir, vars }
    }

    /// A value from the env file (`AZURITE_ENDPOINT`, `AZURITE_ACCOUNT`, `AZURITE_KEY`, ...).
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is missing from the Azurite env file"))
    }

    /// The blob endpoint, `http://127.0.0.1:PORT/ACCOUNT`.
    pub fn endpoint(&self) -> String {
        self.var("AZURITE_ENDPOINT")
    }

    /// A node URL for a fresh prefix of the test container.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "azblob://{}/{prefix}?endpoint={}",
            self.var("AZURITE_CONTAINER"),
            self.endpoint()
        )
    }

    /// The variables a coldvault process reads the account from (the standard ones).
    pub fn credential_vars(&self) -> [(&'static str, String); 2] {
        [
            ("AZURE_STORAGE_ACCOUNT", self.var("AZURITE_ACCOUNT")),
            ("AZURE_STORAGE_KEY", self.var("AZURITE_KEY")),
        ]
    }

    /// A target on the test container under `root`, to check and damage objects directly.
    pub fn target(&self, name: &str, root: &str) -> coldvault::store::OpenDalTarget {
        coldvault::store::OpenDalTarget::azblob(
            name,
            coldvault::store::AzblobOptions {
                container: self.var("AZURITE_CONTAINER"),
                root: root.to_owned(),
                endpoint: self.endpoint(),
                account_name: self.var("AZURITE_ACCOUNT"),
                account_key: self.var("AZURITE_KEY"),
            },
        )
        .unwrap()
    }
}
