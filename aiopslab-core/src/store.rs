//! The [`TaskStore`] trait: durable state and the only place state changes.
//!
//! Every method is one atomic, conditional operation. Worker writes carry a
//! [`LeaseToken`] and are refused with [`StoreError::LeaseLost`] once the task
//! is no longer running under that attempt, so a zombie worker can never
//! overwrite a newer state. Time comes from the store's own clock.
//!
//! Every store [sanitizes](crate::sanitize) what it persists on the way in
//! (a NUL becomes U+FFFD, ...), so a value reads back the same from any store
//! and no write fails for a character a database cannot hold.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use crate::error::StoreError;
use crate::events::StoreEvent;
use crate::export::{Episode, ExportCursor, ExportFilter};
use crate::log::{LogEntry, LogQuery, NewLogEntry};
use crate::query::{Page, StoreStats, SweepReport, TaskFilter, TaskPage, TaskSort, WorkerFilter, WorkerPage};
use crate::task::{CancelOutcome, LeaseToken, Task, TaskId, TaskOutcome, TaskSpec};
use crate::trajectory::Trajectory;
use crate::webhook::{WebhookAttemptReport, WebhookDelivery};
use crate::worker::{HeartbeatAck, Worker, WorkerHeartbeat, WorkerRegistration};

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a worker asks for when it claims a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    /// The claiming worker: registered and live (see
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN)).
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub worker_id: String,
    /// Only tasks of this backend type (the rule of a task's: not blank, at
    /// most 256 characters, no control characters).
    #[cfg_attr(
        feature = "utoipa",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub backend_type: String,
    /// When given, only tasks whose problem id is in this list.
    #[serde(default)]
    pub supported_problems: Option<Vec<String>>,
    /// When given, claim exactly this task (if it is pending and matches);
    /// lets a custom [`Scheduler`](crate::Scheduler) pick the task itself.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub task_id: Option<TaskId>,
}

impl ClaimRequest {
    /// Checks the worker id (see
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN)) and the backend type.
    pub fn validate(&self) -> Result<(), crate::error::ValidationError> {
        crate::worker::validate_worker_id("worker_id", &self.worker_id)?;
        crate::task::identifier("backend_type", &self.backend_type)
    }
}

/// The state of a lease after it was extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LeaseState {
    /// The new expiry.
    pub lease_expires_at: DateTime<Utc>,
    /// A client asked to cancel the task: the worker should stop and report `cancelled`.
    pub cancel_requested: bool,
}

/// Durable task and worker state. See the module docs for the guarantees.
///
/// Implemented by `MemoryStore` (here), `PgStore` (aiopslab-postgres) and the
/// HTTP client (aiopslab-http). The conformance suite (feature `testkit`)
/// checks any implementation against these rules.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Inserts a new `pending` task.
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task>;

    /// Inserts several tasks atomically: all of them or none.
    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>>;

    /// Reads one task; [`StoreError::NotFound`] when unknown.
    async fn get_task(&self, id: TaskId) -> StoreResult<Task>;

    /// Lists tasks matching `filter`, sorted, one page, with the total count.
    async fn list_tasks(&self, filter: &TaskFilter, sort: TaskSort, page: Page) -> StoreResult<TaskPage>;

    /// Cancels a task: pending → `cancelled` at once; running → cancel
    /// requested (the worker stops it); terminal → [`StoreError::AlreadyTerminal`].
    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome>;

    /// Atomically moves the best matching pending task to `running` for this
    /// worker: highest priority first, then oldest; `backend_type` must match
    /// and `supported_problems`, when given, must contain the problem. Sets
    /// `worker_id`, `started_at`, bumps `attempt` and sets the lease.
    /// `Ok(None)` when nothing matches. A task is never claimed twice.
    ///
    /// Only a registered, live worker claims: an id that fails
    /// [`ClaimRequest::validate`] is [`StoreError::Invalid`] (field
    /// `worker_id`), an unknown worker [`StoreError::NotFound`] (entity
    /// `"worker"`), and an offline one (deregistered, or silent for longer
    /// than the policy's `worker_offline_after`) [`StoreError::Invalid`]
    /// naming `worker_id` and saying so; nothing is claimed then.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>>;

    /// Extends the lease of one running task.
    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState>;

    /// Appends a batch of log entries to a running task, in order.
    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()>;

    /// Reads a task's log in append order; [`StoreError::NotFound`] for an unknown task.
    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>>;

    /// Saves (replaces) the trajectory of a running task.
    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()>;

    /// Reads a task's trajectory; `Ok(None)` when the task exists but has none.
    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>>;

    /// Moves a running task to a terminal status with its result. A `failed`
    /// outcome with retries left (`attempt <= max_retries`) requeues the task
    /// instead. Replaying the same finish for the same attempt after it landed
    /// returns the task unchanged (a lost acknowledgement is safe to retry).
    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task>;

    /// Registers (or re-registers) a worker. The id must match
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN)
    /// ([`StoreError::Invalid`] naming `id` otherwise).
    ///
    /// While a live worker holds the id: a registration naming another
    /// [`instance_id`](WorkerRegistration::instance_id) than the live one
    /// takes the id over at once, and every task running under it is taken
    /// back as if its lease had expired (requeued while retries remain,
    /// `failed` otherwise, error code `worker_lost`; `cancelled` when a
    /// client asked); the same instance registering again changes nothing
    /// it holds; without instance ids on both sides the registration is
    /// [`StoreError::WorkerAlive`].
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker>;

    /// Records a worker's sign of life, extends the leases of its running
    /// tasks, and tells it which of them were cancelled. An id that fails
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN) is
    /// [`StoreError::Invalid`] naming `worker_id`; an unknown worker
    /// [`StoreError::NotFound`]; an instance that was taken over
    /// [`StoreError::WorkerSuperseded`] (nothing changes then).
    ///
    /// With [`running_task_ids`](WorkerHeartbeat::running_task_ids), only
    /// those leases are extended; every other task running under the id is
    /// handed back in the same step (pending again whatever its retries,
    /// error code `not_held`; `cancelled` when a client asked) and named in
    /// [`HeartbeatAck::requeued_task_ids`]; listed tasks no longer running
    /// under the id are named in [`HeartbeatAck::lost_task_ids`].
    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck>;

    /// Marks a worker offline at once (graceful shutdown).
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()>;

    /// Reads one worker; [`StoreError::NotFound`] when unknown.
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker>;

    /// Lists workers matching `filter`, by id.
    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage>;

    /// One pass of housekeeping: marks overdue running tasks `timeout`,
    /// requeues or fails tasks whose lease expired, marks silent workers
    /// offline. Safe to run concurrently from several processes.
    async fn sweep(&self) -> StoreResult<SweepReport>;

    /// Counts for `/stats` and `/metrics`.
    async fn stats(&self) -> StoreResult<StoreStats>;

    /// Inserts `batch.specs` as pending tasks of group `batch.group_id`, in
    /// order, atomically: all of them or none.
    ///
    /// With an `idempotency` key the key is recorded in the same atomic step
    /// as the tasks. A later call with the same key and the same fingerprint
    /// creates nothing and returns the tasks the first call created, in their
    /// current state and first order, with `replayed = true`; the same key
    /// with a different fingerprint fails with
    /// [`StoreError::IdempotencyConflict`]. Two concurrent calls with one key
    /// create the tasks once: the other call replays (or conflicts). Keys are
    /// kept for the life of the store (they do not expire).
    /// [`create_tasks`](Self::create_tasks) is this with no group and no key.
    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch>;

    /// One page of the dataset export: tasks that have a trajectory and match
    /// `filter`, in `(created_at, id)` order, strictly after `after`, at most
    /// `limit` of them. An empty page means the walk is over; the next page
    /// starts after the last episode's [`Episode::cursor`].
    ///
    /// Episodes carry what an [`ExportRecord`](crate::ExportRecord) needs:
    /// the task as stored and its trajectory's messages, reward, evaluation
    /// and metadata. `llm_calls` is left empty: every call holds its whole
    /// request, so the calls are most of a trajectory's bytes and the export
    /// never uses them (read them with [`get_trajectory`](Self::get_trajectory)).
    async fn export_episodes(
        &self,
        filter: &ExportFilter,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Episode>>;

    /// Claims up to `limit` due webhook deliveries (pending, `next_attempt_at`
    /// at or before now), oldest first, and pushes their `next_attempt_at` to
    /// now + `lease` so no other deliverer takes them meanwhile; a deliverer
    /// that dies mid-delivery leaves them due again once the lease passes.
    /// Deliveries come with every attempt so far.
    ///
    /// Stores write a delivery into their outbox in the same atomic step as a
    /// task with a `callback_url` reaching a terminal status (finish, cancel
    /// of a pending task, sweep), with the task as serialized at that moment
    /// as its payload, status pending and `next_attempt_at` = now. A requeue
    /// is not terminal and writes nothing.
    async fn claim_webhooks(&self, limit: u32, lease: std::time::Duration) -> StoreResult<Vec<WebhookDelivery>>;

    /// Records one delivery attempt (numbered after the previous ones, stamped
    /// with the store's clock) and moves the delivery on: no error →
    /// `delivered` (`delivered_at` = now, no next attempt); an error with
    /// `retry_after` → still `pending`, due at now + `retry_after`; an error
    /// without → `failed`. A late report (from a deliverer whose lease
    /// lapsed) never undoes an outcome: it is recorded, but a delivered
    /// delivery stays delivered, and a failed one only ever moves to
    /// delivered. Returns the updated delivery; [`StoreError::NotFound`]
    /// (entity `"webhook"`) for an unknown id.
    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery>;

    /// Every webhook delivery of a task, oldest first, with its attempts;
    /// [`StoreError::NotFound`] for an unknown task.
    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>>;

    /// Wake-ups pushed by the store (new work, cancel requests), when it has
    /// them. `None`, the default, means workers rely on polling alone. A
    /// lagging or closed receiver is not an error: polling still covers it.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}
