//! Dataset export for RL training: one episode per line, in OpenAI chat
//! format, with the reward and what produced it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{self, TaskType};
use crate::outcome::{model_version_of, Outcome};
use crate::task::{JsonObject, Task, TaskId, TaskStatus};
use crate::trajectory::Trajectory;

/// Which episodes to export; every given field must match. Only tasks that
/// have a trajectory are exported.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ExportFilter {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks whose problem id is in this list (a `problem_id` and/or a
    /// `task_type` filter, the latter expanded through the catalog).
    pub problem_ids: Option<Vec<String>>,
    /// Only tasks whose `agent_config.model` equals this.
    pub model: Option<String>,
    /// Only tasks whose `metadata[key]` equals this string value.
    pub metadata: Option<(String, String)>,
    /// Only tasks created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only episodes with one of these outcomes (`None`: any). The HTTP export asks for `valid` alone unless the
    /// request says otherwise.
    pub outcomes: Option<Vec<Outcome>>,
    /// Only episodes of exactly this policy version (`agent_config.model_version`).
    pub model_version: Option<u64>,
    /// Only episodes of this policy version or a later one (older or unversioned episodes are left out).
    pub min_model_version: Option<u64>,
}

/// Builders: each field, one call (the struct is non-exhaustive).
impl ExportFilter {
    /// The same value with `status` set (only tasks in this status).
    pub fn with_status(mut self, status: Option<TaskStatus>) -> Self {
        self.status = status;
        self
    }

    /// The same value with `problem_ids` set (only tasks whose problem id is in this list (a `problem_id` and/or a).
    pub fn with_problem_ids(mut self, problem_ids: Option<Vec<String>>) -> Self {
        self.problem_ids = problem_ids;
        self
    }

    /// The same value with `model` set (only tasks whose `agent_config.model` equals this).
    pub fn with_model(mut self, model: Option<String>) -> Self {
        self.model = model;
        self
    }

    /// The same value with `metadata` set (only tasks whose `metadata[key]` equals this string value).
    pub fn with_metadata(mut self, metadata: Option<(String, String)>) -> Self {
        self.metadata = metadata;
        self
    }

    /// The same value with `created_after` set (only tasks created at or after this instant).
    pub fn with_created_after(mut self, created_after: Option<DateTime<Utc>>) -> Self {
        self.created_after = created_after;
        self
    }

    /// The same value with `created_before` set (only tasks created before this instant).
    pub fn with_created_before(mut self, created_before: Option<DateTime<Utc>>) -> Self {
        self.created_before = created_before;
        self
    }

    /// The same value with `outcomes` set (only episodes with one of these outcomes).
    pub fn with_outcomes(mut self, outcomes: Option<Vec<Outcome>>) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// The same value with `model_version` set (only episodes of exactly this policy version).
    pub fn with_model_version(mut self, model_version: Option<u64>) -> Self {
        self.model_version = model_version;
        self
    }

    /// The same value with `min_model_version` set (only episodes of this policy version or a later one).
    pub fn with_min_model_version(mut self, min_model_version: Option<u64>) -> Self {
        self.min_model_version = min_model_version;
        self
    }

    /// Whether `task` passes the outcome and policy-version filters (the other filters are the store's).
    pub fn admits_labels(&self, task: &Task) -> bool {
        let outcome_ok = match &self.outcomes {
            None => true,
            Some(outcomes) => Outcome::of(task.status).is_some_and(|o| outcomes.contains(&o)),
        };
        let version = model_version_of(&task.parameters.agent_config);
        outcome_ok
            && self.model_version.is_none_or(|wanted| version == Some(wanted))
            && self
                .min_model_version
                .is_none_or(|floor| version.is_some_and(|v| v >= floor))
    }
}

/// Where an export walk stopped: episodes come in `(created_at, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCursor {
    /// The last exported task's creation time.
    pub created_at: DateTime<Utc>,
    /// The last exported task's id.
    pub id: TaskId,
}

/// A task with its trajectory.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The task.
    pub task: Task,
    /// Its trajectory.
    pub trajectory: Trajectory,
}

impl Episode {
    /// Where a walk that ended at this episode resumes.
    pub fn cursor(&self) -> ExportCursor {
        ExportCursor {
            created_at: self.task.created_at,
            id: self.task.id,
        }
    }
}

/// One chat message in OpenAI format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (AIOpsLab's environment replies are `user`).
    pub role: String,
    /// The text.
    pub content: String,
}

/// One line of the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ExportRecord {
    /// The task.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub task_id: TaskId,
    /// The AIOpsLab problem.
    pub problem_id: String,
    /// Its task type, when the problem is in the catalog.
    pub task_type: Option<TaskType>,
    /// The task's final status.
    pub status: TaskStatus,
    /// What the episode is for training: `valid` (evaluated, whatever the reward), `aborted` (infrastructure),
    /// `timeout` or `cancelled`.
    pub outcome: Option<Outcome>,
    /// The conversation in OpenAI chat format.
    pub messages: Vec<ChatMessage>,
    /// The scalar reward of a valid episode; `null` for any other (an aborted run is never scored 0).
    pub reward: Option<f64>,
    /// AIOpsLab's raw evaluation.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub evaluation: JsonObject,
    /// How the agent was configured.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub agent_config: JsonObject,
    /// The client's metadata.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metadata: JsonObject,
    /// The task's group, for group-relative methods.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub group_id: Option<uuid::Uuid>,
    /// The policy version the episode was sampled from (`agent_config.model_version`), when given.
    pub model_version: Option<u64>,
}

/// Maps a trajectory role to the OpenAI chat role.
fn chat_role(role: &str) -> &str {
    match role {
        "system" | "assistant" => role,
        // The task description and AIOpsLab's environment replies reach the
        // agent as user turns.
        _ => "user",
    }
}

impl ExportRecord {
    /// The export line of one episode.
    pub fn from_episode(episode: &Episode) -> Self {
        let task = &episode.task;
        let trajectory = &episode.trajectory;
        ExportRecord {
            task_id: task.id,
            problem_id: task.problem_id.clone(),
            task_type: catalog::find(&task.problem_id).map(|p| p.task_type),
            status: task.status,
            outcome: Outcome::of(task.status),
            messages: trajectory
                .messages
                .iter()
                .map(|m| ChatMessage {
                    role: chat_role(&m.role).to_string(),
                    content: m.content.clone(),
                })
                .collect(),
            reward: trajectory.reward.filter(|_| task.status == TaskStatus::Completed),
            evaluation: trajectory.evaluation.clone(),
            agent_config: task.parameters.agent_config.clone(),
            metadata: task.parameters.metadata.clone(),
            group_id: task.group_id,
            model_version: model_version_of(&task.parameters.agent_config),
        }
    }
}

/// The problem ids a `problem_id` and/or `task_type` filter allows, or
/// `None` when neither is given (no restriction). A `task_type` expands
/// through the catalog; given both, the problem must satisfy both.
pub fn problem_ids_for(problem_id: Option<&str>, task_type: Option<TaskType>) -> Option<Vec<String>> {
    match (problem_id, task_type) {
        (None, None) => None,
        (Some(id), None) => Some(vec![id.to_string()]),
        (problem_id, Some(task_type)) => Some(
            catalog::filter(None, Some(task_type))
                .filter(|p| problem_id.is_none_or(|id| id == p.id))
                .map(|p| p.id.to_string())
                .collect(),
        ),
    }
}

/// A model filter reads `agent_config.model`, which may be any JSON value.
pub fn model_of(task: &Task) -> Option<&str> {
    task.parameters.agent_config.get("model").and_then(Value::as_str)
}
