//! The Garage cluster that `scripts/test` starts: where it is, how to stop and start its nodes.
//! A test that needs it fails (never skips) when it is not running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The running cluster, as written by `scripts/garage start` into `$COLDVAULT_GARAGE_DIR/env`.
#[derive(Debug, Clone)]
pub struct Garage {
    /// The cluster's directory.
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Garage {
    /// The cluster started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Garage {
        let (dir, vars) = crate::service_env(
            "COLDVAULT_GARAGE_DIR",
            "Garage cluster",
            "scripts/garage start DIR",
        );
        Garage { dir, vars }
    }

    /// A value from the env file (`GARAGE_ENDPOINT`, `GARAGE_ACCESS_KEY_ID`, ...).
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is missing from the Garage env file"))
    }

    /// The S3 endpoint of node 1.
    pub fn endpoint(&self) -> String {
        self.var("GARAGE_ENDPOINT")
    }

    /// A node URL for a fresh prefix of the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region={}",
            self.var("GARAGE_BUCKET"),
            self.endpoint(),
            self.var("GARAGE_REGION")
        )
    }

    fn script(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage");
        let st = Command::new(script)
            .args(args)
            .status()
            .expect("run scripts/garage");
        assert!(st.success(), "scripts/garage {args:?} failed");
    }

    /// A target on the test bucket under `root`, to check and damage objects directly.
    pub fn target(&self, name: &str, root: &str) -> coldvault::store::OpenDalTarget {
        self.target_in_class(name, root, None)
    }

    /// A target like [`Garage::target`] that writes data files in storage class `class`.
    pub fn target_in_class(
        &self,
        name: &str,
        root: &str,
        class: Option<&str>,
    ) -> coldvault::store::OpenDalTarget {
        coldvault::store::OpenDalTarget::s3(
            name,
            coldvault::store::S3Options {
                bucket: self.var("GARAGE_BUCKET"),
                root: root.to_owned(),
                endpoint: Some(self.endpoint()),
                region: self.var("GARAGE_REGION"),
                virtual_host: false,
                access_key_id: self.var("GARAGE_ACCESS_KEY_ID"),
                secret_access_key: self.var("GARAGE_SECRET_ACCESS_KEY"),
                ambient: false,
                storage_class: class.map(str::to_owned),
            },
        )
        .unwrap()
    }

    /// Stops node `i` (1..3).
    pub fn stop_node(&self, i: u32) {
        self.script(&["stop-node", self.dir.to_str().unwrap(), &i.to_string()]);
    }

    /// Starts node `i` again.
    pub fn start_node(&self, i: u32) {
        self.script(&["start-node", self.dir.to_str().unwrap(), &i.to_string()]);
    }

    /// Waits until the cluster answers as healthy.
    pub fn wait_healthy(&self) {
        self.script(&["wait", self.dir.to_str().unwrap()]);
    }
}
