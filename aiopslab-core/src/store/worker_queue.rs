//! [`WorkerQueue`]: what a worker needs from the store — and nothing else.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::events::StoreEvent;
use crate::log::NewLogEntry;
use crate::task::{LeaseToken, Task, TaskId, TaskOutcome};
use crate::trajectory::Trajectory;
use crate::worker::{HeartbeatAck, Worker, WorkerHeartbeat, WorkerRegistration};

/// What a worker asks for when it claims a task: build it with
/// [`ClaimRequest::new`] and narrow it with [`for_problems`](Self::for_problems)
/// or [`for_task`](Self::for_task) (non-exhaustive: it may gain fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
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
    /// At most this many tasks for one [`claim_many`](WorkerQueue::claim_many) (default 1, at most
    /// [`MAX_CLAIM_BATCH`]): a worker with several free slots fills them in one round trip. [`claim`]
    /// (WorkerQueue::claim) always claims one.
    #[serde(default = "one_task")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 64, default = 1))]
    pub max_tasks: u32,
}

/// The most tasks one [`claim_many`](WorkerQueue::claim_many) hands out.
pub const MAX_CLAIM_BATCH: u32 = 64;

fn one_task() -> u32 {
    1
}

impl ClaimRequest {
    /// A claim by `worker_id` for any pending task of `backend_type`.
    pub fn new(worker_id: impl Into<String>, backend_type: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            backend_type: backend_type.into(),
            supported_problems: None,
            task_id: None,
            max_tasks: 1,
        }
    }

    /// The same claim, for up to `max_tasks` tasks at once (see [`WorkerQueue::claim_many`]).
    pub fn up_to(mut self, max_tasks: u32) -> Self {
        self.max_tasks = max_tasks;
        self
    }

    /// The same claim, for tasks of these problems only (`None`: any problem).
    pub fn for_problems(mut self, supported_problems: Option<Vec<String>>) -> Self {
        self.supported_problems = supported_problems;
        self
    }

    /// The same claim, for exactly this task (`None`: the best match).
    pub fn for_task(mut self, task_id: Option<TaskId>) -> Self {
        self.task_id = task_id;
        self
    }

    /// Checks the worker id (see
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN)), the backend type and `max_tasks`.
    pub fn validate(&self) -> Result<(), crate::error::ValidationError> {
        crate::worker::validate_worker_id("worker_id", &self.worker_id)?;
        crate::task::identifier("backend_type", &self.backend_type)?;
        if !(1..=MAX_CLAIM_BATCH).contains(&self.max_tasks) {
            return Err(crate::error::ValidationError::new(
                "max_tasks",
                format!("must be between 1 and {MAX_CLAIM_BATCH}"),
            ));
        }
        Ok(())
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

/// The worker side of the store: a worker registers, claims, keeps its
/// leases alive, streams logs, saves the trajectory and finishes; the
/// runtime ([`WorkerRuntime`](crate::WorkerRuntime)) asks for this trait
/// alone, and a remote worker's store (`HttpStore`) implements exactly it.
///
/// Rules: every method is one atomic, conditional operation; the writes on
/// a task carry the [`LeaseToken`] of the claim and are refused with
/// [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) once the task is
/// no longer running under that attempt; what is persisted is
/// [sanitized](crate::sanitize) on the way in. Checked by the worker-queue
/// conformance suite (`testkit`, `worker_queue_conformance_suite!`).
#[async_trait]
pub trait WorkerQueue: Send + Sync + 'static {
    /// Registers (or re-registers) a worker. The id must match
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN)
    /// ([`StoreError::Invalid`](crate::StoreError::Invalid) naming `id` otherwise).
    ///
    /// While a live worker holds the id: a registration naming another
    /// [`instance_id`](WorkerRegistration::instance_id) than the live one
    /// takes the id over at once, and every task running under it is taken
    /// back as if its lease had expired (requeued while retries remain,
    /// `failed` otherwise, error code `worker_lost`; `cancelled` when a
    /// client asked); the same instance registering again changes nothing
    /// it holds; without instance ids on both sides the registration is
    /// [`StoreError::WorkerAlive`](crate::StoreError::WorkerAlive).
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker>;

    /// Records a worker's sign of life, extends the leases of its running
    /// tasks, and tells it which of them were cancelled. An id that fails
    /// [`WORKER_ID_PATTERN`](crate::worker::WORKER_ID_PATTERN) is
    /// [`StoreError::Invalid`](crate::StoreError::Invalid) naming `worker_id`; an unknown worker
    /// [`StoreError::NotFound`](crate::StoreError::NotFound); an instance that was taken over
    /// [`StoreError::WorkerSuperseded`](crate::StoreError::WorkerSuperseded) (nothing changes then).
    ///
    /// With [`running_task_ids`](WorkerHeartbeat::running_task_ids), only
    /// those leases are extended; every other task running under the id is
    /// handed back in the same step (pending again whatever its retries,
    /// error code `not_held`; `cancelled` when a client asked) and named in
    /// [`HeartbeatAck::requeued_task_ids`]; listed tasks no longer running
    /// under the id are named in [`HeartbeatAck::lost_task_ids`].
    ///
    /// An idle worker's heartbeat may come back with a task already claimed
    /// for it in [`HeartbeatAck::next_task`] (as by [`claim`](Self::claim));
    /// the worker must run it. `MemoryStore` and `PgStore` never do that; a
    /// server answering `HttpStore` does, through its scheduler.
    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck>;

    /// Marks a worker offline at once (graceful shutdown).
    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()>;

    /// Atomically moves the best matching pending task to `running` for this
    /// worker; `backend_type` must match and `supported_problems`, when given,
    /// must contain the problem. Sets `worker_id`, `started_at`, bumps
    /// `attempt` and sets the lease. `Ok(None)` when nothing matches. A task is
    /// never claimed twice.
    ///
    /// The best task (fair share between [experiments](crate::experiment)):
    ///
    /// 1. Highest priority first: fairness never starts a lower-priority task
    ///    before a higher-priority one that may start.
    /// 2. Never a task of an experiment that already runs its `max_running`
    ///    tasks (counted across backend types, atomically: racing claimers
    ///    never overshoot); an experiment no one configured is unlimited.
    /// 3. Among the tasks of that priority, the experiment served least
    ///    recently (round-robin; tasks without an experiment take their turn as
    ///    one class, and classes never served go first, oldest head first).
    /// 4. Within the experiment, the oldest task (then the lowest id).
    ///
    /// Without experiments this is exactly priority, then oldest.
    ///
    /// Only a registered, live worker claims: an id that fails
    /// [`ClaimRequest::validate`] is [`StoreError::Invalid`](crate::StoreError::Invalid) (field
    /// `worker_id`), an unknown worker [`StoreError::NotFound`](crate::StoreError::NotFound) (entity
    /// `"worker"`), and an offline one (deregistered, or silent for longer
    /// than the policy's `worker_offline_after`) [`StoreError::Invalid`](crate::StoreError::Invalid)
    /// naming `worker_id` and saying so; nothing is claimed then.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>>;

    /// Claims up to [`request.max_tasks`](ClaimRequest::max_tasks) tasks, each as by [`claim`](Self::claim)
    /// (same order, same limits, same refusals: several slots filled at once interleave the experiments as
    /// successive claims would), best first; an empty list when nothing matches. A worker with several free
    /// slots fills them in one call. The default claims one at a time and stops at the first empty answer; a
    /// store that can claim several in one statement (as `PgStore` does) or one round trip (`HttpStore`)
    /// overrides it. An error after some tasks were claimed returns those tasks (they run under the worker's
    /// name and must not be stranded), and the error is logged.
    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        request.validate()?;
        let mut claimed = Vec::new();
        let one = request.clone().up_to(1);
        while claimed.len() < request.max_tasks as usize {
            match self.claim(&one).await {
                Ok(Some(task)) => claimed.push(task),
                Ok(None) => break,
                Err(error) if claimed.is_empty() => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, claimed = claimed.len(), "claim failed after some tasks were claimed");
                    break;
                }
            }
            if request.task_id.is_some() {
                break;
            }
        }
        Ok(claimed)
    }

    /// Extends the lease of one running task.
    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState>;

    /// Appends a batch of log entries to a running task, in order.
    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()>;

    /// Saves (replaces) the trajectory of a running task.
    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()>;

    /// Moves a running task to a terminal status with its result. A `failed`
    /// outcome with retries left (`attempt <= max_retries`) requeues the task
    /// instead. Replaying the same finish for the same attempt after it landed
    /// returns the task unchanged (a lost acknowledgement is safe to retry).
    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task>;

    /// The [`FinalReports`](super::FinalReports) capability (a run's last logs, trajectory and outcome in one
    /// all-or-nothing write), when this store has it. `None`, the default: the runtime sends the three calls.
    fn final_reports(&self) -> Option<&dyn super::FinalReports> {
        None
    }

    /// Wake-ups pushed by the store (new work, cancel requests), when it has
    /// them. `None`, the default, means workers rely on polling alone. A
    /// lagging or closed receiver is not an error: polling still covers it.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}
