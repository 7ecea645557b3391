//! The Spark engine: the coordinator (this process) writes the work requests as JSON lines, runs
//! `spark-submit` with the small PySpark driver in `engines/spark/`, and reads one reply per
//! request back. One Spark task per work request (a map task, or one data file of a restore):
//! Spark schedules and retries each on its own (a lost executor), coldvault's own retry covers
//! storage failures inside a task. Nothing of
//! coldvault's becomes a cluster scheduler.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;

const DRIVER: &str = include_str!("../../../../engines/spark/coldvault_driver.py");

/// The `spark-submit` a job runs: `[run.spark] submit`, else `$SPARK_HOME/bin/spark-submit`,
/// else the one on `PATH`.
pub(crate) fn submit_command(job: &Job) -> PathBuf {
    if let Some(s) = &job.run.spark.submit {
        return s.clone();
    }
    match std::env::var_os("SPARK_HOME") {
        Some(home) => Path::new(&home).join("bin/spark-submit"),
        None => PathBuf::from("spark-submit"),
    }
}

/// Runs work requests on a Spark cluster.
#[derive(Debug)]
pub struct SparkEngine<'a> {
    job: &'a Job,
    master: String,
}

impl<'a> SparkEngine<'a> {
    /// An engine for `job` on the cluster at `master`.
    pub fn new(job: &'a Job, master: &str) -> Self {
        SparkEngine {
            job,
            master: master.to_owned(),
        }
    }

    fn submit_command(&self) -> PathBuf {
        submit_command(self.job)
    }

    /// The variables the workers need: the credentials' (by name only; each node kind says which
    /// it reads) and a few of Spark's own.
    fn env_names(&self) -> Vec<String> {
        let mut names = vec![
            "PGPASSWORD".to_owned(),
            "MYSQL_PWD".to_owned(),
            "TMPDIR".to_owned(),
        ];
        if let Some(db) = self.job.source.database() {
            names.extend(db.password.env.clone());
        }
        if let Some(enc) = &self.job.repository.encryption {
            names.extend(enc.identity_env.clone());
            names.extend(enc.passphrase_env.clone());
        }
        for n in &self.job.repository.nodes {
            names.extend(n.credential_vars());
        }
        names
    }

    /// Runs `requests` on the cluster; `work_dir` holds the request and reply files and the log.
    pub fn run<Q: Serialize, A: DeserializeOwned>(
        &self,
        requests: &[Q],
        work_dir: &Path,
    ) -> Result<Vec<A>> {
        let io = |what: &str, e| Error::io(format!("spark engine: {what}"), e);
        let req_path = work_dir.join("requests.jsonl");
        let reply_path = work_dir.join("replies.jsonl");
        let driver_path = work_dir.join("coldvault_driver.py");
        let log_path = work_dir.join("spark-submit.log");
        std::fs::write(&driver_path, DRIVER).map_err(|e| io("cannot write the driver", e))?;
        {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&req_path).map_err(|e| io("cannot write requests", e))?,
            );
            for r in requests {
                serde_json::to_writer(&mut f, r)
                    .map_err(|e| Error::internal("cannot encode a work request").with_source(e))?;
                f.write_all(b"\n")
                    .map_err(|e| io("cannot write requests", e))?;
            }
            f.flush().map_err(|e| io("cannot write requests", e))?;
        }
        let mut cmd = Command::new(self.submit_command());
        cmd.arg("--master").arg(&self.master);
        cmd.args(["--conf", "spark.task.maxFailures=4"]);
        for (k, v) in &self.job.run.spark.conf {
            cmd.arg("--conf").arg(format!("{k}={v}"));
        }
        let binary = match &self.job.run.spark.binary {
            Some(b) => b.display().to_string(),
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| io("cannot find the coldvault binary to ship", e))?;
                cmd.arg("--files").arg(&exe);
                exe.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "coldvault".into())
            }
        };
        cmd.arg(&driver_path)
            .arg(&req_path)
            .arg(&reply_path)
            .arg(binary)
            .arg(self.env_names().join(","));
        let log = std::fs::File::create(&log_path).map_err(|e| io("cannot create the log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| io("cannot create the log", e))?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| {
                Error::config(format!(
                    "cannot run {} (set SPARK_HOME or [run.spark] submit)",
                    self.submit_command().display()
                ))
                .with_source(e)
            })?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("Error") || l.contains("Exception") || l.contains("coldvault")
                })
                .rev()
                .take(6)
                .collect();
            return Err(Error::new(
                ErrorKind::Target,
                format!(
                    "spark-submit on {} failed ({status}); last errors: {}",
                    self.master,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            ));
        }
        read_replies(&reply_path, requests.len())
    }
}

fn read_replies<A: DeserializeOwned>(path: &Path, n: usize) -> Result<Vec<A>> {
    #[derive(serde::Deserialize)]
    struct Line<A> {
        index: usize,
        reply: A,
    }
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io("spark engine: the driver wrote no replies", e))?;
    let mut slots: Vec<Option<A>> = (0..n).map(|_| None).collect();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::io("spark engine: cannot read replies", e))?;
        let l: Line<A> = serde_json::from_str(&line)
            .map_err(|e| Error::internal("spark engine: malformed reply").with_source(e))?;
        if let Some(slot) = slots.get_mut(l.index) {
            *slot = Some(l.reply);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| Error::internal(format!("spark engine: no reply for request {i}")))
        })
        .collect()
}
