//! [`SimulatedBackend`]: runs AIOpsLab-shaped episodes without a cluster.
//!
//! It lets the whole system (queue, workers, logs, trajectories, results)
//! run on a laptop or in CI: each run plays a scripted, seeded episode of a
//! catalog problem step by step, writing log entries, a trajectory with
//! fake LLM calls, and an evaluation shaped like AIOpsLab's for the
//! problem's task type. Every record it makes says `simulated`.
//!
//! Unknown problem ids fail at once with code `unknown_problem`; runs honour
//! cancellation (`cancelled`) and their deadline (`timeout`); failures can
//! be injected on purpose through [`FailureMode`].

mod config;
mod episode;

pub use config::{FailureMode, SimulatedConfig};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::backend::{ClusterBackend, RunContext, RunReport};
use crate::catalog::{self, Problem};
use crate::error::BackendError;
use crate::log::{LogLevel, NewLogEntry};
use crate::task::{JsonObject, Task, TaskResult, TerminalStatus};
use crate::trajectory::{reward_from_evaluation, LlmCall, Trajectory, TrajectoryMessage};

/// A [`ClusterBackend`] that simulates episodes. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct SimulatedBackend {
    config: SimulatedConfig,
}

impl SimulatedBackend {
    /// A backend with the given settings.
    pub fn new(config: SimulatedConfig) -> Self {
        Self { config }
    }

    /// Its settings.
    pub fn config(&self) -> &SimulatedConfig {
        &self.config
    }
}

/// Why a step wait ended early.
enum Interrupted {
    Cancelled,
    DeadlinePassed,
}

/// Waits one step's delay, or less if the run is cancelled or out of time.
async fn step_wait(ctx: &RunContext, delay: std::time::Duration) -> Result<(), Interrupted> {
    if ctx.cancel.is_cancelled() {
        return Err(Interrupted::Cancelled);
    }
    if Instant::now() >= ctx.deadline {
        return Err(Interrupted::DeadlinePassed);
    }
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(Interrupted::Cancelled),
        _ = tokio::time::sleep_until(ctx.deadline) => Err(Interrupted::DeadlinePassed),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}

fn obj(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// The episode's trajectory so far, to which each step adds.
struct Recorder<'a> {
    trajectory: Trajectory,
    model: String,
    sampling: JsonObject,
    ctx: &'a RunContext,
}

impl Recorder<'_> {
    async fn log(&self, level: LogLevel, message: String, step: Option<u32>, action: Option<&str>) {
        let mut entry = NewLogEntry::new(level, message);
        entry.context.step = step;
        entry.context.action = action.map(str::to_string);
        self.ctx.logs.log(entry).await;
    }

    /// A report for a run that ended early, keeping the partial trajectory.
    fn ended(self, status: TerminalStatus, code: &str, message: String) -> RunReport {
        let mut report = RunReport::ended(status, code, message);
        report.trajectory = Some(self.trajectory);
        report
    }
}

fn started_message(task: &Task, problem: &Problem, steps: u32) -> String {
    format!(
        "Starting simulated run of {} ({} on {:?}, {steps} steps): no cluster is used",
        task.problem_id, problem.task_type, problem.application
    )
}

#[async_trait]
impl ClusterBackend for SimulatedBackend {
    fn name(&self) -> &str {
        "simulated"
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        tracing::info!(
            steps = self.config.steps,
            seed = self.config.seed,
            "simulated backend ready (no cluster)"
        );
        Ok(())
    }

    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport {
        let started = Instant::now();
        let Some(problem) = catalog::find(&task.problem_id) else {
            let message = format!(
                "unknown problem id {:?}: it is not one of the {} problems in the AIOpsLab catalog (see /problems)",
                task.problem_id,
                catalog::PROBLEMS.len()
            );
            ctx.logs.error(message.clone()).await;
            return RunReport::failed("unknown_problem", message);
        };
        let steps = self.config.steps.min(task.parameters.max_steps).max(1);
        let plan = episode::plan(problem, steps, self.config.seed);
        let failure = self.config.failure_for(&task.problem_id);

        let agent_config = &task.parameters.agent_config;
        let model = agent_config
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("simulated-agent")
            .to_string();
        let sampling: JsonObject = ["temperature", "top_p", "max_tokens"]
            .into_iter()
            .filter_map(|key| agent_config.get(key).map(|v| (key.to_string(), v.clone())))
            .collect();
        let mut recorder = Recorder {
            trajectory: Trajectory {
                task_id: task.id,
                messages: vec![
                    TrajectoryMessage::new("system", plan.system_prompt.clone()),
                    TrajectoryMessage::new("user", plan.task_description.clone()),
                ],
                metadata: obj(json!({
                    "simulated": true,
                    "backend": "simulated",
                    "seed": self.config.seed,
                    "problem_id": problem.id,
                    "task_type": problem.task_type,
                    "application": problem.application,
                })),
                ..Trajectory::default()
            },
            model,
            sampling,
            ctx: &ctx,
        };
        recorder
            .log(LogLevel::Info, started_message(task, problem, steps), None, None)
            .await;

        match failure {
            FailureMode::Hang => {
                recorder
                    .log(
                        LogLevel::Warning,
                        "simulated hang: this run never returns".into(),
                        None,
                        None,
                    )
                    .await;
                std::future::pending::<()>().await;
            }
            FailureMode::Always => {
                let message = format!(
                    "simulated failure injected for {} before the first step",
                    task.problem_id
                );
                recorder.log(LogLevel::Error, message.clone(), None, None).await;
                return recorder.ended(TerminalStatus::Failed, "simulated_failure", message);
            }
            FailureMode::Never | FailureMode::AtStep(_) => {}
        }

        for (index, step) in plan.steps.iter().enumerate() {
            let number = index as u32 + 1;
            match step_wait(&ctx, self.config.step_delay).await {
                Ok(()) => {}
                Err(Interrupted::Cancelled) => {
                    let message = format!("run cancelled before step {number} of {steps}");
                    recorder
                        .log(LogLevel::Warning, message.clone(), Some(number), None)
                        .await;
                    return recorder.ended(TerminalStatus::Cancelled, "cancelled", message);
                }
                Err(Interrupted::DeadlinePassed) => {
                    let message = format!(
                        "run exceeded its {} minute limit before step {number} of {steps}",
                        task.parameters.timeout_minutes
                    );
                    recorder.log(LogLevel::Error, message.clone(), Some(number), None).await;
                    return recorder.ended(TerminalStatus::Timeout, "timeout", message);
                }
            }
            if *failure == FailureMode::AtStep(number) {
                let message = format!("simulated failure injected at step {number} of {steps}");
                recorder
                    .log(LogLevel::Error, message.clone(), Some(number), Some(step.action))
                    .await;
                return recorder.ended(TerminalStatus::Failed, "simulated_failure", message);
            }
            let request = recorder.trajectory.messages.clone();
            recorder.trajectory.llm_calls.push(LlmCall {
                step: Some(number),
                request,
                response: step.reply.clone(),
                model: Some(recorder.model.clone()),
                sampling: recorder.sampling.clone(),
                usage: Some(step.usage),
                latency_ms: step.latency_ms,
                logprobs: None,
                token_ids: None,
                prompt_token_ids: None,
                model_version: None,
            });
            recorder
                .trajectory
                .messages
                .push(TrajectoryMessage::new("assistant", step.reply.clone()));
            recorder
                .trajectory
                .messages
                .push(TrajectoryMessage::new("env", step.observation.clone()));
            recorder
                .log(
                    LogLevel::Info,
                    format!("step {number}/{steps}: {}", step.action),
                    Some(number),
                    Some(step.action),
                )
                .await;
        }

        let evaluation = plan.evaluation.clone();
        let reward = reward_from_evaluation(problem.task_type, &evaluation);
        let verdict = evaluation
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "steps" | "in_tokens" | "out_tokens"))
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", ");
        recorder
            .log(
                LogLevel::Info,
                format!("submitted {}; evaluation: {verdict}; reward {reward}", plan.solution),
                Some(steps),
                Some("submit"),
            )
            .await;

        let mut metrics = evaluation.clone();
        metrics.insert("duration_seconds".into(), json!(started.elapsed().as_secs_f64()));
        metrics.insert("steps_taken".into(), json!(steps));
        let result = TaskResult {
            logs: vec![
                format!("Simulated run of {} (no cluster was used)", task.problem_id),
                format!("Agent submitted {} after {steps} steps", plan.solution),
                format!("Evaluation: {verdict}"),
            ],
            metrics,
            output: obj(json!({"solution": plan.solution, "simulated": true})),
        };
        let mut trajectory = recorder.trajectory;
        trajectory.reward = Some(reward);
        trajectory.evaluation = evaluation;
        RunReport::completed(result, Some(trajectory))
    }

    async fn reset(&self) -> Result<(), BackendError> {
        tracing::debug!("simulated backend reset (nothing to clean)");
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        tracing::info!("simulated backend shut down (nothing to release)");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
