//! # aiopslab-core
//!
//! The core of aiopslab: everything needed to queue AIOpsLab problem runs
//! and execute them on a fleet of workers, with no SQL, HTTP or Kubernetes
//! inside.
//!
//! - Domain types: [`Task`], [`TaskStatus`], [`NewTask`] (validated into a
//!   [`TaskSpec`]), [`TaskResult`], [`LogEntry`], [`Worker`], [`Trajectory`].
//! - The store, as one trait per role ([`store`]): [`WorkerQueue`] (what a
//!   worker needs), [`TaskApi`] (what a client needs), [`FleetView`] and
//!   [`Housekeeping`] (the operator's side), [`EpisodeExport`] (the RL
//!   export), [`WebhookOutbox`] (the deliverer); [`TaskStore`] is all of
//!   them. Durable state, atomic conditional transitions, lease tokens.
//! - Fair share between [`experiment`]s: per-experiment concurrency limits
//!   and round-robin service among tasks of equal priority.
//! - [`Scheduler`] (who gets which task), [`run_sweeper`] (the periodic
//!   sweep) and [`ClusterBackend`] (where a task runs).
//! - The worker runtime ([`runtime`]): register, heartbeat, claim, run, stream
//!   logs, finish, reset, repeat.
//! - [`MemoryStore`], the embedded default store, and [`SimulatedBackend`],
//!   which runs episodes without a cluster.
//! - The AIOpsLab problem [`catalog`].
//! - With feature `testkit`, a conformance suite per store role; with feature
//!   `process`, what a hosting program does at start ([`process`]).

#![warn(missing_docs)]

pub mod backend;
pub mod batch;
pub mod catalog;
pub mod error;
pub mod events;
pub mod experiment;
pub mod export;
pub mod group;
pub mod log;
pub mod memory;
pub mod outcome;
pub mod policy;
#[cfg(feature = "process")]
pub mod process;
pub mod query;
pub mod retry;
pub mod rotation;
pub mod runtime;
pub mod sanitize;
pub mod scheduler;
pub mod simulated;
pub mod store;
pub mod task;
pub mod trajectory;
pub mod webhook;
pub mod worker;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::{ClusterBackend, LogSink, RunContext, RunReport};
pub use batch::{BatchSpec, CreatedBatch, GroupId, IdempotencyKey, NewBatch};
pub use catalog::{Application, Problem, TaskType};
pub use error::{BackendError, StoreError, ValidationError};
pub use events::{StoreEvent, RESYNC_WHILE_DOWN};
pub use experiment::{Experiment, ExperimentSettings, NewExperimentSettings};
pub use export::{Episode, ExportCursor, ExportFilter, ExportRecord};
pub use group::{Group, GroupPolicy, GroupStatus};
pub use log::{LogContext, LogEntry, LogLevel, LogQuery, NewLogEntry};
pub use memory::{MemoryOptions, MemoryStore};
pub use outcome::{model_version_of, Outcome};
pub use policy::LeasePolicy;
pub use query::{Page, StoreStats, SweepReport, TaskFilter, TaskPage, TaskSort, WorkerFilter, WorkerPage};
pub use runtime::{RuntimeError, WorkerConfig, WorkerPool, WorkerRuntime};
pub use scheduler::{run_sweeper, DefaultScheduler, Scheduler};
pub use simulated::{FailureMode, SimulatedBackend, SimulatedConfig};
pub use store::{
    ClaimRequest, EpisodeExport, Experiments, ExportRequest, FinalReport, FinalReports, FleetView, Housekeeping,
    LeaseState, StoreParts, StoreResult, TaskApi, TaskQuery, TaskStore, WebhookOutbox, WorkerQueue, MAX_CLAIM_BATCH,
};
pub use task::{
    CancelOutcome, ErrorDetails, JsonObject, LeaseToken, NewTask, Task, TaskId, TaskOutcome, TaskParameters,
    TaskResult, TaskSpec, TaskStatus, TerminalStatus,
};
pub use trajectory::{reward_from_evaluation, LlmCall, TokenUsage, Trajectory, TrajectoryMessage};
pub use webhook::{WebhookAttempt, WebhookAttemptReport, WebhookDelivery, WebhookStatus};
pub use worker::{HeartbeatAck, Worker, WorkerCapabilities, WorkerHeartbeat, WorkerRegistration, WorkerStatus};
