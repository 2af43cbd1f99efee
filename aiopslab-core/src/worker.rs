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
        Self {
            max_parallel_tasks: one(),
            supported_problems: None,
        }
    }
}

/// The body of `POST /workers/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerRegistration {
    /// The worker id (`worker-001-kind`).
    #[cfg_attr(
        feature = "utoipa",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
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
        }
    }

    /// Checks the id, backend type and capabilities.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, value) in [("id", &self.id), ("backend_type", &self.backend_type)] {
            if value.trim().is_empty() {
                return Err(ValidationError::new(field, "must be a non-empty string"));
            }
            if value.len() > crate::task::limits::MAX_ID_LEN {
                return Err(ValidationError::new(field, "must be at most 256 characters"));
            }
        }
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
    /// When it (last) registered.
    pub registered_at: DateTime<Utc>,
    /// Its last sign of life (store clock).
    pub last_heartbeat: DateTime<Utc>,
}

/// A worker's periodic sign of life, which also extends the leases of its running tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerHeartbeat {
    /// Who is beating.
    pub worker_id: String,
    /// Idle or busy (offline is refused).
    #[cfg_attr(feature = "utoipa", schema(value_type = String, pattern = "^(idle|busy)$"))]
    pub status: WorkerStatus,
    /// The task it runs now, if any.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub current_task_id: Option<TaskId>,
}

/// The store's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
}
