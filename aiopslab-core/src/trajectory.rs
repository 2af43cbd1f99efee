//! Trajectories: the reinforcement-learning record of one episode.
//!
//! A trajectory holds every message of the agent's conversation in order,
//! every LLM call with its request, reply, usage and latency, and a scalar
//! reward derived from AIOpsLab's evaluation (with the raw evaluation kept
//! beside it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::TaskType;
use crate::outcome::{model_version_of, Outcome};
use crate::task::{JsonObject, TaskId, TaskStatus};

/// One message of the episode's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TrajectoryMessage {
    /// `system`, `user` (task description), `assistant` or `env`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl TrajectoryMessage {
    /// Builds a message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Token counts as reported by the LLM endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Their sum, as the endpoint reported it.
    pub total_tokens: u64,
}

/// One call to the LLM endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LlmCall {
    /// The agent step this call served.
    #[serde(default)]
    pub step: Option<u32>,
    /// The messages sent.
    pub request: Vec<TrajectoryMessage>,
    /// The reply text.
    pub response: String,
    /// The model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling parameters (`temperature`, `top_p`, `max_tokens`).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub sampling: JsonObject,
    /// Token usage from the endpoint, when it gave it.
    #[serde(default)]
    pub usage: Option<TokenUsage>,
    /// Round-trip time of the call.
    #[serde(default)]
    pub latency_ms: u64,
    /// Token ids and log-probabilities, when the endpoint returned them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// The reply's token ids, when the endpoint returned them (vLLM's
    /// `choices[0].token_ids`): what on-policy RL trains on, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Value>,
    /// The prompt's token ids, when the endpoint returned them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Value>,
    /// The policy version that served this call: the task's `agent_config.model_version`, stamped by the worker
    /// runtime on every call it reports (so a trainer can tell calls of stale policies apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
}

/// The record of one episode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Trajectory {
    /// The task it belongs to.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub task_id: TaskId,
    /// Every message in order: system, task description, assistant, env.
    pub messages: Vec<TrajectoryMessage>,
    /// Every LLM call in order.
    pub llm_calls: Vec<LlmCall>,
    /// The scalar reward derived from `evaluation` (see [`reward_from_evaluation`]). Read back through the API it
    /// is `null` unless the episode is [`Outcome::Valid`]: an aborted run is never scored 0 ([`Trajectory::label`]).
    pub reward: Option<f64>,
    /// AIOpsLab's raw results dict.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub evaluation: JsonObject,
    /// Anything else the backend wants to keep (`simulated: true`, driver versions).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub metadata: JsonObject,
    /// What the episode is for training, from its task's status ([`Trajectory::label`]); absent while the task
    /// runs, and in what a worker uploads (the server labels what it serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The policy version the episode was sampled from (`agent_config.model_version`), when the task gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
}

impl Trajectory {
    /// Makes this the trajectory as served for a task in `status` with `agent_config`: labelled with its
    /// [`Outcome`] and policy version, and with no reward unless the episode is valid (an infrastructure failure, a
    /// timeout or a cancel is never scored; AIOpsLab's raw `evaluation` is kept as it was).
    pub fn label(&mut self, status: TaskStatus, agent_config: &JsonObject) {
        self.outcome = Outcome::of(status);
        if self.outcome != Some(Outcome::Valid) {
            self.reward = None;
        }
        self.model_version = model_version_of(agent_config);
    }
}

/// The reward of an episode: detection answered `Correct` → 1;
/// localization, analysis or mitigation with `success` true → 1; else 0.
pub fn reward_from_evaluation(task_type: TaskType, evaluation: &JsonObject) -> f64 {
    let success = match task_type {
        TaskType::Detection => evaluation.get("Detection Accuracy").and_then(Value::as_str) == Some("Correct"),
        TaskType::Localization | TaskType::Analysis | TaskType::Mitigation => {
            evaluation.get("success").and_then(Value::as_bool) == Some(true)
        }
    };
    if success {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rewards_follow_the_evaluation() {
        assert_eq!(
            reward_from_evaluation(TaskType::Detection, &obj(json!({"Detection Accuracy": "Correct"}))),
            1.0
        );
        assert_eq!(
            reward_from_evaluation(TaskType::Detection, &obj(json!({"Detection Accuracy": "Incorrect"}))),
            0.0
        );
        assert_eq!(
            reward_from_evaluation(TaskType::Detection, &obj(json!({"success": true}))),
            0.0
        );
        assert_eq!(
            reward_from_evaluation(TaskType::Localization, &obj(json!({"success": true}))),
            1.0
        );
        assert_eq!(
            reward_from_evaluation(TaskType::Analysis, &obj(json!({"success": false}))),
            0.0
        );
        assert_eq!(reward_from_evaluation(TaskType::Mitigation, &obj(json!({}))), 0.0);
    }
}
