//! Request and response bodies the API adds around the core types (which
//! serialize as themselves: `Task`, `Worker`, `LogEntry`, `Trajectory`, ...).
//! Request bodies refuse unknown fields, like `NewTask` does.

use std::collections::BTreeMap;

use aiopslab_core::batch::GroupId;
use aiopslab_core::webhook::WebhookDelivery;
use aiopslab_core::{GroupStatus, LogEntry, NewLogEntry, Problem, Task, TaskId, TaskOutcome, TaskStatus, Trajectory};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A task, plus its log when `?include_logs=true` was asked.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// The task itself.
    #[serde(flatten)]
    pub task: Task,
    /// Its log entries in append order (only with `include_logs=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogEntry>>,
}

/// The answer to `DELETE /tasks/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelResponse {
    /// The task.
    #[schema(value_type = uuid::Uuid)]
    pub id: TaskId,
    /// `cancelled` when it was pending (cancelled at once); `running` when
    /// its worker was asked to stop (it will report `cancelled`).
    pub status: TaskStatus,
    /// True when the task was running and its worker was asked to stop.
    pub cancel_requested: bool,
    /// What happened, for humans.
    pub message: String,
}

/// The answer to `GET /tasks/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsResponse {
    /// The task.
    #[schema(value_type = uuid::Uuid)]
    pub task_id: TaskId,
    /// Matching entries in append order.
    pub logs: Vec<LogEntry>,
}

/// The answer to `POST /workers/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    /// Always true on success.
    pub acknowledged: bool,
    /// The id of `next_task`, when one was handed out.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub next_task_id: Option<TaskId>,
    /// A task already claimed for this (idle) worker: it is `running` under
    /// the worker's name and the worker must run it.
    pub next_task: Option<Task>,
    /// Running tasks of this worker that a client asked to cancel.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub cancelled_task_ids: Vec<TaskId>,
    /// The new lease expiry of the worker's running tasks, if it has any.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Tasks running under this worker's id that the heartbeat's
    /// `running_task_ids` did not list: handed back to the queue (or
    /// cancelled, when a client had asked).
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub requeued_task_ids: Vec<TaskId>,
    /// Tasks the heartbeat listed that no longer run under this worker: a
    /// run still going for one of them has lost its lease.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub lost_task_ids: Vec<TaskId>,
}

/// The answer to `POST /workers/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimResponse {
    /// The claimed task (now `running` for the worker), or null when none fits; with `max_tasks` above 1, the
    /// first (best) of the tasks claimed.
    pub task: Option<Task>,
    /// With `max_tasks` above 1: the other tasks claimed in the same step, best first (each `running` for the
    /// worker, which must run them all). Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_tasks: Vec<Task>,
}

/// The body of `POST /tasks/{id}/lease`: the lease token's attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// The attempt the worker claimed.
    pub attempt: u32,
}

/// The body of `POST /tasks/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendLogsBody {
    /// The attempt the worker claimed.
    pub attempt: u32,
    /// The entries, in order.
    pub entries: Vec<NewLogEntry>,
}

/// The body of `PUT /tasks/{id}/trajectory`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveTrajectoryBody {
    /// The attempt the worker claimed.
    pub attempt: u32,
    /// The trajectory (replaces any saved before). It is stored under the
    /// path's task id, whatever its `task_id` says.
    pub trajectory: Trajectory,
}

/// The body of `POST /tasks/{id}/final-report`: a run's last log entries, its trajectory and its outcome, written
/// all or nothing.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinalReportBody {
    /// The attempt the worker claimed.
    pub attempt: u32,
    /// The run's last log entries, in order (at most 1,000), appended before the task turns terminal.
    #[serde(default)]
    pub logs: Vec<NewLogEntry>,
    /// The run's trajectory, when it has one (replaces any saved before; stored under the path's task id).
    #[serde(default)]
    pub trajectory: Option<Trajectory>,
    /// The terminal status and result.
    pub outcome: TaskOutcome,
}

/// The body of `POST /tasks/{id}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    /// The attempt the worker claimed.
    pub attempt: u32,
    /// The terminal status and result.
    pub outcome: TaskOutcome,
}

/// The answer to `GET /problems`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProblemList {
    /// Matching catalog entries, in AIOpsLab's registry order.
    pub problems: Vec<Problem>,
    /// How many matched.
    pub total: usize,
}

/// The answer to `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `unavailable` when the store does not answer (with status 503).
    pub status: String,
    /// The store kind (`memory`, `postgres`).
    pub store: String,
    /// The server's version.
    pub version: String,
}

/// One Server-Sent Event of `GET /tasks/{id}/logs?follow=true`, as an
/// `EventSource` parses it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogStreamEvent {
    /// `log` (one entry), `end` (the task is terminal; the stream closes) or
    /// `error` (the stream stopped; data says why).
    #[schema(pattern = "^(log|end|error)$")]
    pub event: String,
    /// For `log` events: the entry id (a reconnect sends it as `Last-Event-ID`).
    #[serde(default)]
    pub id: Option<String>,
    /// `log`: the entry as JSON (a `LogEntry`); `end`: the final status
    /// (`completed`, `failed`, `timeout`, `cancelled`); `error`: a message.
    pub data: String,
}

/// The answer to `GET /groups/{group_id}`: a batch group's tasks and rewards,
/// for group-relative RL methods.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupSummary {
    /// The group.
    #[schema(value_type = uuid::Uuid)]
    pub group_id: GroupId,
    /// How many tasks it has.
    pub total: usize,
    /// How many of them are in each status (statuses with none are left out).
    #[schema(value_type = Object)]
    pub by_status: BTreeMap<TaskStatus, usize>,
    /// Its tasks, oldest first (ties by id), replacements of aborted members included.
    pub tasks: Vec<GroupTask>,
    /// The mean reward of the valid (completed) members; null when none is valid.
    pub mean_reward: Option<f64>,
    /// The population variance of the valid members' rewards; null when none is valid.
    pub reward_variance: Option<f64>,
    /// The rewards of the tasks that have one, in `tasks` order.
    pub rewards: Vec<f64>,
    /// `running` while a member is pending or running; then `complete` (every member that was not replaced is
    /// valid, as many as the batch created), `partial` (at least `min_valid` valid) or `failed`.
    pub status: GroupStatus,
    /// How many tasks the batch created (replacements not counted).
    pub size: u32,
    /// Valid members the group needs (the batch's `min_valid`; default: its size).
    pub min_valid: u32,
    /// Replacements of aborted members the store may create (the batch's `max_refills`).
    pub max_refills: u32,
    /// Replacements created so far.
    pub refills: u32,
    /// Valid (completed) members.
    pub valid: usize,
    /// Aborted (failed) members, replaced or not.
    pub aborted: usize,
}

/// One task of a group, with its reward.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupTask {
    /// The task.
    #[schema(value_type = uuid::Uuid)]
    pub id: TaskId,
    /// Its problem.
    pub problem_id: String,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Its trajectory's reward, once it has a trajectory with one.
    pub reward: Option<f64>,
    /// The aborted member this task replaces; null unless it is a refill.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub replaces: Option<TaskId>,
}

/// The answer to `GET /experiments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExperimentList {
    /// Every experiment configured or with pending or running tasks, by name.
    pub experiments: Vec<aiopslab_core::Experiment>,
}

/// The answer to `GET /tasks/{id}/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The task.
    #[schema(value_type = uuid::Uuid)]
    pub task_id: TaskId,
    /// Its completion webhooks, oldest first, each with every attempt.
    pub deliveries: Vec<WebhookDelivery>,
}

/// One line of `GET /trajectories/export?format=episode`: an episode as the
/// store returns it (the trajectory without its `llm_calls`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EpisodeLine<'a> {
    /// The task.
    pub task: &'a Task,
    /// Its trajectory.
    pub trajectory: &'a Trajectory,
}
