//! Unit tests of the simulated backend, driving `run` directly (no store).

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::backend::LogSink;
use crate::log::NewLogEntry;
use crate::task::{NewTask, TaskStatus};

fn task(problem_id: &str, max_steps: i64) -> Task {
    let spec = NewTask {
        max_steps: Some(max_steps),
        ..NewTask::new(problem_id)
    }
    .validate()
    .unwrap();
    let now = Utc::now();
    Task {
        id: Uuid::new_v4(),
        problem_id: spec.problem_id,
        status: TaskStatus::Running,
        parameters: spec.parameters,
        worker_id: Some("w".into()),
        attempt: 1,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        completed_at: None,
        lease_expires_at: None,
        result: None,
        error_details: None,
        group_id: None,
        experiment: None,
        replaces: None,
    }
}

fn context(task: &Task, deadline: Duration) -> (RunContext, tokio::sync::mpsc::Receiver<NewLogEntry>) {
    let (logs, receiver) = LogSink::channel(1000);
    let ctx = RunContext {
        worker_id: "w".into(),
        lease: task.lease_token(),
        logs,
        cancel: CancellationToken::new(),
        deadline: Instant::now() + deadline,
    };
    (ctx, receiver)
}

fn drain(receiver: &mut tokio::sync::mpsc::Receiver<NewLogEntry>) -> Vec<NewLogEntry> {
    let mut entries = Vec::new();
    while let Ok(entry) = receiver.try_recv() {
        entries.push(entry);
    }
    entries
}

#[tokio::test(start_paused = true)]
async fn a_run_completes_with_result_logs_and_trajectory() {
    let backend = SimulatedBackend::default();
    let task = task("misconfig_app_hotel_res-detection-1", 30);
    let (ctx, mut receiver) = context(&task, Duration::from_secs(60));
    let started = Instant::now();
    let report = backend.run(&task, ctx).await;
    assert_eq!(started.elapsed(), Duration::from_secs(5), "5 steps of 1 s");

    assert_eq!(report.status, TerminalStatus::Completed);
    let result = report.result.unwrap();
    assert_eq!(result.metrics["steps_taken"], 5);
    assert_eq!(result.metrics["duration_seconds"], 5.0);
    assert!(result.metrics.contains_key("Detection Accuracy"));
    assert!(result.metrics.contains_key("TTD"));
    assert_eq!(result.output["simulated"], true);
    assert!(result.output["solution"].is_string());
    assert!(result.logs.iter().any(|line| line.contains("Simulated")));

    let trajectory = report.trajectory.unwrap();
    assert_eq!(trajectory.task_id, task.id);
    assert_eq!(trajectory.messages.len(), 2 + 2 * 5);
    assert_eq!(trajectory.messages[0].role, "system");
    assert_eq!(trajectory.llm_calls.len(), 5);
    assert!(trajectory.llm_calls.iter().all(|call| call.usage.is_some()));
    assert_eq!(trajectory.metadata["simulated"], true);
    let expected = reward_from_evaluation(crate::TaskType::Detection, &trajectory.evaluation);
    assert_eq!(trajectory.reward, Some(expected));

    let entries = drain(&mut receiver);
    let steps: Vec<_> = entries.iter().filter_map(|e| e.context.step).collect();
    assert!(steps.contains(&1) && steps.contains(&5), "{steps:?}");
    assert!(entries.iter().any(|e| e.context.action.as_deref() == Some("submit")));
}

#[tokio::test(start_paused = true)]
async fn max_steps_caps_the_episode() {
    let backend = SimulatedBackend::new(SimulatedConfig::instant(50));
    let task = task("auth_miss_mongodb-mitigation-1", 3);
    let (ctx, _receiver) = context(&task, Duration::from_secs(60));
    let report = backend.run(&task, ctx).await;
    assert_eq!(report.result.unwrap().metrics["steps_taken"], 3);
    assert_eq!(report.trajectory.unwrap().llm_calls.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn unknown_problems_fail_clearly() {
    let backend = SimulatedBackend::default();
    let task = task("misconfig_app_hotel_res-detection-7", 30);
    let (ctx, mut receiver) = context(&task, Duration::from_secs(60));
    let report = backend.run(&task, ctx).await;
    assert_eq!(report.status, TerminalStatus::Failed);
    let error = report.error.unwrap();
    assert_eq!(error.code, "unknown_problem");
    assert!(
        error.message.contains("misconfig_app_hotel_res-detection-7"),
        "{}",
        error.message
    );
    assert_eq!(drain(&mut receiver).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancellation_and_deadline_end_the_run() {
    let backend = SimulatedBackend::default();
    let task = task("misconfig_app_hotel_res-detection-1", 30);

    let (ctx, _receiver) = context(&task, Duration::from_secs(60));
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cancel.cancel();
    });
    let report = backend.run(&task, ctx).await;
    assert_eq!(report.status, TerminalStatus::Cancelled);
    assert_eq!(report.error.unwrap().code, "cancelled");
    assert_eq!(
        report.trajectory.unwrap().llm_calls.len(),
        2,
        "two steps ran before the cancel"
    );

    let (ctx, _receiver) = context(&task, Duration::from_millis(1500));
    let report = backend.run(&task, ctx).await;
    assert_eq!(report.status, TerminalStatus::Timeout);
    assert_eq!(report.error.unwrap().code, "timeout");
}

#[tokio::test(start_paused = true)]
async fn injected_failures_apply_to_the_chosen_problems() {
    let backend = SimulatedBackend::new(SimulatedConfig {
        failure: FailureMode::AtStep(2),
        failure_problems: Some(vec!["auth_miss_mongodb-detection-1".into()]),
        ..SimulatedConfig::instant(4)
    });
    let failing = task("auth_miss_mongodb-detection-1", 30);
    let (ctx, _receiver) = context(&failing, Duration::from_secs(60));
    let report = backend.run(&failing, ctx).await;
    assert_eq!(report.status, TerminalStatus::Failed);
    assert_eq!(report.error.unwrap().code, "simulated_failure");
    assert_eq!(report.trajectory.unwrap().llm_calls.len(), 1);

    let fine = task("auth_miss_mongodb-localization-1", 30);
    let (ctx, _receiver) = context(&fine, Duration::from_secs(60));
    assert_eq!(backend.run(&fine, ctx).await.status, TerminalStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn same_seed_and_problem_give_the_same_episode() {
    let run = |seed: u64| async move {
        let backend = SimulatedBackend::new(SimulatedConfig {
            seed,
            ..SimulatedConfig::instant(6)
        });
        let task = task("k8s_target_port-misconfig-localization-2", 30);
        let (ctx, _receiver) = context(&task, Duration::from_secs(60));
        backend.run(&task, ctx).await.trajectory.unwrap()
    };
    let (a, b) = (run(11).await, run(11).await);
    assert_ne!(a.task_id, b.task_id);
    assert_eq!(a.messages, b.messages);
    assert_eq!(a.llm_calls, b.llm_calls);
    assert_eq!(a.evaluation, b.evaluation);
    let mut others = Vec::new();
    for seed in 0..10 {
        others.push(run(seed).await.messages);
    }
    assert!(others.iter().any(|messages| *messages != a.messages));
}
