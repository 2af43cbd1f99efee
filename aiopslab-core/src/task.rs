//! Tasks: one AIOpsLab problem run, its parameters, status and result.
//!
//! The wire format follows the user's quickstart: a task serializes to
//! `{id, problem_id, status, parameters: {...}, result: {...}, ...}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::batch::GroupId;
use crate::error::ValidationError;

/// Task ids are UUIDs.
pub type TaskId = Uuid;

/// A JSON object, used for free-form maps (`agent_config`, `metadata`, metrics).
pub type JsonObject = Map<String, Value>;

/// Where a task is in its lifecycle. The last four are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting in the queue.
    Pending,
    /// Claimed by a worker, which holds a lease on it.
    Running,
    /// The episode ran to its end and was evaluated (a wrong answer is still completed).
    Completed,
    /// The run could not be carried out (cluster, driver, LLM endpoint, unknown problem).
    Failed,
    /// The run exceeded `timeout_minutes`.
    Timeout,
    /// Cancelled by a client.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Timeout,
        TaskStatus::Cancelled,
    ];

    /// Nothing leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }

    /// The wire spelling (`"pending"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Timeout => "timeout",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "status",
                    format!(
                        "unknown status {s:?}; expected one of pending, running, completed, failed, timeout, cancelled"
                    ),
                )
            })
    }
}

/// The terminal status a worker reports when it finishes a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TerminalStatus {
    /// See [`TaskStatus::Completed`].
    Completed,
    /// See [`TaskStatus::Failed`].
    Failed,
    /// See [`TaskStatus::Timeout`].
    Timeout,
    /// See [`TaskStatus::Cancelled`].
    Cancelled,
}

impl From<TerminalStatus> for TaskStatus {
    fn from(s: TerminalStatus) -> Self {
        match s {
            TerminalStatus::Completed => TaskStatus::Completed,
            TerminalStatus::Failed => TaskStatus::Failed,
            TerminalStatus::Timeout => TaskStatus::Timeout,
            TerminalStatus::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// Validated run parameters of a task, with every default applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TaskParameters {
    /// How to build the agent (model, endpoint, sampling). Never holds secrets:
    /// `api_key_env` names the environment variable the worker reads.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub agent_config: JsonObject,
    /// Agent steps allowed, 1–1000.
    pub max_steps: u32,
    /// Wall-clock limit of the run, 1–180 minutes.
    pub timeout_minutes: u32,
    /// 0–10, higher runs first.
    pub priority: u8,
    /// Where to POST the task when it reaches a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Free-form client metadata.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metadata: JsonObject,
    /// Only workers of this backend type may run the task.
    pub backend_type: String,
    /// How many times an infrastructure failure or a lost worker may requeue the task.
    pub max_retries: u32,
}

/// Bounds and defaults of [`TaskParameters`], in one place for validation and docs.
pub mod limits {
    /// `max_steps` range and default.
    pub const MAX_STEPS: (i64, i64, u32) = (1, 1000, 30);
    /// `timeout_minutes` range and default.
    pub const TIMEOUT_MINUTES: (i64, i64, u32) = (1, 180, 30);
    /// `priority` range and default.
    pub const PRIORITY: (i64, i64, u8) = (0, 10, 5);
    /// `max_retries` range and default.
    pub const MAX_RETRIES: (i64, i64, u32) = (0, 10, 0);
    /// The default `backend_type`.
    pub const DEFAULT_BACKEND_TYPE: &str = "default";
    /// Longest accepted `problem_id`, `backend_type` and `callback_url`.
    pub const MAX_ID_LEN: usize = 256;
    /// Longest accepted `callback_url`.
    pub const MAX_URL_LEN: usize = 2048;
}

/// The body of `POST /tasks`: what a client asks for. Optional fields take
/// their defaults in [`NewTask::validate`]. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The AIOpsLab problem id (see the catalog); unknown ids are accepted and
    /// fail at run time, since custom problems exist.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub problem_id: String,
    /// See [`TaskParameters::agent_config`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub agent_config: Option<JsonObject>,
    /// See [`TaskParameters::max_steps`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1000))]
    pub max_steps: Option<i64>,
    /// See [`TaskParameters::timeout_minutes`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 180))]
    pub timeout_minutes: Option<i64>,
    /// See [`TaskParameters::priority`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 0, maximum = 10))]
    pub priority: Option<i64>,
    /// See [`TaskParameters::callback_url`].
    #[serde(default)]
    #[cfg_attr(
        feature = "utoipa",
        schema(max_length = 2048, pattern = r"^https?://[^/?#\s\x00-\x1f\x7f-\x9f]+")
    )]
    pub callback_url: Option<String>,
    /// See [`TaskParameters::metadata`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub metadata: Option<JsonObject>,
    /// See [`TaskParameters::backend_type`].
    #[serde(default)]
    #[cfg_attr(
        feature = "utoipa",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub backend_type: Option<String>,
    /// See [`TaskParameters::max_retries`].
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 0, maximum = 10))]
    pub max_retries: Option<i64>,
    /// See [`Task::experiment`]: 1–128 ASCII letters, digits, `-`, `_` or `.`; absent or `null`: none.
    #[serde(default)]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$")
    )]
    pub experiment: Option<String>,
}

/// A validated task request, ready for [`TaskApi::create_task`](crate::TaskApi::create_task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The problem to run.
    pub problem_id: String,
    /// Its parameters, defaults applied.
    pub parameters: TaskParameters,
    /// The experiment it belongs to (see [`Task::experiment`]).
    #[serde(default)]
    pub experiment: Option<String>,
}

fn bounded(field: &str, value: Option<i64>, (min, max, default): (i64, i64, u32)) -> Result<u32, ValidationError> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v as u32),
        Some(v) => Err(ValidationError::new(
            field,
            format!("must be between {min} and {max}, got {v}"),
        )),
    }
}

/// Checks a non-empty, bounded identifier without control characters.
pub(crate) fn identifier(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must be a non-empty string"));
    }
    // Characters, not bytes: as the OpenAPI `maxLength` and PostgreSQL's
    // `length()` (the tasks table's CHECK) count.
    let len = value.chars().count();
    if len > limits::MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {} characters, got {len}", limits::MAX_ID_LEN),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks a name of 1 to `max_len` ASCII letters, digits, `-`, `_` and `.` (worker ids, experiment names: safe
/// in a URL path segment and a log line as they are); the error names `field`, the `pattern` and an `example`.
pub(crate) fn ascii_name(
    field: &str,
    value: &str,
    max_len: usize,
    pattern: &str,
    example: &str,
) -> Result<(), ValidationError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.is_empty() || value.len() > max_len || !value.chars().all(allowed) {
        return Err(ValidationError::new(
            field,
            format!(
                "must be 1 to {max_len} ASCII letters, digits, '-', '_' or '.' (pattern {pattern}, e.g. {example})"
            ),
        ));
    }
    Ok(())
}

/// Checks that a free-form JSON object nests at most
/// [`MAX_JSON_DEPTH`](crate::sanitize::MAX_JSON_DEPTH) levels of arrays and
/// objects (the object itself is the first): deeper documents could not be
/// read back inside a response by the usual JSON parsers.
pub(crate) fn json_object_fits(field: &str, value: &JsonObject) -> Result<(), ValidationError> {
    let depth = crate::sanitize::object_depth(value);
    if depth > crate::sanitize::MAX_JSON_DEPTH {
        return Err(ValidationError::new(
            field,
            format!(
                "nests arrays and objects {depth} levels deep; at most {} are allowed",
                crate::sanitize::MAX_JSON_DEPTH
            ),
        ));
    }
    Ok(())
}

/// Checks that a callback URL is an absolute http(s) URL with a host.
pub fn validate_callback_url(url: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "callback_url";
    // Characters, as the OpenAPI `maxLength` counts.
    if url.chars().count() > limits::MAX_URL_LEN {
        return Err(ValidationError::new(
            FIELD,
            format!("must be at most {} characters", limits::MAX_URL_LEN),
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ValidationError::new(FIELD, "must be an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            FIELD,
            "must name a host, e.g. https://example.com/hook",
        ));
    }
    Ok(())
}

impl NewTask {
    /// A request for `problem_id` with every parameter at its default.
    pub fn new(problem_id: impl Into<String>) -> Self {
        Self {
            problem_id: problem_id.into(),
            ..Self::default()
        }
    }

    /// Applies defaults and checks every bound; the error names the field.
    pub fn validate(self) -> Result<TaskSpec, ValidationError> {
        identifier("problem_id", &self.problem_id)?;
        let backend_type = self
            .backend_type
            .unwrap_or_else(|| limits::DEFAULT_BACKEND_TYPE.to_string());
        identifier("backend_type", &backend_type)?;
        if let Some(url) = &self.callback_url {
            validate_callback_url(url)?;
        }
        if let Some(experiment) = &self.experiment {
            crate::experiment::validate_experiment_name("experiment", experiment)?;
        }
        for (field, object) in [("agent_config", &self.agent_config), ("metadata", &self.metadata)] {
            if let Some(object) = object {
                json_object_fits(field, object)?;
            }
        }
        if let Some(agent_config) = &self.agent_config {
            crate::outcome::validate_model_version(agent_config)?;
        }
        let (pmin, pmax, pdef) = limits::PRIORITY;
        let priority = bounded("priority", self.priority, (pmin, pmax, u32::from(pdef)))? as u8;
        Ok(TaskSpec {
            problem_id: self.problem_id,
            parameters: TaskParameters {
                agent_config: self.agent_config.unwrap_or_default(),
                max_steps: bounded("max_steps", self.max_steps, limits::MAX_STEPS)?,
                timeout_minutes: bounded("timeout_minutes", self.timeout_minutes, limits::TIMEOUT_MINUTES)?,
                priority,
                callback_url: self.callback_url,
                metadata: self.metadata.unwrap_or_default(),
                backend_type,
                max_retries: bounded("max_retries", self.max_retries, limits::MAX_RETRIES)?,
            },
            experiment: self.experiment,
        })
    }
}

/// What a finished run produced, as the quickstart shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TaskResult {
    /// A short human summary; the full log is in the task's log entries.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Always `duration_seconds` and `steps_taken`, plus the evaluation keys.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metrics: JsonObject,
    /// `solution` is what the agent submitted.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub output: JsonObject,
}

/// Why a task failed, timed out or was requeued, in machine and human form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorDetails {
    /// A stable code: `worker_lost`, `timeout`, `cancelled`, `backend_error`, ...
    pub code: String,
    /// A human explanation.
    pub message: String,
}

impl ErrorDetails {
    /// Builds error details from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Proof that a worker holds a task: the task id and the attempt it claimed.
/// Every worker write carries it; a store refuses it once the task is no
/// longer running under that attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LeaseToken {
    /// The task.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub task_id: TaskId,
    /// The attempt number the claim produced (1 for the first claim).
    pub attempt: u32,
}

/// One task as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Task {
    /// Its id.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub id: TaskId,
    /// The AIOpsLab problem id.
    pub problem_id: String,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Validated parameters.
    pub parameters: TaskParameters,
    /// The worker that holds (or last held) it.
    pub worker_id: Option<String>,
    /// How many times it has been claimed; the current lease's attempt.
    pub attempt: u32,
    /// A client asked to cancel it while it was running.
    pub cancel_requested: bool,
    /// When it was created (store clock).
    pub created_at: DateTime<Utc>,
    /// When it last changed (store clock).
    pub updated_at: DateTime<Utc>,
    /// When the current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Until when the worker's lease holds, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// What the run produced.
    pub result: Option<TaskResult>,
    /// Why it failed, timed out, or was last requeued.
    pub error_details: Option<ErrorDetails>,
    /// The group it joined when it was created in a batch (`null` otherwise);
    /// group-relative RL methods compare the rewards within a group.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub group_id: Option<GroupId>,
    /// The experiment it belongs to (`null`: none). Among pending tasks of the same priority the claim serves
    /// experiments in turn, and never runs more of an experiment's tasks at once than its `max_running` (see
    /// [`experiment`](crate::experiment)); tasks without one take their turn together.
    #[serde(default)]
    pub experiment: Option<String>,
    /// The aborted member of its group this task replaces (a refill, see [`crate::group`]); `null` otherwise.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub replaces: Option<TaskId>,
}

impl Task {
    /// A new `pending` task of `spec` (a fresh id, attempt 0), in `group_id`
    /// when it joins a batch, created at `now` by the store's clock: what a
    /// store inserts on create.
    pub fn pending(spec: TaskSpec, group_id: Option<GroupId>, now: DateTime<Utc>) -> Self {
        Self {
            id: TaskId::new_v4(),
            problem_id: spec.problem_id,
            status: TaskStatus::Pending,
            parameters: spec.parameters,
            worker_id: None,
            attempt: 0,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
            result: None,
            error_details: None,
            group_id,
            experiment: spec.experiment,
            replaces: None,
        }
    }

    /// A pending replacement of `aborted` (a member of a group that aborted, see [`crate::group`]): the same
    /// problem, parameters and group, a fresh id, `replaces` naming it, created at `now`.
    pub fn replacement(aborted: &Task, now: DateTime<Utc>) -> Self {
        let spec = TaskSpec {
            problem_id: aborted.problem_id.clone(),
            parameters: aborted.parameters.clone(),
            experiment: aborted.experiment.clone(),
        };
        Self {
            replaces: Some(aborted.id),
            ..Self::pending(spec, aborted.group_id, now)
        }
    }

    /// Moves the task to `running` for `worker_id` as a claim does: the next
    /// attempt, started now, leased until `lease_expires_at`, no cancel
    /// asked yet.
    pub fn start(&mut self, worker_id: &str, now: DateTime<Utc>, lease_expires_at: DateTime<Utc>) {
        self.status = TaskStatus::Running;
        self.worker_id = Some(worker_id.to_string());
        self.attempt += 1;
        self.started_at = Some(now);
        self.lease_expires_at = Some(lease_expires_at);
        self.cancel_requested = false;
        self.updated_at = now;
    }

    /// The lease token of the current attempt.
    pub fn lease_token(&self) -> LeaseToken {
        LeaseToken {
            task_id: self.id,
            attempt: self.attempt,
        }
    }
}

/// What a worker reports when a run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TaskOutcome {
    /// The terminal status to record.
    pub status: TerminalStatus,
    /// What the run produced, if anything.
    #[serde(default)]
    pub result: Option<TaskResult>,
    /// Why it did not complete.
    #[serde(default)]
    pub error: Option<ErrorDetails>,
}

/// The answer to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The task was pending and is now `cancelled`.
    Cancelled,
    /// The task is running; its worker has been asked to stop and will report `cancelled`.
    CancelRequested,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let spec = NewTask::new("p").validate().unwrap();
        assert_eq!(spec.parameters.max_steps, 30);
        assert_eq!(spec.parameters.timeout_minutes, 30);
        assert_eq!(spec.parameters.priority, 5);
        assert_eq!(spec.parameters.backend_type, "default");
        assert_eq!(spec.parameters.max_retries, 0);
    }

    #[test]
    fn bounds_name_the_field() {
        let with = |edit: fn(&mut NewTask)| {
            let mut task = NewTask::new("p");
            edit(&mut task);
            task
        };
        for (task, field) in [
            (with(|t| t.max_steps = Some(0)), "max_steps"),
            (with(|t| t.max_steps = Some(1001)), "max_steps"),
            (with(|t| t.timeout_minutes = Some(181)), "timeout_minutes"),
            (with(|t| t.priority = Some(11)), "priority"),
            (with(|t| t.priority = Some(-1)), "priority"),
            (with(|t| t.max_retries = Some(-1)), "max_retries"),
            (NewTask::new("  "), "problem_id"),
            (with(|t| t.backend_type = Some(String::new())), "backend_type"),
            (with(|t| t.callback_url = Some("ftp://x".into())), "callback_url"),
            (with(|t| t.callback_url = Some("http://".into())), "callback_url"),
            (with(|t| t.experiment = Some(String::new())), "experiment"),
            (with(|t| t.experiment = Some("a b".into())), "experiment"),
            (with(|t| t.experiment = Some("x".repeat(129))), "experiment"),
        ] {
            let err = task.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let err = with(|t| t.max_steps = Some(0)).validate().unwrap_err();
        assert!(err.message.contains("between 1 and 1000"), "{err}");
    }

    #[test]
    fn too_deep_json_is_refused_naming_the_field() {
        let deep = |levels: usize| {
            let inner = (1..levels).fold(Value::from(1), |inner, _| Value::Array(vec![inner]));
            let mut object = JsonObject::new();
            object.insert("k".into(), inner);
            object
        };
        let limit = crate::sanitize::MAX_JSON_DEPTH;
        let ok = NewTask {
            agent_config: Some(deep(limit)),
            metadata: Some(deep(limit)),
            ..NewTask::new("p")
        };
        assert!(ok.validate().is_ok(), "{limit} levels are accepted");
        let err = NewTask {
            agent_config: Some(deep(limit + 1)),
            ..NewTask::new("p")
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "agent_config", "{err}");
        assert!(err.message.contains(&format!("at most {limit}")), "{err}");
        let err = NewTask {
            metadata: Some(deep(limit + 1)),
            ..NewTask::new("p")
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "metadata", "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<NewTask>(r#"{"problem_id":"p","colour":"red"}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn status_round_trips() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }
}
