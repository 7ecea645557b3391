//! Engines: where a run's work requests execute. [`Engine::for_job`] is the one place a job's
//! engine is chosen (and a Spark master required); [`Engine::run`] is the one way work is sent.
//!
//! `local` runs each request in this process on a bounded pool of threads; `spark` writes the
//! requests as JSON lines, runs `spark-submit` with the small PySpark driver, whose executors pipe
//! them to `coldvault worker`, and reads one reply per request back. Both end in the same function
//! for each request ([`crate::worker`]); they differ only in transport. The engine knows nothing of
//! what a request means: it is generic over the request and reply types.

pub mod spark;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{EngineKind, Job};
use spark::SparkEngine;

/// Where a run's work executes.
#[derive(Debug)]
pub enum Engine<'a> {
    /// A pool of `parallel` threads in this process.
    Local {
        /// Requests running at once.
        parallel: usize,
    },
    /// The executors of a Spark cluster.
    Spark(SparkEngine<'a>),
}

impl<'a> Engine<'a> {
    /// The engine `job` asks for, with `parallel` requests at once on this machine.
    pub fn for_job(job: &'a Job, parallel: usize) -> Result<Engine<'a>> {
        Ok(match job.run.engine {
            EngineKind::Local => Engine::Local {
                parallel: parallel.max(1),
            },
            EngineKind::Spark => Engine::Spark(SparkEngine::new(job, job.run.spark.master()?)),
        })
    }

    /// The local engine's parallelism; an error saying `why` the work cannot run elsewhere.
    pub fn require_local(&self, why: &str) -> Result<usize> {
        match self {
            Engine::Local { parallel } => Ok(*parallel),
            Engine::Spark(_) => Err(Error::config(why.to_owned())),
        }
    }

    /// Runs every request and returns the replies in request order. Locally `here` runs each one
    /// in this process; on Spark each goes to an executor's `coldvault worker`, which runs the same
    /// function. `work_dir` holds the Spark engine's request, reply and log files.
    pub fn run<Q, A>(
        &self,
        requests: &[Q],
        work_dir: &Path,
        here: impl Fn(&Q) -> A + Sync,
    ) -> Result<Vec<A>>
    where
        Q: Serialize + Sync,
        A: DeserializeOwned + Send,
    {
        match self {
            Engine::Local { parallel } => Ok(crate::util::map_parallel(requests, *parallel, here)),
            Engine::Spark(spark) => spark.run(requests, work_dir),
        }
    }
}
