//! The split module: a [`Job`](crate::Job) becomes a [`Plan`], a list of [`TaskSpec`]s.
//!
//! Plans are deterministic and serialisable: the same job over the same data plans the same tasks
//! with the same ids, and a task spec is all a worker (here or on a Spark executor) needs besides
//! the job. Invariant: the tasks of a plan cover every byte of every file and every row of every
//! table exactly once (file-tree ranges partition the whole walk order, table ranges the whole key
//! space, with unbounded first and last ranges so that nothing added later falls between them).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job::Job;

pub use crate::catalog::{TaskId, TaskKind};

/// One map task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Deterministic id.
    pub id: TaskId,
    /// What it reads.
    #[serde(flatten)]
    pub kind: TaskKind,
    /// About how many bytes it reads.
    pub estimated_bytes: u64,
    /// About how many files or rows it reads.
    pub estimated_items: u64,
    /// The database snapshot every task of the run reads (not part of the task's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When the backup run started: a task that stores its data file writes a receipt under it,
    /// which a resumed run reuses (not part of the task's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started: Option<String>,
    /// A file-tree task's fingerprint of the metadata of what it reads (not part of its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A file-tree range's entry in the parent snapshot, when the task stores only what changed
    /// since: its data file and deltas are kept, and a delta is added (not part of its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<crate::catalog::TaskEntry>>,
}

/// The tasks of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The tasks, in the order they were planned.
    pub tasks: Vec<TaskSpec>,
    /// What the source's selection left out, for people (`exclude`d entries, a node's directory
    /// inside the tree).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    /// Plans `job` by reading its source's structure (not its data).
    pub fn new(job: &Job) -> Result<Plan> {
        Plan::after(job, None)
    }

    /// Plans `job` after the snapshot `parent`, whose file-tree ranges are kept where they can
    /// be, so that a range can store only what changed in it.
    pub fn after(job: &Job, parent: Option<&crate::catalog::Manifest>) -> Result<Plan> {
        let planned = crate::source::kind_of(job).plan(job, parent)?;
        let tasks = planned
            .tasks
            .into_iter()
            .map(|p| {
                Ok(TaskSpec {
                    id: TaskId::derive(job, &p.kind)?,
                    kind: p.kind,
                    estimated_bytes: p.bytes,
                    estimated_items: p.items,
                    snapshot: None,
                    run_started: None,
                    fingerprint: p.fingerprint,
                    parent: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Plan {
            tasks,
            notes: planned.notes,
        })
    }

    /// The sum of the tasks' estimated bytes.
    pub fn estimated_bytes(&self) -> u64 {
        self.tasks.iter().map(|t| t.estimated_bytes).sum()
    }
}
