//! [`EpisodeRecorder`]: turns the driver's event lines into task log
//! entries while the run goes, and into the run's report when it ends (the
//! trajectory, `result.metrics`, `result.output.solution`, the status).
//!
//! The conversation (messages) comes from the driver's events; the LLM
//! calls themselves (request, reply, usage, latency, token ids, logprobs)
//! come from the worker's own proxy record ([`EpisodeRecorder::set_llm_calls`]),
//! never from what the driver says about itself.
//!
//! It is pure (no I/O), so the whole mapping is tested without a process.
//! Malformed lines become warnings; they never end a run.

use std::time::Duration;

use serde_json::{json, Value};

use aiopslab_core::{
    reward_from_evaluation, JsonObject, LlmCall, LogLevel, NewLogEntry, RunReport, TaskId, TaskResult, TaskType,
    TerminalStatus, TokenUsage, Trajectory, TrajectoryMessage,
};

use crate::events::{DriverEvent, PROTOCOL_VERSION};
use crate::tools::tail;

/// How the driver process ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// It exited by itself.
    Exited {
        /// Its exit code, when it exited normally.
        code: Option<i32>,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// The task was cancelled and the process group stopped.
    Cancelled,
    /// The deadline passed and the process group was stopped.
    TimedOut {
        /// The task's `timeout_minutes`.
        timeout_minutes: u32,
    },
}

/// What the run is about, fixed before it starts.
#[derive(Debug, Clone)]
pub struct EpisodeInfo {
    /// The task.
    pub task_id: TaskId,
    /// Its problem.
    pub problem_id: String,
    /// The problem's task type (for the reward).
    pub task_type: TaskType,
    /// Kept in the trajectory's metadata (`backend`, `cluster`, `worker_id`, ...).
    pub metadata: JsonObject,
}

/// What failed after the evaluation existed (a cluster-health event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupFailure {
    /// The step that raised (`recover_fault`, `app_cleanup`, `stock_teardown`, ...).
    pub stage: String,
    /// What it raised.
    pub message: String,
}

struct ResultEvent {
    results: JsonObject,
    final_state: Option<String>,
    solution: Value,
    framework_overhead: Option<f64>,
    steps: Option<u32>,
    session_file: Option<String>,
    phases: JsonObject,
}

/// Accumulates one run's events. See the module docs.
pub struct EpisodeRecorder {
    info: EpisodeInfo,
    trajectory: Trajectory,
    last_step: Option<(u32, String)>,
    steps_seen: u32,
    agent_turns: u32,
    setup_seconds: Option<f64>,
    result: Option<ResultEvent>,
    cleanup_seconds: Option<f64>,
    cleanup_failure: Option<CleanupFailure>,
    context_trims: Vec<Value>,
    failed_llm_calls: u32,
    error: Option<(String, String)>,
    malformed: u32,
    summary: Vec<String>,
}

fn excerpt(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn level_from(level: &str) -> LogLevel {
    level.parse().unwrap_or(match level {
        "warn" => LogLevel::Warning,
        "fatal" => LogLevel::Critical,
        _ => LogLevel::Info,
    })
}

impl EpisodeRecorder {
    /// A recorder for one run.
    pub fn new(info: EpisodeInfo) -> Self {
        let trajectory = Trajectory {
            task_id: info.task_id,
            metadata: info.metadata.clone(),
            ..Trajectory::default()
        };
        Self {
            info,
            trajectory,
            last_step: None,
            steps_seen: 0,
            agent_turns: 0,
            setup_seconds: None,
            result: None,
            cleanup_seconds: None,
            cleanup_failure: None,
            context_trims: Vec::new(),
            failed_llm_calls: 0,
            error: None,
            malformed: 0,
            summary: Vec::new(),
        }
    }

    /// Adds a line to the short summary kept in `result.logs`.
    pub fn note(&mut self, line: impl Into<String>) {
        self.summary.push(line.into());
    }

    /// How many malformed lines were seen.
    pub fn malformed_lines(&self) -> u32 {
        self.malformed
    }

    /// Whether a result event arrived.
    pub fn has_result(&self) -> bool {
        self.result.is_some()
    }

    /// What failed after the evaluation, if anything did.
    pub fn cleanup_failure(&self) -> Option<&CleanupFailure> {
        self.cleanup_failure.as_ref()
    }

    /// The LLM calls of the run as the worker's proxy recorded them (the
    /// successful ones, in order), and how many attempts failed.
    pub fn set_llm_calls(&mut self, calls: Vec<LlmCall>, failed_attempts: u32) {
        self.trajectory.llm_calls = calls;
        self.failed_llm_calls = failed_attempts;
    }

    /// Takes one line of the event channel; returns the log entries it makes.
    pub fn apply_line(&mut self, line: &str) -> Vec<NewLogEntry> {
        let line = line.trim();
        if line.is_empty() {
            return Vec::new();
        }
        match DriverEvent::parse(line) {
            Ok(event) => self.apply(event),
            Err(err) => {
                self.malformed += 1;
                vec![NewLogEntry::new(
                    LogLevel::Warning,
                    format!("ignored a malformed driver event ({err}): {}", excerpt(line, 200)),
                )]
            }
        }
    }

    /// Takes one parsed event; returns the log entries it makes.
    pub fn apply(&mut self, event: DriverEvent) -> Vec<NewLogEntry> {
        match event {
            DriverEvent::Hello {
                protocol,
                python,
                aiopslab,
                orchestrator,
            } => {
                let mut entries = vec![NewLogEntry::new(
                    LogLevel::Info,
                    format!(
                        "driver started: Python {}, aiopslab from {}, {} orchestrator",
                        excerpt(&python, 40),
                        aiopslab.as_deref().unwrap_or("?"),
                        orchestrator.as_deref().unwrap_or("?")
                    ),
                )];
                if protocol != PROTOCOL_VERSION {
                    entries.push(NewLogEntry::new(
                        LogLevel::Warning,
                        format!("driver speaks event protocol {protocol}, expected {PROTOCOL_VERSION}"),
                    ));
                }
                entries
            }
            DriverEvent::Log { level, message, step } => {
                let mut entry = NewLogEntry::new(level_from(&level), message);
                entry.context.step = step;
                vec![entry]
            }
            DriverEvent::Problem {
                task_desc,
                instructions,
                actions,
                system_prompt,
                task_message,
                setup_seconds,
            } => {
                self.setup_seconds = setup_seconds;
                let names: Vec<&str> = actions.keys().map(String::as_str).collect();
                let message = format!(
                    "problem {} initialised{}; actions: {}",
                    self.info.problem_id,
                    setup_seconds.map(|s| format!(" in {s:.1} s")).unwrap_or_default(),
                    names.join(", ")
                );
                self.note(message.clone());
                self.trajectory
                    .messages
                    .insert(0, TrajectoryMessage::new("system", system_prompt));
                self.trajectory
                    .messages
                    .insert(1, TrajectoryMessage::new("user", task_message));
                let meta = &mut self.trajectory.metadata;
                meta.insert("task_desc".into(), Value::String(task_desc));
                meta.insert("instructions".into(), Value::String(instructions));
                meta.insert("actions".into(), Value::Object(actions));
                vec![NewLogEntry::new(LogLevel::Info, message)]
            }
            DriverEvent::Step {
                step,
                action,
                api,
                env_response,
            } => {
                self.steps_seen = self.steps_seen.max(step);
                let api = api
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "(unparsable reply)".to_string());
                let mut entry = NewLogEntry::new(
                    LogLevel::Info,
                    format!("step {step}: {api} → {}", excerpt(&env_response, 300)),
                )
                .at_step(step)
                .with_action(api);
                entry.context.details = Some(json!({ "action": excerpt(&action, 2000) }));
                self.last_step = Some((step, env_response));
                vec![entry]
            }
            DriverEvent::LlmCall {
                step,
                input,
                response,
                attempts,
                latency_ms,
            } => {
                self.agent_turns += 1;
                let message = format!(
                    "agent answered step {step}{}{}",
                    latency_ms.map(|ms| format!(" in {ms:.0} ms")).unwrap_or_default(),
                    attempts
                        .filter(|a| *a > 1)
                        .map(|a| format!(" after {a} attempts"))
                        .unwrap_or_default(),
                );
                self.trajectory.messages.push(TrajectoryMessage::new("env", input));
                self.trajectory
                    .messages
                    .push(TrajectoryMessage::new("assistant", response));
                vec![NewLogEntry::new(LogLevel::Debug, message).at_step(step)]
            }
            DriverEvent::ContextTrimmed {
                step,
                dropped_messages,
                tokens_before,
                tokens_after,
                budget,
            } => {
                let trim = json!({
                    "step": step, "dropped_messages": dropped_messages,
                    "tokens_before": tokens_before, "tokens_after": tokens_after, "budget": budget,
                });
                self.context_trims.push(trim);
                let message = format!(
                    "context trimmed before step {step}: {dropped_messages} oldest messages left out ({} → {} tokens, budget {})",
                    tokens_before.map_or("?".into(), |t| t.to_string()),
                    tokens_after.map_or("?".into(), |t| t.to_string()),
                    budget.map_or("?".into(), |t| t.to_string()),
                );
                vec![NewLogEntry::new(LogLevel::Info, message).at_step(step)]
            }
            DriverEvent::Result {
                results,
                final_state,
                solution,
                framework_overhead,
                steps,
                session_file,
                phases,
            } => {
                let message = format!(
                    "evaluation: {}",
                    excerpt(&Value::Object(results.clone()).to_string(), 500)
                );
                self.note(format!("agent submitted {solution}"));
                self.note(message.clone());
                self.result = Some(ResultEvent {
                    results,
                    final_state,
                    solution,
                    framework_overhead,
                    steps,
                    session_file,
                    phases,
                });
                vec![NewLogEntry::new(LogLevel::Info, message)]
            }
            DriverEvent::Cleanup {
                cleanup_seconds,
                session_file,
            } => {
                self.cleanup_seconds = cleanup_seconds;
                self.keep_session_file(session_file);
                vec![NewLogEntry::new(
                    LogLevel::Info,
                    format!(
                        "after the evaluation: fault recovered and application cleaned up{}",
                        cleanup_seconds.map(|s| format!(" in {s:.1} s")).unwrap_or_default()
                    ),
                )]
            }
            DriverEvent::CleanupError {
                stage,
                message,
                traceback,
                cleanup_seconds,
                session_file,
            } => {
                self.cleanup_seconds = cleanup_seconds;
                self.keep_session_file(session_file);
                let text = format!(
                    "after the evaluation, {stage} failed: {message}; the evaluation is kept and the cluster \
                     is reset before the next task"
                );
                self.note(text.clone());
                let mut entry = NewLogEntry::new(LogLevel::Warning, text);
                entry.context.details = traceback.map(|tb| json!({ "traceback": tail(&tb, 4000), "stage": stage }));
                self.cleanup_failure = Some(CleanupFailure { stage, message });
                vec![entry]
            }
            DriverEvent::Error {
                code,
                message,
                traceback,
            } => {
                let mut entry = NewLogEntry::new(LogLevel::Error, format!("{code}: {message}"));
                entry.context.details = traceback.map(|tb| json!({ "traceback": tail(&tb, 4000) }));
                if self.error.is_none() {
                    self.error = Some((code, message));
                }
                vec![entry]
            }
            DriverEvent::Infra {
                component,
                state,
                seconds,
            } => vec![NewLogEntry::new(
                LogLevel::Info,
                format!(
                    "shared infrastructure: {component} {}{}",
                    state.replace('_', " "),
                    seconds.map(|s| format!(" in {s:.1} s")).unwrap_or_default()
                ),
            )],
            DriverEvent::InfraDone { seconds } => vec![NewLogEntry::new(
                LogLevel::Info,
                format!(
                    "shared infrastructure ready{}",
                    seconds.map(|s| format!(" in {s:.1} s")).unwrap_or_default()
                ),
            )],
            DriverEvent::Unknown => {
                self.malformed += 1;
                vec![NewLogEntry::new(
                    LogLevel::Warning,
                    "ignored a driver event of unknown kind",
                )]
            }
        }
    }

    fn keep_session_file(&mut self, session_file: Option<String>) {
        if let (Some(result), Some(file)) = (self.result.as_mut(), session_file) {
            result.session_file = Some(file);
        }
    }

    fn steps_taken(&self) -> u32 {
        let from_results = self.result.as_ref().and_then(|r| {
            r.steps
                .or_else(|| r.results.get("steps").and_then(Value::as_u64).map(|s| s as u32))
        });
        from_results.unwrap_or_else(|| self.steps_seen.max(self.agent_turns))
    }

    fn metrics(&self, elapsed: Duration) -> JsonObject {
        let mut metrics = JsonObject::new();
        if let Some(result) = &self.result {
            for (key, value) in &result.results {
                metrics.insert(key.clone(), value.clone());
            }
            if let Some(overhead) = result.framework_overhead {
                metrics.insert("framework_overhead".into(), json!(overhead));
            }
            for (key, value) in &result.phases {
                metrics.insert(key.clone(), value.clone());
            }
        }
        metrics.insert("duration_seconds".into(), json!(elapsed.as_secs_f64()));
        metrics.insert("steps_taken".into(), json!(self.steps_taken()));
        if let Some(setup) = self.setup_seconds {
            metrics.entry("setup_seconds").or_insert(json!(setup));
        }
        if let Some(cleanup) = self.cleanup_seconds {
            metrics.insert("cleanup_seconds".into(), json!(cleanup));
        }
        let calls = &self.trajectory.llm_calls;
        metrics.insert("llm_calls".into(), json!(calls.len()));
        if self.failed_llm_calls > 0 {
            metrics.insert("llm_failed_calls".into(), json!(self.failed_llm_calls));
        }
        if calls.iter().any(|call| call.usage.is_some()) {
            let sum = |f: fn(&TokenUsage) -> u64| calls.iter().filter_map(|c| c.usage.as_ref()).map(f).sum::<u64>();
            metrics.insert("llm_prompt_tokens".into(), json!(sum(|u| u.prompt_tokens)));
            metrics.insert("llm_completion_tokens".into(), json!(sum(|u| u.completion_tokens)));
        }
        if !self.context_trims.is_empty() {
            metrics.insert("context_trims".into(), json!(self.context_trims.len()));
        }
        metrics
    }

    /// The report of the run, given how the driver ended and how long it took.
    pub fn finish(mut self, end: RunEnd, elapsed: Duration) -> RunReport {
        // The environment's answer to the last action is never fed back to the
        // agent, so it only arrives as a step event: keep it as the last message.
        if let Some((step, response)) = self.last_step.take() {
            if step >= self.agent_turns {
                self.trajectory.messages.push(TrajectoryMessage::new("env", response));
            }
        }
        let metrics = self.metrics(elapsed);
        let (status, error) = self.outcome(&end);
        if let Some((_, message)) = &error {
            self.note(message.clone());
        }
        let meta = &mut self.trajectory.metadata;
        meta.insert("complete".into(), json!(status == TerminalStatus::Completed));
        if !self.context_trims.is_empty() {
            meta.insert(
                "context_trims".into(),
                Value::Array(std::mem::take(&mut self.context_trims)),
            );
        }
        let mut output = JsonObject::new();
        if let Some(failure) = &self.cleanup_failure {
            output.insert(
                "cleanup_error".into(),
                json!({"stage": failure.stage, "message": failure.message}),
            );
        }
        match self.result.take() {
            Some(result) => {
                output.insert("solution".into(), result.solution);
                output.insert("final_state".into(), json!(result.final_state));
                if let Some(file) = result.session_file {
                    output.insert("session_file".into(), json!(file));
                }
                meta.insert("final_state".into(), json!(result.final_state));
                self.trajectory.reward = Some(reward_from_evaluation(self.info.task_type, &result.results));
                self.trajectory.evaluation = result.results;
            }
            None => {
                output.insert("solution".into(), Value::Null);
            }
        }
        let result = TaskResult {
            logs: self.summary,
            metrics,
            output,
        };
        let has_episode = !self.trajectory.messages.is_empty();
        let trajectory = has_episode.then_some(self.trajectory);
        match error {
            None => RunReport::completed(result, trajectory),
            Some((code, message)) => {
                let mut report = RunReport::ended(status, &code, message);
                report.result = Some(result);
                report.trajectory = trajectory;
                report
            }
        }
    }

    fn outcome(&self, end: &RunEnd) -> (TerminalStatus, Option<(String, String)>) {
        let stderr_note = |stderr: &str| {
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; last stderr: {}", tail(stderr, 1500))
            }
        };
        match end {
            RunEnd::Cancelled => (
                TerminalStatus::Cancelled,
                Some((
                    "cancelled".into(),
                    "cancelled while running: the driver's process group was stopped".into(),
                )),
            ),
            RunEnd::TimedOut { timeout_minutes } => (
                TerminalStatus::Timeout,
                Some((
                    "timeout".into(),
                    format!(
                        "the run exceeded its {timeout_minutes} minute limit after {} agent steps: \
                         the driver's process group was killed",
                        self.steps_taken()
                    ),
                )),
            ),
            RunEnd::Exited { .. } if self.result.is_some() => (TerminalStatus::Completed, None),
            RunEnd::Exited {
                code,
                signal,
                stderr_tail,
            } => {
                let how = match (code, signal) {
                    (_, Some(sig)) => format!("was killed by signal {sig}"),
                    (Some(code), None) => format!("exited with code {code}"),
                    (None, None) => "exited".to_string(),
                };
                let garbage = if self.malformed > 0 {
                    format!(" ({} malformed event lines ignored)", self.malformed)
                } else {
                    String::new()
                };
                let failure = match &self.error {
                    Some((code_name, message)) => (
                        code_name.clone(),
                        format!("{message} (driver {how}){}", stderr_note(stderr_tail)),
                    ),
                    None if *code == Some(0) => (
                        "driver_protocol".into(),
                        format!(
                            "the driver {how} without reporting a result{garbage}{}",
                            stderr_note(stderr_tail)
                        ),
                    ),
                    None => (
                        "driver_crashed".into(),
                        format!(
                            "the driver {how} before reporting a result{garbage}{}",
                            stderr_note(stderr_tail)
                        ),
                    ),
                };
                (TerminalStatus::Failed, Some(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> EpisodeRecorder {
        EpisodeRecorder::new(EpisodeInfo {
            task_id: TaskId::nil(),
            problem_id: "misconfig_app_hotel_res-detection-1".into(),
            task_type: TaskType::Detection,
            metadata: JsonObject::new(),
        })
    }

    fn exited(code: i32) -> RunEnd {
        RunEnd::Exited {
            code: Some(code),
            signal: None,
            stderr_tail: String::new(),
        }
    }

    fn feed(rec: &mut EpisodeRecorder, lines: &[Value]) {
        for line in lines {
            rec.apply_line(&line.to_string());
        }
    }

    #[test]
    fn a_full_episode_becomes_a_completed_report() {
        let mut rec = recorder();
        feed(
            &mut rec,
            &[
                json!({"event": "problem", "task_desc": "d", "instructions": "i", "actions": {"submit": "doc"},
                       "system_prompt": "SYS", "task_message": "TASK", "init_seconds": 2.5}),
                json!({"event": "llm_call", "step": 1, "input": "Please take the next action",
                       "response": "R1", "latency_ms": 12.4}),
                json!({"event": "step", "step": 1, "action": "R1", "api": "exec_shell", "env_response": "E1"}),
                json!({"event": "llm_call", "step": 2, "input": "E1\nPlease take the next action",
                       "response": "R2"}),
                json!({"event": "step", "step": 2, "action": "R2", "api": "submit", "env_response": "VALID"}),
                json!({"event": "result", "results": {"Detection Accuracy": "Correct", "TTD": 1.5, "steps": 2},
                       "final_state": "VALID_SUBMISSION", "solution": "Yes",
                       "phases": {"setup_seconds": 2.5, "agent_seconds": 1.5, "eval_seconds": 0.1}}),
                json!({"event": "cleanup_error", "stage": "stock_teardown", "message": "openebs still there",
                       "cleanup_seconds": 300.0}),
            ],
        );
        let call = |prompt_tokens, latency_ms| LlmCall {
            usage: Some(TokenUsage {
                prompt_tokens,
                completion_tokens: 2,
                total_tokens: prompt_tokens + 2,
            }),
            latency_ms,
            ..LlmCall::default()
        };
        rec.set_llm_calls(vec![call(10, 12), call(20, 30)], 1);
        assert_eq!(rec.cleanup_failure().map(|f| f.stage.as_str()), Some("stock_teardown"));
        let report = rec.finish(exited(0), Duration::from_secs(3));
        assert_eq!(report.status, TerminalStatus::Completed);
        let result = report.result.unwrap();
        assert_eq!(result.metrics["steps_taken"], 2);
        assert_eq!(result.metrics["duration_seconds"], 3.0);
        assert_eq!(result.metrics["TTD"], 1.5);
        assert_eq!(result.metrics["Detection Accuracy"], "Correct");
        assert_eq!(result.metrics["llm_prompt_tokens"], 30);
        assert_eq!(result.output["solution"], "Yes");
        assert_eq!(result.metrics["setup_seconds"], 2.5);
        assert_eq!(result.metrics["agent_seconds"], 1.5);
        assert_eq!(result.metrics["cleanup_seconds"], 300.0);
        assert_eq!(result.metrics["llm_failed_calls"], 1);
        assert_eq!(result.output["cleanup_error"]["stage"], "stock_teardown");
        let trajectory = report.trajectory.unwrap();
        let roles: Vec<&str> = trajectory.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "env", "assistant", "env", "assistant", "env"]);
        assert_eq!(trajectory.messages.last().unwrap().content, "VALID");
        assert_eq!(trajectory.reward, Some(1.0));
        assert_eq!(trajectory.llm_calls[0].usage.unwrap().total_tokens, 12);
        assert_eq!(trajectory.llm_calls[0].latency_ms, 12);
    }

    #[test]
    fn malformed_lines_are_warnings_and_a_silent_exit_fails() {
        let mut rec = recorder();
        let entries = rec.apply_line("}}} definitely not json");
        assert_eq!(entries[0].level, LogLevel::Warning);
        rec.apply_line(r#"{"event": "mystery"}"#);
        let report = rec.finish(exited(0), Duration::from_secs(1));
        assert_eq!(report.status, TerminalStatus::Failed);
        let error = report.error.unwrap();
        assert_eq!(error.code, "driver_protocol");
        assert!(error.message.contains("2 malformed"), "{}", error.message);
    }

    #[test]
    fn error_events_and_crashes_name_the_reason() {
        let mut rec = recorder();
        rec.apply_line(r#"{"event": "error", "code": "llm_endpoint_error", "message": "HTTP 500"}"#);
        let report = rec.finish(exited(3), Duration::from_secs(1));
        let error = report.error.unwrap();
        assert_eq!(error.code, "llm_endpoint_error");
        assert!(error.message.contains("HTTP 500") && error.message.contains("code 3"));

        let report = recorder().finish(
            RunEnd::Exited {
                code: None,
                signal: Some(9),
                stderr_tail: "Traceback: boom".into(),
            },
            Duration::from_secs(1),
        );
        let error = report.error.unwrap();
        assert_eq!(error.code, "driver_crashed");
        assert!(error.message.contains("signal 9") && error.message.contains("boom"));
    }
}
