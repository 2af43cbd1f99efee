//! Bring your own backend: a host program that runs aiopslab tasks on a
//! `ClusterBackend` of its own, with the embedded store and the stock
//! worker runtime. This is what `cargo add aiopslab-core` gets you.
//!
//! Run it with `cargo run -p aiopslab-core --example custom_backend`.

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    BackendError, ClusterBackend, DefaultScheduler, LogLevel, MemoryStore, NewLogEntry, NewTask, RunContext, RunReport,
    Task, TaskResult, TaskStore, TerminalStatus,
};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// "Runs" a problem by logging three steps and echoing the problem id back.
struct EchoBackend;

#[async_trait]
impl ClusterBackend for EchoBackend {
    fn name(&self) -> &str {
        "echo"
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        Ok(()) // a real backend would create or check its cluster here
    }

    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport {
        let started = tokio::time::Instant::now();
        ctx.logs.info(format!("echo: starting {}", task.problem_id)).await;
        for step in 1..=3 {
            // Honour cancellation and the deadline, as every backend must.
            let (status, code) = tokio::select! {
                _ = ctx.cancel.cancelled() => (TerminalStatus::Cancelled, "cancelled"),
                _ = tokio::time::sleep_until(ctx.deadline) => (TerminalStatus::Timeout, "timeout"),
                _ = tokio::time::sleep(Duration::from_millis(200)) => (TerminalStatus::Completed, ""),
            };
            if status != TerminalStatus::Completed {
                return RunReport::ended(status, code, format!("stopped at step {step}"));
            }
            let entry = NewLogEntry::new(LogLevel::Info, format!("step {step}: echo")).at_step(step);
            ctx.logs.log(entry.with_action("echo")).await;
        }
        let object = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
        let result = TaskResult {
            logs: vec!["Echo backend ran 3 steps".into()],
            metrics: object(json!({"duration_seconds": started.elapsed().as_secs_f64(), "steps_taken": 3})),
            output: object(json!({"solution": format!("echo of {}", task.problem_id)})),
        };
        RunReport::completed(result, None)
    }

    async fn reset(&self) -> Result<(), BackendError> {
        Ok(()) // clean the cluster between tasks
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        Ok(()) // release what prepare acquired
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,aiopslab_core=warn".into()),
        )
        .init();

    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
    let mut ids = Vec::new();
    for problem_id in ["misconfig_app_hotel_res-detection-1", "my_own_problem-1"] {
        let task = store.create_task(NewTask::new(problem_id).validate()?).await?;
        println!("submitted {} ({problem_id})", task.id);
        ids.push(task.id);
    }

    let scheduler = Arc::new(DefaultScheduler::new(store.clone()));
    let mut config = WorkerConfig::new("echo-worker-1", "default");
    config.poll_interval = Duration::from_millis(200);
    let runtime = WorkerRuntime::new(store.clone(), scheduler, Arc::new(EchoBackend), config);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(runtime.run(shutdown.clone()));

    // Wait until every task has reached a terminal status.
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut tasks = Vec::new();
            for id in &ids {
                tasks.push(store.get_task(*id).await?);
            }
            if tasks.iter().all(|task| task.status.is_terminal()) {
                return anyhow::Ok(tasks);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("tasks did not finish within 30 s")??;

    for task in finished {
        let logs = store.get_logs(task.id, &Default::default()).await?;
        let result = serde_json::to_string(&task.result)?;
        println!(
            "{} {} {}: {} log entries, result {result}",
            task.id,
            task.problem_id,
            task.status,
            logs.len()
        );
    }

    shutdown.cancel();
    worker.await??;
    Ok(())
}
