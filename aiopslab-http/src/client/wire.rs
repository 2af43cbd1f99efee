//! Request and response bodies of the worker protocol, as the client sends
//! and reads them (see `notes/http-contract.md` and the server's routes).
//!
//! Only the shapes the client needs are here; task, worker, log and
//! trajectory bodies are the core types' own serde form.

use aiopslab_core::{
    Application, LogContext, LogEntry, LogLevel, LogQuery, NewLogEntry, NewTask, Task, TaskOutcome, TaskSpec, TaskType,
    Trajectory,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use aiopslab_core::webhook::WebhookDelivery;
use aiopslab_core::TaskId;

/// `POST /tasks/{id}/lease`.
#[derive(Debug, Serialize)]
pub(crate) struct LeaseBody {
    pub attempt: u32,
}

/// `POST /tasks/{id}/logs`.
#[derive(Debug, Serialize)]
pub(crate) struct AppendLogsBody<'a> {
    pub attempt: u32,
    pub entries: &'a [NewLogEntry],
}

/// `PUT /tasks/{id}/trajectory`.
#[derive(Debug, Serialize)]
pub(crate) struct SaveTrajectoryBody<'a> {
    pub attempt: u32,
    pub trajectory: &'a Trajectory,
}

/// `POST /tasks/{id}/finish`.
#[derive(Debug, Serialize)]
pub(crate) struct FinishBody<'a> {
    pub attempt: u32,
    pub outcome: &'a TaskOutcome,
}

/// The body of `POST /tasks/{id}/final-report`.
#[derive(Serialize)]
pub(crate) struct FinalReportBody<'a> {
    pub attempt: u32,
    pub logs: &'a [NewLogEntry],
    pub trajectory: Option<&'a Trajectory>,
    pub outcome: &'a TaskOutcome,
}

/// The answer of `POST /workers/claim`.
#[derive(Debug, Deserialize)]
pub(crate) struct ClaimResponse {
    #[serde(default)]
    pub task: Option<Task>,
    /// Only from a server that knows `max_tasks`; an older one claims one task whatever was asked.
    #[serde(default)]
    pub more_tasks: Vec<Task>,
}

/// The answer of `DELETE /tasks/{id}`: only the fields the client reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CancelResponse {
    #[serde(default)]
    pub status: Option<String>,
}

/// The answer of `GET /tasks/{id}/logs`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogsResponse {
    pub task_id: TaskId,
    pub logs: Vec<WireLogEntry>,
}

/// A log entry as served: the server may leave out `task_id`, which the
/// envelope already carries.
#[derive(Debug, Deserialize)]
pub(crate) struct WireLogEntry {
    pub id: i64,
    #[serde(default)]
    pub task_id: Option<TaskId>,
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    #[serde(default)]
    pub context: LogContext,
}

impl WireLogEntry {
    /// The core entry, with the envelope's task id when the entry has none.
    pub fn into_entry(self, task_id: TaskId) -> LogEntry {
        LogEntry {
            id: self.id,
            task_id: self.task_id.unwrap_or(task_id),
            timestamp: self.timestamp,
            level: self.level,
            message: self.message,
            context: self.context,
        }
    }
}

/// One line of `GET /trajectories/export?format=episode`.
#[derive(Debug, Deserialize)]
pub(crate) struct EpisodeLine {
    pub task: Task,
    pub trajectory: Trajectory,
}

/// The answer of `GET /tasks/{id}/webhooks`: only the fields the client reads.
#[derive(Debug, Deserialize)]
pub(crate) struct WebhookListBody {
    pub deliveries: Vec<WebhookDelivery>,
}

/// One entry of the problem catalog as `GET /problems` serves it: the core's
/// [`Problem`](aiopslab_core::Problem) with owned text, so that it can be read
/// from an answer (the catalog's own entries are `'static`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemInfo {
    /// The problem id a task names.
    pub id: String,
    /// The application it deploys.
    pub application: Application,
    /// The fault it injects.
    pub fault: String,
    /// What the agent must do.
    pub task_type: TaskType,
}

/// The answer of `GET /problems`.
#[derive(Debug, Deserialize)]
pub(crate) struct ProblemListBody {
    pub problems: Vec<ProblemInfo>,
}

/// The error shape every route uses: `{"error", "code", "details"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub details: Value,
}

/// The largest `limit` the server accepts on a log read.
const MAX_LOG_LIMIT: usize = 100_000;

/// The wire spelling of an instant in a query string (RFC 3339, UTC `Z`).
pub(crate) fn wire_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The query string of a log read (`level`, `since`, `after_id`, `limit`, the
/// latter within the server's 1..=100 000).
pub(crate) fn log_query_params(query: &LogQuery) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    if let Some(level) = query.min_level {
        params.push(("level", level.as_str().to_string()));
    }
    if let Some(since) = query.since {
        params.push(("since", wire_time(since)));
    }
    if let Some(after_id) = query.after_id {
        params.push(("after_id", after_id.to_string()));
    }
    if let Some(limit) = query.limit {
        params.push(("limit", limit.clamp(1, MAX_LOG_LIMIT).to_string()));
    }
    params
}

/// The `POST /tasks` body that validates back into `spec` on the server.
pub(crate) fn new_task_body(spec: &TaskSpec) -> NewTask {
    let p = &spec.parameters;
    NewTask {
        problem_id: spec.problem_id.clone(),
        agent_config: Some(p.agent_config.clone()),
        max_steps: Some(i64::from(p.max_steps)),
        timeout_minutes: Some(i64::from(p.timeout_minutes)),
        priority: Some(i64::from(p.priority)),
        callback_url: p.callback_url.clone(),
        metadata: Some(p.metadata.clone()),
        backend_type: Some(p.backend_type.clone()),
        max_retries: Some(i64::from(p.max_retries)),
        experiment: spec.experiment.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_through_the_create_body() {
        let mut new = NewTask::new("misconfig_app_hotel_res-detection-1");
        new.priority = Some(9);
        new.callback_url = Some("https://example.com/hook".into());
        new.max_retries = Some(2);
        let spec = new.validate().unwrap();
        assert_eq!(new_task_body(&spec).validate().unwrap(), spec);
    }

    #[test]
    fn log_entries_without_task_id_take_the_envelopes() {
        let body = r#"{"task_id":"550e8400-e29b-41d4-a716-446655440000","logs":[
            {"id":3,"timestamp":"2025-09-12T10:00:00Z","level":"info","message":"hi","context":{"step":2}}]}"#;
        let response: LogsResponse = serde_json::from_str(body).unwrap();
        let task_id = response.task_id;
        let entry = response.logs.into_iter().next().unwrap().into_entry(task_id);
        assert_eq!(entry.task_id, task_id);
        assert_eq!(entry.context.step, Some(2));
    }
}
