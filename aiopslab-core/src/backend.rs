//! The [`ClusterBackend`] trait: where a task runs.
//!
//! The worker runtime calls [`ClusterBackend::prepare`] once at start, then
//! [`ClusterBackend::run`] per task with a [`RunContext`] (log sink,
//! cancellation token, deadline), [`ClusterBackend::reset`] between tasks and
//! [`ClusterBackend::shutdown`] at the end.

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::BackendError;
use crate::log::{LogLevel, NewLogEntry};
use crate::task::{ErrorDetails, LeaseToken, Task, TaskResult, TerminalStatus};
use crate::trajectory::Trajectory;

/// Where a run writes its log entries. The worker runtime drains them in
/// batches into the store. Sending waits when the buffer is full, so a slow
/// store slows a chatty run instead of growing memory without bound.
#[derive(Debug, Clone)]
pub struct LogSink {
    sender: mpsc::Sender<NewLogEntry>,
}

impl LogSink {
    /// A sink and the receiver the runtime drains, holding up to `capacity` entries.
    pub fn channel(capacity: usize) -> (LogSink, mpsc::Receiver<NewLogEntry>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (LogSink { sender }, receiver)
    }

    /// Writes one entry. If the runtime has stopped listening the entry is
    /// dropped: the run is being torn down and nobody can store it.
    pub async fn log(&self, entry: NewLogEntry) {
        let _ = self.sender.send(entry).await;
    }

    /// Writes an `info` entry.
    pub async fn info(&self, message: impl Into<String>) {
        self.log(NewLogEntry::new(LogLevel::Info, message)).await;
    }

    /// Writes a `warning` entry.
    pub async fn warning(&self, message: impl Into<String>) {
        self.log(NewLogEntry::new(LogLevel::Warning, message)).await;
    }

    /// Writes an `error` entry.
    pub async fn error(&self, message: impl Into<String>) {
        self.log(NewLogEntry::new(LogLevel::Error, message)).await;
    }
}

/// Everything a run gets besides the task.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The worker running it.
    pub worker_id: String,
    /// The lease the worker holds.
    pub lease: LeaseToken,
    /// Where to write log entries.
    pub logs: LogSink,
    /// Fires when the task is cancelled or the worker shuts down; the run
    /// must stop promptly and clean up what it started.
    pub cancel: CancellationToken,
    /// `started_at + timeout_minutes`: the run must end by then. The runtime
    /// reports `timeout` if the backend has not returned shortly after.
    pub deadline: Instant,
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunReport {
    /// The terminal status to record.
    pub status: TerminalStatus,
    /// What the run produced.
    pub result: Option<TaskResult>,
    /// Why it did not complete.
    pub error: Option<ErrorDetails>,
    /// The episode, saved before the task is finished.
    pub trajectory: Option<Trajectory>,
}

impl RunReport {
    /// A completed run.
    pub fn completed(result: TaskResult, trajectory: Option<Trajectory>) -> Self {
        Self {
            status: TerminalStatus::Completed,
            result: Some(result),
            error: None,
            trajectory,
        }
    }

    /// A run that ended without completing, with a code and a reason.
    pub fn ended(status: TerminalStatus, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            result: None,
            error: Some(ErrorDetails::new(code, message)),
            trajectory: None,
        }
    }

    /// An infrastructure failure.
    pub fn failed(code: &str, message: impl Into<String>) -> Self {
        Self::ended(TerminalStatus::Failed, code, message)
    }
}

/// A place tasks run: a Kind cluster, a simulator, or a user's own.
#[async_trait]
pub trait ClusterBackend: Send + Sync + 'static {
    /// A short name for logs and worker metadata (`kind`, `simulated`).
    fn name(&self) -> &str;

    /// Makes the backend ready; called once when the worker starts. An error
    /// stops the worker with its message, which should say what to fix.
    async fn prepare(&self) -> Result<(), BackendError>;

    /// Runs one task to its end. Must honour `ctx.cancel` and `ctx.deadline`
    /// and report the matching status (`cancelled`, `timeout`).
    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport;

    /// Brings the cluster back to a clean state between tasks.
    async fn reset(&self) -> Result<(), BackendError>;

    /// Releases what `prepare` acquired; called once when the worker stops.
    async fn shutdown(&self) -> Result<(), BackendError>;
}
