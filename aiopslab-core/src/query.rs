//! Listing filters, sort orders, pages and statistics.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

use crate::batch::GroupId;
use crate::error::ValidationError;
use crate::task::{Task, TaskStatus};
use crate::worker::{Worker, WorkerStatus};

/// Filters of `GET /tasks`; every given field must match.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskFilter {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this problem.
    pub problem_id: Option<String>,
    /// Only tasks held (or last held) by this worker.
    pub worker_id: Option<String>,
    /// Only tasks of this backend type.
    pub backend_type: Option<String>,
    /// Only tasks of this batch group.
    pub group_id: Option<GroupId>,
    /// Only tasks of this experiment.
    pub experiment: Option<String>,
}

/// Builders: each field, one call (the struct is non-exhaustive).
impl TaskFilter {
    /// The same value with `status` set (only tasks in this status).
    pub fn with_status(mut self, status: Option<TaskStatus>) -> Self {
        self.status = status;
        self
    }

    /// The same value with `problem_id` set (only tasks of this problem).
    pub fn with_problem_id(mut self, problem_id: Option<String>) -> Self {
        self.problem_id = problem_id;
        self
    }

    /// The same value with `worker_id` set (only tasks held (or last held) by this worker).
    pub fn with_worker_id(mut self, worker_id: Option<String>) -> Self {
        self.worker_id = worker_id;
        self
    }

    /// The same value with `backend_type` set (only tasks of this backend type).
    pub fn with_backend_type(mut self, backend_type: Option<String>) -> Self {
        self.backend_type = backend_type;
        self
    }

    /// The same value with `group_id` set (only tasks of this batch group).
    pub fn with_group_id(mut self, group_id: Option<GroupId>) -> Self {
        self.group_id = group_id;
        self
    }

    /// The same value with `experiment` set (only tasks of this experiment).
    pub fn with_experiment(mut self, experiment: Option<String>) -> Self {
        self.experiment = experiment;
        self
    }
}

/// Sort orders of `GET /tasks`. Ties break on id so pages are stable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum TaskSort {
    /// Oldest first (`created_at`).
    #[serde(rename = "created_at")]
    CreatedAsc,
    /// Newest first (`-created_at`), the default.
    #[default]
    #[serde(rename = "-created_at")]
    CreatedDesc,
    /// Lowest priority first (`priority`), then oldest.
    #[serde(rename = "priority")]
    PriorityAsc,
    /// Highest priority first (`-priority`), then oldest.
    #[serde(rename = "-priority")]
    PriorityDesc,
}

impl FromStr for TaskSort {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "created_at" => Ok(TaskSort::CreatedAsc),
            "-created_at" => Ok(TaskSort::CreatedDesc),
            "priority" => Ok(TaskSort::PriorityAsc),
            "-priority" => Ok(TaskSort::PriorityDesc),
            other => Err(ValidationError::new(
                "sort",
                format!("unknown sort {other:?}; expected created_at, -created_at, priority or -priority"),
            )),
        }
    }
}

/// A window into a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// How many items, 1–100.
    pub limit: u32,
    /// How many to skip.
    pub offset: u64,
}

impl Page {
    /// The largest page.
    pub const MAX_LIMIT: u32 = 100;
    /// The default page size.
    pub const DEFAULT_LIMIT: u32 = 20;

    /// Checks the bounds; the error names the field.
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Self, ValidationError> {
        let limit = limit.unwrap_or(i64::from(Self::DEFAULT_LIMIT));
        if !(1..=i64::from(Self::MAX_LIMIT)).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                format!("must be between 1 and {}, got {limit}", Self::MAX_LIMIT),
            ));
        }
        let offset = offset.unwrap_or(0);
        if offset < 0 {
            return Err(ValidationError::new(
                "offset",
                format!("must be 0 or more, got {offset}"),
            ));
        }
        Ok(Self {
            limit: limit as u32,
            offset: offset as u64,
        })
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// One page of tasks and the total that matched.
///
/// `total` is exact when `total_is_estimate` is false. A store may estimate it instead of counting rows when many
/// tasks match (PostgreSQL: filters beyond status and backend type that match more than
/// `PgStoreOptions::exact_count_limit`, 10,000 by default, tasks), so a page costs the same however large the
/// table; an estimate is never below the tasks known to match (`offset` + the tasks on this page, and the limit
/// counted exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TaskPage {
    /// The tasks on this page.
    pub tasks: Vec<Task>,
    /// How many tasks matched the filter in all: exact, or an estimate when `total_is_estimate` is true.
    pub total: u64,
    /// Whether `total` is an estimate (many tasks matched, and the store did not count them all) rather than an
    /// exact count. Absent from older servers' answers, which were always exact.
    #[serde(default)]
    pub total_is_estimate: bool,
    /// The page size asked for.
    pub limit: u32,
    /// The offset asked for.
    pub offset: u64,
}

/// Filters of `GET /workers`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkerFilter {
    /// Only workers in this status.
    pub status: Option<WorkerStatus>,
    /// Only workers of this backend type.
    pub backend_type: Option<String>,
}

/// Builders: each field, one call (the struct is non-exhaustive).
impl WorkerFilter {
    /// The same value with `status` set (only workers in this status).
    pub fn with_status(mut self, status: Option<WorkerStatus>) -> Self {
        self.status = status;
        self
    }

    /// The same value with `backend_type` set (only workers of this backend type).
    pub fn with_backend_type(mut self, backend_type: Option<String>) -> Self {
        self.backend_type = backend_type;
        self
    }
}

/// The workers that matched and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerPage {
    /// The workers, by id.
    pub workers: Vec<Worker>,
    /// How many matched.
    pub total: u64,
}

/// Counts for `/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct StoreStats {
    /// Tasks per status (every status present, zero when none).
    pub tasks_by_status: BTreeMap<TaskStatus, u64>,
    /// Pending tasks per backend type.
    pub queue_depth_by_backend: BTreeMap<String, u64>,
    /// Workers per status (every status present, zero when none).
    pub workers_by_status: BTreeMap<WorkerStatus, u64>,
}

/// What one sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SweepReport {
    /// Running tasks past `started_at + timeout_minutes + grace`, now `timeout`.
    pub timed_out: Vec<uuid::Uuid>,
    /// Tasks whose lease expired and that went back to `pending`.
    pub requeued: Vec<uuid::Uuid>,
    /// Tasks whose lease expired with no retries left, now `failed`.
    pub failed: Vec<uuid::Uuid>,
    /// Workers silent past the threshold, now `offline`.
    pub workers_offline: Vec<String>,
}

impl SweepReport {
    /// True when the sweep changed nothing.
    pub fn is_empty(&self) -> bool {
        self.timed_out.is_empty()
            && self.requeued.is_empty()
            && self.failed.is_empty()
            && self.workers_offline.is_empty()
    }
}
