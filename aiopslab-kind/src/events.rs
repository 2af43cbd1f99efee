//! The driver's event protocol: one JSON object per line on a channel of
//! its own (file descriptor 3), never stdout, which AIOpsLab prints to.
//!
//! Every event has an `event` field naming its kind; the other fields are
//! listed on each variant. Unknown fields are ignored, so the driver may add
//! some; unknown kinds and unparsable lines are reported to the caller, who
//! turns them into warnings.

use serde::Deserialize;
use serde_json::Value;

use aiopslab_core::JsonObject;

/// The protocol version the embedded driver speaks (sent in its `hello` event).
///
/// Version 2: the driver no longer reports LLM request details (the
/// worker's proxy records them), reports the result as soon as AIOpsLab's
/// evaluation exists and what happened after it separately (`cleanup`,
/// `cleanup_error`), reports phase timings and context trimming, and has an
/// infrastructure mode (`infra`, `infra_done`).
pub const PROTOCOL_VERSION: u32 = 2;

/// One line of the driver's event channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DriverEvent {
    /// The driver started: its protocol, Python and AIOpsLab locations.
    Hello {
        /// Protocol version.
        #[serde(default)]
        protocol: u32,
        /// `sys.version` of the interpreter.
        #[serde(default)]
        python: String,
        /// Where `aiopslab` was imported from.
        #[serde(default)]
        aiopslab: Option<String>,
        /// `warm`, `stock` or `infra`: how it drives AIOpsLab.
        #[serde(default)]
        orchestrator: Option<String>,
    },
    /// A log line.
    Log {
        /// `debug`, `info`, `warning`, `error` or `critical`.
        #[serde(default)]
        level: String,
        /// The text.
        message: String,
        /// The agent step it belongs to.
        #[serde(default)]
        step: Option<u32>,
    },
    /// `init_problem` returned: the problem and the prompt built from it.
    Problem {
        /// The problem's description (first value of `init_problem`).
        #[serde(default)]
        task_desc: String,
        /// Its instructions (second value).
        #[serde(default)]
        instructions: String,
        /// Its action API: name → docstring (third value).
        #[serde(default)]
        actions: JsonObject,
        /// The system message the agent was given.
        system_prompt: String,
        /// The first user message (the task) the agent was given.
        task_message: String,
        /// How long `init_problem` took (deploy, inject, workload).
        #[serde(default, alias = "init_seconds")]
        setup_seconds: Option<f64>,
    },
    /// The agent got an answer from the LLM: the conversation side of the
    /// call (the worker's proxy records the call itself).
    LlmCall {
        /// The step it served.
        step: u32,
        /// The text the orchestrator gave the agent this step.
        #[serde(default)]
        input: String,
        /// The reply text.
        response: String,
        /// How many attempts the call took (retries + 1).
        #[serde(default)]
        attempts: Option<u32>,
        /// Round trip of the successful attempt, as the driver saw it.
        #[serde(default)]
        latency_ms: Option<f64>,
    },
    /// The agent dropped its oldest turns to stay within its context budget.
    ContextTrimmed {
        /// The step whose request was trimmed.
        step: u32,
        /// How many messages were left out.
        dropped_messages: u32,
        /// The estimated size before trimming.
        #[serde(default)]
        tokens_before: Option<u64>,
        /// The estimated size after trimming.
        #[serde(default)]
        tokens_after: Option<u64>,
        /// The budget.
        #[serde(default)]
        budget: Option<u64>,
    },
    /// One agent step finished: the action and the environment's response.
    Step {
        /// 1-based step number.
        step: u32,
        /// The agent's reply (the action text).
        action: String,
        /// The API called, as AIOpsLab's parser read it (`None`: unparsable).
        #[serde(default)]
        api: Option<String>,
        /// What the environment answered.
        #[serde(default)]
        env_response: String,
    },
    /// AIOpsLab's evaluation exists: its results and the submission. Sent
    /// before anything that runs after the evaluation (session file, fault
    /// recovery, application cleanup), so a failure there cannot lose it.
    Result {
        /// AIOpsLab's results dict.
        #[serde(default)]
        results: JsonObject,
        /// The final state, stringified (AIOpsLab returns an enum).
        #[serde(default)]
        final_state: Option<String>,
        /// What the agent submitted (`null` when it never submitted).
        #[serde(default)]
        solution: Value,
        /// AIOpsLab's `framework_overhead` (seconds).
        #[serde(default)]
        framework_overhead: Option<f64>,
        /// Steps the agent took.
        #[serde(default)]
        steps: Option<u32>,
        /// AIOpsLab's session file, when already written.
        #[serde(default)]
        session_file: Option<String>,
        /// Phase timings in seconds (`setup_seconds`, `agent_seconds`, `eval_seconds`).
        #[serde(default)]
        phases: JsonObject,
    },
    /// Everything after the evaluation succeeded.
    Cleanup {
        /// Seconds spent after the evaluation.
        #[serde(default)]
        cleanup_seconds: Option<f64>,
        /// AIOpsLab's session file.
        #[serde(default)]
        session_file: Option<String>,
    },
    /// Something after the evaluation raised: a cluster-health event, not a
    /// failure of the episode.
    CleanupError {
        /// Which step raised (`session_file`, `recover_fault`, `app_cleanup`, `stock_teardown`).
        #[serde(default)]
        stage: String,
        /// What happened.
        message: String,
        /// The Python traceback.
        #[serde(default)]
        traceback: Option<String>,
        /// Seconds spent after the evaluation.
        #[serde(default)]
        cleanup_seconds: Option<f64>,
        /// AIOpsLab's session file, when it was written.
        #[serde(default)]
        session_file: Option<String>,
    },
    /// The run could not be carried out.
    Error {
        /// A stable code (`llm_endpoint_error`, `aiopslab_error`, ...).
        code: String,
        /// What happened.
        message: String,
        /// The Python traceback, when there is one.
        #[serde(default)]
        traceback: Option<String>,
    },
    /// Infrastructure mode: one shared component is in place.
    Infra {
        /// `openebs` or `prometheus`.
        component: String,
        /// `installed` or `already_present`.
        state: String,
        /// How long it took.
        #[serde(default)]
        seconds: Option<f64>,
    },
    /// Infrastructure mode: everything is in place.
    InfraDone {
        /// How long it took in all.
        #[serde(default)]
        seconds: Option<f64>,
    },
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl DriverEvent {
    /// Parses one line; the error says what was wrong with it.
    pub fn parse(line: &str) -> Result<DriverEvent, String> {
        serde_json::from_str(line).map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_events_and_ignores_extra_fields() {
        let event = DriverEvent::parse(r#"{"event":"log","level":"info","message":"hi","ts":1.5}"#).unwrap();
        assert_eq!(
            event,
            DriverEvent::Log {
                level: "info".into(),
                message: "hi".into(),
                step: None
            }
        );
        let event = DriverEvent::parse(r#"{"event":"step","step":2,"action":"a","env_response":"b"}"#).unwrap();
        assert!(matches!(event, DriverEvent::Step { step: 2, .. }));
        assert_eq!(
            DriverEvent::parse(r#"{"event":"brand_new"}"#).unwrap(),
            DriverEvent::Unknown
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(DriverEvent::parse("not json").is_err());
        assert!(DriverEvent::parse(r#"{"no_event": 1}"#).is_err());
        assert!(DriverEvent::parse(r#"{"event":"step","step":"x"}"#).is_err());
    }
}
