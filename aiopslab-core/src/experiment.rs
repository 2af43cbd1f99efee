//! Experiments: named groups of tasks that share the workers fairly.
//!
//! Why: one RL run that submits 10,000 episodes must not starve another that submits 10. A task may name an
//! [`experiment`](crate::Task::experiment) (none by default); the claim then serves, among the pending tasks of
//! the highest priority, the experiment least recently served rather than the oldest task overall (tasks without
//! an experiment take their turn as one more class), and never starts a task of an experiment that already runs
//! its [`max_running`](ExperimentSettings::max_running) tasks. Priority still wins over fairness.
//!
//! An experiment exists as soon as a task names it; an operator sets its limit with
//! [`Experiments::set_experiment`](crate::store::Experiments::set_experiment) (`PUT /experiments/{name}`). An
//! experiment no one configured is unlimited.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The pattern of experiment names: 1–128 ASCII letters, digits, `-`, `_` and `.` (safe in a URL path segment,
/// a query string and a log line as they are), as in `grpo-run-7`.
pub const EXPERIMENT_NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// The longest experiment name.
pub const MAX_EXPERIMENT_NAME_LEN: usize = 128;

/// The largest accepted `max_running`.
pub const MAX_RUNNING_LIMIT: i64 = 1_000_000;

/// Checks an experiment name against [`EXPERIMENT_NAME_PATTERN`]; the error names `field`.
pub fn validate_experiment_name(field: &str, name: &str) -> Result<(), ValidationError> {
    crate::task::ascii_name(
        field,
        name,
        MAX_EXPERIMENT_NAME_LEN,
        EXPERIMENT_NAME_PATTERN,
        "grpo-run-7",
    )
}

/// The body of `PUT /experiments/{name}`: the experiment's concurrency limit. Unknown fields are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewExperimentSettings {
    /// At most this many of the experiment's tasks run at once, 1–1,000,000; `null` (or absent): unlimited.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1_000_000))]
    pub max_running: Option<i64>,
}

impl NewExperimentSettings {
    /// Checks the bounds; the error names the field.
    pub fn validate(self) -> Result<ExperimentSettings, ValidationError> {
        match self.max_running {
            None => Ok(ExperimentSettings::unlimited()),
            Some(n) if (1..=MAX_RUNNING_LIMIT).contains(&n) => Ok(ExperimentSettings::limited(n as u32)),
            Some(n) => Err(ValidationError::new(
                "max_running",
                format!("must be between 1 and {MAX_RUNNING_LIMIT}, or null for unlimited, got {n}"),
            )),
        }
    }
}

/// What an operator sets on an experiment (validated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExperimentSettings {
    /// At most this many of the experiment's tasks run at once (`None`: unlimited).
    pub max_running: Option<u32>,
}

impl ExperimentSettings {
    /// No limit.
    pub fn unlimited() -> Self {
        Self { max_running: None }
    }

    /// At most `max_running` running tasks (at least 1).
    pub fn limited(max_running: u32) -> Self {
        Self {
            max_running: Some(max_running.max(1)),
        }
    }

    /// Checks what a store is asked to keep (settings deserialized rather than built may hold a limit of 0, or
    /// one above [`MAX_RUNNING_LIMIT`]); the error names `max_running`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self.max_running {
            Some(n) if n == 0 || i64::from(n) > MAX_RUNNING_LIMIT => Err(ValidationError::new(
                "max_running",
                format!("must be between 1 and {MAX_RUNNING_LIMIT}, or null for unlimited, got {n}"),
            )),
            _ => Ok(()),
        }
    }
}

/// An experiment as served: its limit and how many of its tasks run and wait now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Experiment {
    /// Its name (see [`EXPERIMENT_NAME_PATTERN`]).
    pub name: String,
    /// At most this many of its tasks run at once; `null`: unlimited (also for an experiment no one configured).
    pub max_running: Option<u32>,
    /// Its tasks running now.
    pub running: u64,
    /// Its tasks waiting in the queue now.
    pub pending: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_pattern() {
        for ok in ["a", "grpo-run-7", "A.b_c-9", &"x".repeat(128)] {
            assert!(validate_experiment_name("experiment", ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "a/b", "é", &"x".repeat(129), "nul\0"] {
            let err = validate_experiment_name("experiment", bad).unwrap_err();
            assert_eq!(err.field, "experiment");
            assert!(err.message.contains("1 to 128"), "{err}");
        }
    }

    #[test]
    fn limits_are_checked() {
        let settings = |n| NewExperimentSettings { max_running: n }.validate();
        assert_eq!(settings(None).unwrap().max_running, None);
        assert_eq!(settings(Some(1)).unwrap().max_running, Some(1));
        for bad in [0, -1, MAX_RUNNING_LIMIT + 1] {
            assert_eq!(settings(Some(bad)).unwrap_err().field, "max_running");
        }
        let err = serde_json::from_str::<NewExperimentSettings>(r#"{"max_running": 2, "x": 1}"#).unwrap_err();
        assert!(err.to_string().contains('x'), "{err}");
    }
}
