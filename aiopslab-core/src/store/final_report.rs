//! [`FinalReports`]: a store capability — the end of a run (its last log entries, its trajectory and its
//! outcome) written in one step.
//!
//! Why: a run that ends sends three writes (the rest of its log, the trajectory, the finish). Each is a round
//! trip and a commit; for short runs they were most of a worker's store traffic. A store that can write the
//! three at once offers this capability through [`WorkerQueue::final_reports`](super::WorkerQueue::final_reports),
//! and the runtime then sends one call per run. A store that cannot simply does not offer it (the default), and
//! the runtime sends the three calls as before.

use async_trait::async_trait;

use super::StoreResult;
use crate::log::NewLogEntry;
use crate::task::{LeaseToken, Task, TaskOutcome};
use crate::trajectory::Trajectory;

/// Everything a run sends when it ends, in the order it is applied: the log entries it still held, its
/// trajectory (replacing any saved before) and its outcome. Build it with [`FinalReport::new`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FinalReport {
    /// The run's last log entries, appended in order before the task turns terminal.
    pub logs: Vec<NewLogEntry>,
    /// The run's trajectory, when it has one.
    pub trajectory: Option<Trajectory>,
    /// The terminal status and result, as for [`WorkerQueue::finish`](super::WorkerQueue::finish).
    pub outcome: TaskOutcome,
}

impl FinalReport {
    /// A report of `outcome` with no log entries and no trajectory.
    pub fn new(outcome: TaskOutcome) -> Self {
        Self {
            logs: Vec::new(),
            trajectory: None,
            outcome,
        }
    }

    /// The same report, with these last log entries.
    pub fn with_logs(mut self, logs: Vec<NewLogEntry>) -> Self {
        self.logs = logs;
        self
    }

    /// The same report, with this trajectory.
    pub fn with_trajectory(mut self, trajectory: Option<Trajectory>) -> Self {
        self.trajectory = trajectory;
        self
    }
}

/// Writes a run's [`FinalReport`] in one step: the effect of
/// [`append_logs`](super::WorkerQueue::append_logs), [`save_trajectory`](super::WorkerQueue::save_trajectory)
/// and [`finish`](super::WorkerQueue::finish) under the same lease, **all or nothing**.
///
/// Rules: a lease no longer held is [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) and writes
/// nothing; replaying a report whose finish already landed returns the task unchanged (as `finish` does) and
/// appends nothing again; any refusal (an invalid entry, a trajectory the store will not hold) writes nothing,
/// so the caller may send the parts one by one to find out which part was refused. Checked by the worker-queue
/// conformance suite (`final_report_*`) against every store that offers it.
#[async_trait]
pub trait FinalReports: Send + Sync {
    /// Appends `report.logs`, saves `report.trajectory` and finishes the task with `report.outcome`, at once.
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task>;
}
