//! [`Outcome`]: what a terminal episode is for training, and [`model_version_of`], the policy that produced it.
//!
//! Online RL must never learn from an infrastructure failure as if the policy had earned a reward of 0, so every
//! terminal task carries an outcome label, a function of its status alone:
//!
//! | status | outcome | reward reported | meaning |
//! |---|---|---|---|
//! | `completed` | `valid` | AIOpsLab's (0 or 1 today) | the episode ran and was evaluated, whatever the answer |
//! | `failed` | `aborted` | `null` | the run could not be carried out: infrastructure, never the policy |
//! | `timeout` | `timeout` | `null` | the run exceeded `timeout_minutes` |
//! | `cancelled` | `cancelled` | `null` | a client cancelled it |
//!
//! Every failure code the project reports is infrastructure, so every one maps to `aborted`: `worker_lost`,
//! `lease_lost`, `worker_shutdown`, `kind_shutdown` (the worker or its cluster went away), `cluster_down`,
//! `backend_error`, `applications_error`, `cleanup_error` (the cluster or AIOpsLab's deployment of the
//! applications), `import_error` (the AIOpsLab driver), `llm_endpoint_error`, `missing_api_key`,
//! `invalid_agent_config` (the LLM endpoint or its configuration), `trajectory_refused` (the store would not
//! keep the episode's record), and the simulated backend's injected `simulated_failure`. A wrong answer, a malformed action or an agent
//! that never submits is judged by AIOpsLab's evaluation and stays `completed`: a `valid` episode with reward 0.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ValidationError;
use crate::task::{JsonObject, TaskStatus};

/// What a terminal episode is for training (see the module docs for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Ran and was evaluated: train on it, whatever the reward.
    Valid,
    /// Infrastructure failed (cluster, driver, LLM endpoint, worker lost, shutdown): not a judgement of the policy.
    Aborted,
    /// Exceeded its time limit.
    Timeout,
    /// Cancelled by a client.
    Cancelled,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [Outcome::Valid, Outcome::Aborted, Outcome::Timeout, Outcome::Cancelled];

    /// The outcome of a task in `status`; `None` while it is pending or running.
    pub fn of(status: TaskStatus) -> Option<Self> {
        match status {
            TaskStatus::Pending | TaskStatus::Running => None,
            TaskStatus::Completed => Some(Outcome::Valid),
            TaskStatus::Failed => Some(Outcome::Aborted),
            TaskStatus::Timeout => Some(Outcome::Timeout),
            TaskStatus::Cancelled => Some(Outcome::Cancelled),
        }
    }

    /// The one status with this outcome (a store filters outcomes as statuses).
    pub fn status(self) -> TaskStatus {
        match self {
            Outcome::Valid => TaskStatus::Completed,
            Outcome::Aborted => TaskStatus::Failed,
            Outcome::Timeout => TaskStatus::Timeout,
            Outcome::Cancelled => TaskStatus::Cancelled,
        }
    }

    /// The wire spelling (`"valid"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Aborted => "aborted",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "outcome",
                    format!("unknown outcome {s:?}; expected one of valid, aborted, timeout, cancelled"),
                )
            })
    }
}

/// The key of `agent_config` that names the policy version an episode was sampled from.
pub const MODEL_VERSION_KEY: &str = "model_version";

/// The policy version of a task: `agent_config.model_version`, a non-negative integer (e.g. the trainer's step)
/// when given. Validated at create, so any other value is absent here.
pub fn model_version_of(agent_config: &JsonObject) -> Option<u64> {
    agent_config.get(MODEL_VERSION_KEY).and_then(Value::as_u64)
}

/// Checks `agent_config.model_version` at create: absent, or a non-negative integer.
pub(crate) fn validate_model_version(agent_config: &JsonObject) -> Result<(), ValidationError> {
    match agent_config.get(MODEL_VERSION_KEY) {
        None | Some(Value::Null) => Ok(()),
        Some(value) if value.as_u64().is_some() => Ok(()),
        Some(other) => Err(ValidationError::new(
            "agent_config.model_version",
            format!("must be a non-negative integer (the policy version, e.g. the trainer's step), got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_terminal_status_has_one_outcome_and_back() {
        for status in TaskStatus::ALL {
            match Outcome::of(status) {
                Some(outcome) => assert_eq!(outcome.status(), status),
                None => assert!(!status.is_terminal(), "{status} is terminal but has no outcome"),
            }
        }
        assert_eq!(Outcome::of(TaskStatus::Failed), Some(Outcome::Aborted));
        assert_eq!("aborted".parse::<Outcome>().ok(), Some(Outcome::Aborted));
        assert!("failed".parse::<Outcome>().is_err());
    }

    #[test]
    fn model_versions_are_non_negative_integers() {
        let config = |v: Value| json!({ "model_version": v }).as_object().cloned().unwrap_or_default();
        assert_eq!(model_version_of(&config(json!(12))), Some(12));
        assert!(validate_model_version(&config(json!(12))).is_ok());
        assert!(validate_model_version(&config(json!(null))).is_ok());
        for bad in [json!(-1), json!(1.5), json!("12"), json!([1])] {
            let error = validate_model_version(&config(bad.clone())).expect_err("refused");
            assert_eq!(error.field, "agent_config.model_version", "{bad}");
        }
    }
}
