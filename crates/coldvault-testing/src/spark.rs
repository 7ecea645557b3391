//! The Spark standalone cluster that `scripts/test` starts. A test that needs it fails (never
//! skips) when it is not running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The running cluster, as written by `scripts/spark start` into `$COLDVAULT_SPARK_DIR/env`.
#[derive(Debug, Clone)]
pub struct Spark {
    /// The cluster's directory.
    pub dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Spark {
    /// The cluster started by `scripts/test`; panics with the reason when there is none.
    pub fn from_env() -> Spark {
        let (dir, vars) = crate::service_env(
            "COLDVAULT_SPARK_DIR",
            "Spark cluster",
            "scripts/spark start DIR",
        );
        Spark { dir, vars }
    }

    /// A value from the env file (`SPARK_MASTER`, `SPARK_HOME`, `JAVA_HOME`).
    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is missing from the Spark env file"))
    }

    /// The environment a coldvault process needs to submit to this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SPARK_HOME".into(), self.var("SPARK_HOME")),
            ("JAVA_HOME".into(), self.var("JAVA_HOME")),
            ("SPARK_LOCAL_IP".into(), "127.0.0.1".into()),
        ]
    }

    fn script(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/spark");
        let st = Command::new(script)
            .args(args)
            .status()
            .expect("run scripts/spark");
        assert!(st.success(), "scripts/spark {args:?} failed");
    }

    /// Kills worker `i` (1..2) and its executor at once.
    pub fn kill_worker(&self, i: u32) {
        self.script(&["kill-worker", self.dir.to_str().unwrap(), &i.to_string()]);
    }

    /// Starts worker `i` again.
    pub fn start_worker(&self, i: u32) {
        self.script(&["start-worker", self.dir.to_str().unwrap(), &i.to_string()]);
    }
}
