//! Workers: processes that each own one cluster and run tasks from the queue.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::ValidationError;
use crate::task::{JsonObject, TaskId};

/// What a worker is doing, as the store last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Alive with a free slot.
    Idle,
    /// Alive with every slot taken.
    Busy,
    /// Silent for longer than the offline threshold, or shut down.
    Offline,
}

impl WorkerStatus {
    /// Every status.
    pub const ALL: [WorkerStatus; 3] = [WorkerStatus::Idle, WorkerStatus::Busy, WorkerStatus::Offline];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Busy => "busy",
            WorkerStatus::Offline => "offline",
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    format!("unknown worker status {s:?}; expected idle, busy or offline"),
                )
            })
    }
}

/// What a worker can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct WorkerCapabilities {
    /// How many tasks it runs at once (one Kind cluster runs one problem at a time, so usually 1).
    #[serde(default = "one")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 64))]
    pub max_parallel_tasks: u32,
    /// When given, the only problem ids it accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_problems: Option<Vec<String>>,
}

fn one() -> u32 {
    1
}

impl Default for WorkerCapabilities {
    fn default() -> Self {
        Self::new(one())
    }
}

impl WorkerCapabilities {
    /// `max_parallel_tasks` at once, any problem.
    pub fn new(max_parallel_tasks: u32) -> Self {
        Self {
            max_parallel_tasks,
            supported_problems: None,
        }
    }

    /// The same capabilities, only for these problems (`None`: any).
    pub fn with_supported_problems(mut self, supported_problems: Option<Vec<String>>) -> Self {
        self.supported_problems = supported_problems;
        self
    }
}

/// The body of `POST /workers/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerRegistration {
    /// The worker id (`worker-001-kind`): see [`WORKER_ID_PATTERN`].
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub id: String,
    /// Only tasks of this backend type are routed to it.
    #[serde(default = "default_backend_type")]
    #[cfg_attr(
        feature = "utoipa",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub backend_type: String,
    /// What it can run.
    #[serde(default)]
    pub capabilities: WorkerCapabilities,
    /// Free-form: `host`, `version`, `kind_cluster`.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metadata: JsonObject,
    /// Names this process (a fresh value each start, e.g. a UUID; same
    /// pattern as the id). A registration whose instance differs from the
    /// live registration's takes the id over at once: the previous instance
    /// is gone (it was restarted) or must stop (its heartbeats are refused
    /// as [`StoreError::WorkerSuperseded`](crate::StoreError::WorkerSuperseded)),
    /// and the tasks it held go back to the queue. Without one, a live id is
    /// refused as [`StoreError::WorkerAlive`](crate::StoreError::WorkerAlive)
    /// until it has been silent for the offline threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub instance_id: Option<String>,
}

fn default_backend_type() -> String {
    crate::task::limits::DEFAULT_BACKEND_TYPE.to_string()
}

impl WorkerRegistration {
    /// A registration with default capabilities and no metadata.
    pub fn new(id: impl Into<String>, backend_type: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            backend_type: backend_type.into(),
            capabilities: WorkerCapabilities::default(),
            metadata: JsonObject::new(),
            instance_id: None,
        }
    }

    /// The same registration, naming this process's instance (see
    /// [`instance_id`](Self::instance_id)).
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// Checks the id (see [`WORKER_ID_PATTERN`]), backend type, capabilities
    /// and metadata.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_worker_id("id", &self.id)?;
        if let Some(instance_id) = &self.instance_id {
            validate_worker_id("instance_id", instance_id)?;
        }
        crate::task::identifier("backend_type", &self.backend_type)?;
        crate::task::json_object_fits("metadata", &self.metadata)?;
        if !(1..=64).contains(&self.capabilities.max_parallel_tasks) {
            return Err(ValidationError::new(
                "capabilities.max_parallel_tasks",
                format!("must be between 1 and 64, got {}", self.capabilities.max_parallel_tasks),
            ));
        }
        Ok(())
    }
}

/// A registered worker as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Worker {
    /// Its id.
    pub id: String,
    /// The backend type it serves.
    pub backend_type: String,
    /// Idle, busy or offline.
    pub status: WorkerStatus,
    /// What it can run.
    pub capabilities: WorkerCapabilities,
    /// Free-form metadata from registration.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metadata: JsonObject,
    /// The task it reported running in its last heartbeat.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub current_task_id: Option<TaskId>,
    /// Tasks it finished as completed.
    pub tasks_completed: u64,
    /// Tasks it finished as failed or timed out.
    pub tasks_failed: u64,
    /// The instance of its live registration, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// When it (last) registered.
    pub registered_at: DateTime<Utc>,
    /// Its last sign of life (store clock).
    pub last_heartbeat: DateTime<Utc>,
}

impl Worker {
    /// The worker a `registration` makes at `now`: idle, holding nothing,
    /// with the counters it carried over from an earlier registration of the
    /// same id (`(0, 0)` for a new one).
    pub fn registered(registration: WorkerRegistration, counters: (u64, u64), now: DateTime<Utc>) -> Self {
        let (tasks_completed, tasks_failed) = counters;
        Self {
            id: registration.id,
            backend_type: registration.backend_type,
            status: WorkerStatus::Idle,
            capabilities: registration.capabilities,
            metadata: registration.metadata,
            current_task_id: None,
            tasks_completed,
            tasks_failed,
            instance_id: registration.instance_id,
            registered_at: now,
            last_heartbeat: now,
        }
    }
}

/// The pattern of worker ids, in registration, heartbeat and claim alike:
/// 1–128 ASCII letters, digits, `-`, `_` and `.`, as in `worker-001-kind`.
pub const WORKER_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// The longest worker id.
pub const MAX_WORKER_ID_LEN: usize = 128;

/// Checks a worker id against [`WORKER_ID_PATTERN`]; the error names `field`.
pub fn validate_worker_id(field: &str, id: &str) -> Result<(), ValidationError> {
    crate::task::ascii_name(field, id, MAX_WORKER_ID_LEN, WORKER_ID_PATTERN, "worker-001-kind")
}

/// A worker's periodic sign of life, which also extends the leases of its running tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerHeartbeat {
    /// Who is beating: see [`WORKER_ID_PATTERN`].
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub worker_id: String,
    /// Idle or busy (offline is refused).
    #[cfg_attr(feature = "utoipa", schema(value_type = String, pattern = "^(idle|busy)$"))]
    pub status: WorkerStatus,
    /// The task it runs now, if any.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub current_task_id: Option<TaskId>,
    /// Every task the worker holds (runs, or is reporting). When given, the
    /// store renews exactly these leases and hands back at once every other
    /// task running under this worker's id: one whose claim reply never
    /// reached the worker would otherwise sit `running` until its timeout.
    /// Without it, every task running under the id is renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Vec<uuid::Uuid>>))]
    pub running_task_ids: Option<Vec<TaskId>>,
    /// The instance that registered (see
    /// [`WorkerRegistration::instance_id`]). When given and the id has since
    /// been taken over by another instance, the heartbeat is refused with
    /// [`StoreError::WorkerSuperseded`](crate::StoreError::WorkerSuperseded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub instance_id: Option<String>,
}

impl WorkerHeartbeat {
    /// The same value with `current_task_id` set (the task it runs now, if any).
    pub fn with_current_task_id(mut self, current_task_id: Option<TaskId>) -> Self {
        self.current_task_id = current_task_id;
        self
    }

    /// The same value with `running_task_ids` set (every task the worker holds (runs, or is reporting). When given, the).
    pub fn with_running_task_ids(mut self, running_task_ids: Option<Vec<TaskId>>) -> Self {
        self.running_task_ids = running_task_ids;
        self
    }

    /// A heartbeat of `worker_id` with no task, no task list and no instance.
    pub fn new(worker_id: impl Into<String>, status: WorkerStatus) -> Self {
        Self {
            worker_id: worker_id.into(),
            status,
            current_task_id: None,
            running_task_ids: None,
            instance_id: None,
        }
    }
}

impl WorkerHeartbeat {
    /// Checks the worker id (see [`WORKER_ID_PATTERN`]) and that the status
    /// is idle or busy.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_worker_id("worker_id", &self.worker_id)?;
        if let Some(instance_id) = &self.instance_id {
            validate_worker_id("instance_id", instance_id)?;
        }
        if self
            .running_task_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_RUNNING_TASK_IDS)
        {
            return Err(ValidationError::new(
                "running_task_ids",
                format!("at most {MAX_RUNNING_TASK_IDS} ids (a worker runs at most 64 tasks at once)"),
            ));
        }
        if self.status == WorkerStatus::Offline {
            return Err(ValidationError::new(
                "status",
                "a heartbeat reports idle or busy; a worker that stops deregisters instead",
            ));
        }
        Ok(())
    }
}

/// The most ids a heartbeat's `running_task_ids` may list: a worker runs at
/// most 64 tasks, and a few more may be finishing their reports.
pub const MAX_RUNNING_TASK_IDS: usize = 256;

/// The store's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct HeartbeatAck {
    /// Always true on success.
    pub acknowledged: bool,
    /// Running tasks of this worker that a client asked to cancel.
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<uuid::Uuid>))]
    pub cancelled_task_ids: Vec<TaskId>,
    /// The new lease expiry of this worker's running tasks, if it has any.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// A task already claimed for this worker by whoever answered the
    /// heartbeat (the HTTP server does this for idle workers; stores never
    /// do). The worker must run it: it is `running` under its name.
    #[serde(default)]
    pub next_task: Option<crate::task::Task>,
    /// Tasks that were running under this worker's id but missing from the
    /// heartbeat's `running_task_ids`: the store handed them back (pending
    /// again, or cancelled when a client had asked to cancel them).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<uuid::Uuid>))]
    pub requeued_task_ids: Vec<TaskId>,
    /// Tasks the heartbeat's `running_task_ids` listed that are no longer
    /// running under this worker (finished, requeued, timed out or
    /// cancelled meanwhile): a run still going for one of them has lost its
    /// lease and must stop without writing anything more.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<uuid::Uuid>))]
    pub lost_task_ids: Vec<TaskId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_follow_one_pattern() {
        for good in ["worker-001-kind", "w", "a.b_c-D9", &"x".repeat(MAX_WORKER_ID_LEN)] {
            assert!(validate_worker_id("id", good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "Bad Id!",
            "tab\there",
            "nul\0",
            "ünï",
            "a/b",
            &"x".repeat(MAX_WORKER_ID_LEN + 1),
        ] {
            let err = validate_worker_id("id", bad).unwrap_err();
            assert_eq!(err.field, "id", "{bad:?}");
            assert!(
                err.message.contains(WORKER_ID_PATTERN),
                "the error says the pattern: {err}"
            );
        }
    }

    #[test]
    fn registration_and_heartbeat_check_the_id() {
        let err = WorkerRegistration::new("Bad Id!", "default").validate().unwrap_err();
        assert_eq!(err.field, "id");
        let err = WorkerRegistration::new("w1", "bad\0type").validate().unwrap_err();
        assert_eq!(err.field, "backend_type");
        assert!(WorkerRegistration::new("worker-001-kind", "kind").validate().is_ok());
        let beat = |id: &str, status| WorkerHeartbeat::new(id, status);
        assert_eq!(
            beat("Bad Id!", WorkerStatus::Idle).validate().unwrap_err().field,
            "worker_id"
        );
        assert_eq!(
            beat("w1", WorkerStatus::Offline).validate().unwrap_err().field,
            "status"
        );
        assert!(beat("w1", WorkerStatus::Busy).validate().is_ok());
    }
}
