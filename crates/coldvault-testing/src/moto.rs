//! The S3 server with archive semantics that `scripts/test` starts (moto's server mode): objects
//! in GLACIER or DEEP_ARCHIVE refuse reads until a retrieval. A test that needs it fails (never
//! skips) when it is not running.

use std::collections::HashMap;
use std::path::PathBuf;

/// The running server, as written by `scripts/moto start` into `$COLDVAULT_MOTO_DIR/env`.
#[derive(Debug, Clone)]
pub struct Moto {
    /// The server's directory.
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Moto {
    /// The server started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Moto {
        let (dir, vars) = crate::service_env(
            "COLDVAULT_MOTO_DIR",
            "moto S3 server (archive storage classes)",
            "scripts/moto start DIR",
        );
        Moto { dir, vars }
    }

    /// A value from the env file (`MOTO_ENDPOINT`, `MOTO_ACCESS_KEY_ID`, ...).
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is missing from the moto env file"))
    }

    /// A node URL for a fresh prefix of the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region={}",
            self.var("MOTO_BUCKET"),
            self.var("MOTO_ENDPOINT"),
            self.var("MOTO_REGION")
        )
    }

    /// The variables a coldvault process needs to reach the server.
    pub fn credentials(&self) -> [(&'static str, String); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.var("MOTO_ACCESS_KEY_ID")),
            ("AWS_SECRET_ACCESS_KEY", self.var("MOTO_SECRET_ACCESS_KEY")),
        ]
    }

    /// A target on the test bucket under `root` (a job's directory on a node with `url`'s prefix
    /// is `prefix/directory`) that writes data files in `class` (when given).
    pub fn target(
        &self,
        name: &str,
        root: &str,
        class: Option<&str>,
    ) -> coldvault::store::OpenDalTarget {
        coldvault::store::OpenDalTarget::s3(
            name,
            coldvault::store::S3Options {
                bucket: self.var("MOTO_BUCKET"),
                root: root.to_owned(),
                endpoint: Some(self.var("MOTO_ENDPOINT")),
                region: self.var("MOTO_REGION"),
                virtual_host: false,
                access_key_id: self.var("MOTO_ACCESS_KEY_ID"),
                secret_access_key: self.var("MOTO_SECRET_ACCESS_KEY"),
                ambient: false,
                storage_class: class.map(str::to_owned),
            },
        )
        .unwrap()
    }
}
