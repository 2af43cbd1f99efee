//! Database rows and their conversion into domain types.
//!
//! Rows are read with `sqlx::FromRow` into plain structs mirroring the tables, then converted with checks: a
//! status or level the domain does not know, or a number out of range, is a corrupted row and becomes
//! [`StoreError::Internal`] rather than a panic.

use aiopslab_core::{
    ErrorDetails, Experiment, JsonObject, LlmCall, LogContext, LogEntry, LogLevel, StoreError, Task, TaskParameters,
    TaskResult, TaskStatus, Trajectory, TrajectoryMessage, WebhookAttempt, WebhookStatus, Worker, WorkerCapabilities,
    WorkerStatus,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

/// One row of `tasks`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: Uuid,
    problem_id: String,
    status: String,
    agent_config: Json<JsonObject>,
    max_steps: i32,
    timeout_minutes: i32,
    priority: i16,
    callback_url: Option<String>,
    metadata: Json<JsonObject>,
    backend_type: String,
    max_retries: i32,
    worker_id: Option<String>,
    attempt: i32,
    cancel_requested: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    result: Option<Json<TaskResult>>,
    error_details: Option<Json<ErrorDetails>>,
    group_id: Option<Uuid>,
    experiment: Option<String>,
    replaces: Option<Uuid>,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    tracing::error!(what, %detail, "corrupted row");
    StoreError::Internal(format!("corrupted {what} in the database"))
}

fn unsigned<T: TryFrom<i64>>(what: &str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(what, value))
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, StoreError> {
        let status: TaskStatus = row.status.parse().map_err(|e| corrupt("task status", e))?;
        Ok(Task {
            id: row.id,
            problem_id: row.problem_id,
            status,
            parameters: TaskParameters {
                agent_config: row.agent_config.0,
                max_steps: unsigned("max_steps", row.max_steps.into())?,
                timeout_minutes: unsigned("timeout_minutes", row.timeout_minutes.into())?,
                priority: unsigned("priority", row.priority.into())?,
                callback_url: row.callback_url,
                metadata: row.metadata.0,
                backend_type: row.backend_type,
                max_retries: unsigned("max_retries", row.max_retries.into())?,
            },
            worker_id: row.worker_id,
            attempt: unsigned("attempt", row.attempt.into())?,
            cancel_requested: row.cancel_requested,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            lease_expires_at: row.lease_expires_at,
            result: row.result.map(|r| r.0),
            error_details: row.error_details.map(|e| e.0),
            group_id: row.group_id,
            replaces: row.replaces,
            experiment: row.experiment,
        })
    }
}

/// An experiment and its counts, as [`crate::sql::SELECT_EXPERIMENTS`] reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ExperimentRow {
    name: String,
    max_running: Option<i32>,
    running: i64,
    pending: i64,
}

impl TryFrom<ExperimentRow> for Experiment {
    type Error = StoreError;

    fn try_from(row: ExperimentRow) -> Result<Self, StoreError> {
        Ok(Experiment {
            name: row.name,
            max_running: row.max_running.map(|n| unsigned("max_running", n.into())).transpose()?,
            running: unsigned("running", row.running)?,
            pending: unsigned("pending", row.pending)?,
        })
    }
}

/// One row of `workers`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WorkerRow {
    id: String,
    backend_type: String,
    status: String,
    max_parallel_tasks: i32,
    supported_problems: Option<Vec<String>>,
    metadata: Json<JsonObject>,
    current_task_id: Option<Uuid>,
    tasks_completed: i64,
    tasks_failed: i64,
    instance_id: Option<String>,
    registered_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
}

impl TryFrom<WorkerRow> for Worker {
    type Error = StoreError;

    fn try_from(row: WorkerRow) -> Result<Self, StoreError> {
        Ok(Worker {
            id: row.id,
            backend_type: row.backend_type,
            status: row.status.parse().map_err(|e| corrupt("worker status", e))?,
            capabilities: WorkerCapabilities::new(unsigned("max_parallel_tasks", row.max_parallel_tasks.into())?)
                .with_supported_problems(row.supported_problems),
            metadata: row.metadata.0,
            current_task_id: row.current_task_id,
            tasks_completed: unsigned("tasks_completed", row.tasks_completed)?,
            tasks_failed: unsigned("tasks_failed", row.tasks_failed)?,
            instance_id: row.instance_id,
            registered_at: row.registered_at,
            last_heartbeat: row.last_heartbeat,
        })
    }
}

/// One row of `task_logs`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LogRow {
    id: i64,
    task_id: Uuid,
    timestamp: DateTime<Utc>,
    level: String,
    message: String,
    context: Json<LogContext>,
}

impl TryFrom<LogRow> for LogEntry {
    type Error = StoreError;

    fn try_from(row: LogRow) -> Result<Self, StoreError> {
        Ok(LogEntry {
            id: row.id,
            task_id: row.task_id,
            timestamp: row.timestamp,
            level: row.level.parse().map_err(|e| corrupt("log level", e))?,
            message: row.message,
            context: row.context.0,
        })
    }
}

/// One row of `webhook_outbox` (its attempts are read separately).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub(crate) id: i64,
    pub(crate) task_id: Uuid,
    pub(crate) url: String,
    pub(crate) payload: Option<Json<serde_json::Value>>,
    pub(crate) status: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) delivered_at: Option<DateTime<Utc>>,
}

/// One row of `webhook_attempts`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub(crate) delivery_id: i64,
    attempt: i32,
    attempted_at: DateTime<Utc>,
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

impl TryFrom<AttemptRow> for WebhookAttempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Self, StoreError> {
        Ok(WebhookAttempt {
            attempt: unsigned("attempt", row.attempt.into())?,
            attempted_at: row.attempted_at,
            status_code: row.status_code.map(|c| unsigned("status_code", c.into())).transpose()?,
            error: row.error,
            duration_ms: unsigned("duration_ms", row.duration_ms)?,
        })
    }
}

/// Parses a delivery status column.
pub(crate) fn webhook_status(value: &str) -> Result<WebhookStatus, StoreError> {
    match value {
        "pending" => Ok(WebhookStatus::Pending),
        "delivered" => Ok(WebhookStatus::Delivered),
        "failed" => Ok(WebhookStatus::Failed),
        other => Err(corrupt("webhook status", other)),
    }
}

/// A trajectory's `trajectory` column: everything but its messages and LLM calls, which have columns of their own.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct TrajectoryRest {
    #[serde(default)]
    pub(crate) reward: Option<f64>,
    #[serde(default)]
    pub(crate) evaluation: JsonObject,
    #[serde(default)]
    pub(crate) metadata: JsonObject,
}

impl TrajectoryRest {
    /// The rest of `trajectory`.
    pub(crate) fn of(trajectory: &Trajectory) -> TrajectoryRestRef<'_> {
        TrajectoryRestRef {
            task_id: trajectory.task_id,
            reward: trajectory.reward,
            evaluation: &trajectory.evaluation,
            metadata: &trajectory.metadata,
        }
    }

    /// The trajectory of `task_id` made of this rest and its messages and LLM calls.
    pub(crate) fn into_trajectory(
        self,
        task_id: Uuid,
        messages: Vec<TrajectoryMessage>,
        llm_calls: Vec<LlmCall>,
    ) -> Trajectory {
        Trajectory {
            task_id,
            messages,
            llm_calls,
            reward: self.reward,
            evaluation: self.evaluation,
            metadata: self.metadata,
            // Labels are the reader's, from the task's status (Trajectory::label): never stored.
            outcome: None,
            model_version: None,
        }
    }
}

/// [`TrajectoryRest`] borrowed from a trajectory, for writing (with the task id, for readers of the column).
#[derive(Debug, serde::Serialize)]
pub(crate) struct TrajectoryRestRef<'a> {
    task_id: Uuid,
    reward: Option<f64>,
    evaluation: &'a JsonObject,
    metadata: &'a JsonObject,
}

/// A task and the parts of its trajectory the export reads.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EpisodeRow {
    #[sqlx(flatten)]
    pub(crate) task: TaskRow,
    pub(crate) trajectory_rest: Json<TrajectoryRest>,
    pub(crate) trajectory_messages: Json<Vec<TrajectoryMessage>>,
}

/// The row a heartbeat returns.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct HeartbeatRow {
    /// False when the worker is unknown.
    pub(crate) found: bool,
    /// Running tasks of the worker with a cancel request.
    pub(crate) cancelled: Vec<Uuid>,
    /// The new lease expiry, when the worker has running tasks.
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
    /// False when the heartbeat's instance was taken over.
    pub(crate) current: bool,
    /// The instance holding the id.
    pub(crate) current_instance: Option<String>,
    /// Running tasks under the id that the heartbeat did not list, handed back.
    pub(crate) requeued: Vec<Uuid>,
    /// Listed tasks no longer running under the worker.
    pub(crate) lost: Vec<Uuid>,
}

/// Parses a status column read on its own.
pub(crate) fn task_status(value: &str) -> Result<TaskStatus, StoreError> {
    value.parse().map_err(|e| corrupt("task status", e))
}

/// Parses a worker status column read on its own.
pub(crate) fn worker_status(value: &str) -> Result<WorkerStatus, StoreError> {
    value.parse().map_err(|e| corrupt("worker status", e))
}

/// The levels at or above `min`, as stored (`None`: every level).
pub(crate) fn levels_at_least(min: Option<LogLevel>) -> Option<Vec<String>> {
    min.map(|min| {
        LogLevel::ALL
            .into_iter()
            .filter(|level| *level >= min)
            .map(|level| level.as_str().to_string())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_level_includes_more_severe_levels() {
        assert_eq!(levels_at_least(None), None);
        assert_eq!(
            levels_at_least(Some(LogLevel::Warning)),
            Some(vec!["warning".to_string(), "error".to_string(), "critical".to_string()])
        );
    }
}
