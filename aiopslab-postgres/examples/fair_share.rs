//! Fair share between experiments, shown with the real scheduler and worker runtime (issue 15): one experiment
//! submits 1,000 tasks, then another submits 10; four workers run them on the simulated backend (3 steps of 10 ms).
//! Oldest first, the small experiment's tasks would start 1,001st to 1,010th; served in turn, each of them starts
//! within the first ~20 starts.
//!
//! ```text
//! cargo run --release -p aiopslab-postgres --example fair_share
//! ```
//!
//! Runs the scenario on the embedded `MemoryStore` and on PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a scratch database of its own, dropped at the end), and prints
//! one JSON document: for each store the start order — the positions (1-based, in the order the workers' backends
//! were handed their tasks) at which the small experiment's 10 tasks started, the first 24 starts by experiment, and
//! what oldest-first would have given.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    BackendError, ClusterBackend, DefaultScheduler, LeasePolicy, MemoryStore, NewTask, RunContext, RunReport,
    SimulatedBackend, SimulatedConfig, Task, TaskSpec, TaskStore,
};
use aiopslab_postgres::{PgStore, PgStoreOptions};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use tokio_util::sync::CancellationToken;

/// The big experiment's tasks, submitted first.
const BIG: usize = 1_000;
/// The small experiment's tasks, submitted after.
const SMALL: usize = 10;
/// Workers (one slot each).
const WORKERS: usize = 4;
/// Starts shown in the report.
const SHOWN: usize = 24;
/// The problem every task runs (the simulated backend knows AIOpsLab's catalog).
const PROBLEM: &str = "misconfig_app_hotel_res-detection-1";

/// The simulated backend, recording the order in which tasks are handed to it (the order they start).
struct Recording {
    inner: SimulatedBackend,
    starts: Arc<Mutex<Vec<Option<String>>>>,
}

#[async_trait]
impl ClusterBackend for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        self.inner.prepare().await
    }

    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport {
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task.experiment.clone());
        self.inner.run(task, ctx).await
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.inner.reset().await
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.inner.shutdown().await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let policy = LeasePolicy::default().with_dispatch_delay(Duration::ZERO);
    let memory: Arc<dyn TaskStore> = Arc::new(MemoryStore::with_policy(policy));
    let memory_report = scenario("memory", memory).await?;

    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
    let name = format!("aiopslab_fair_{}", std::process::id());
    let mut conn = admin.connect().await.context("cannot connect to DATABASE_URL")?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    let options = PgStoreOptions::default();
    let postgres = PgStore::from_options(options.apply(admin.clone().database(&name)), policy, &options)?;
    let postgres_report = async {
        postgres.migrate().await?;
        let store: Arc<dyn TaskStore> = Arc::new(postgres.clone());
        scenario("postgres", store).await
    }
    .await;
    postgres.close().await;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    conn.close().await?;

    let report = json!({
        "scenario": format!(
            "experiment big submits {BIG} tasks, then experiment small submits {SMALL}, all of priority 5; \
             {WORKERS} workers (one slot each) on the simulated backend, 3 steps of 10 ms"
        ),
        "oldest_first_positions_of_small": ((BIG + 1)..=(BIG + SMALL)).collect::<Vec<_>>(),
        "fair_share_bound": 2 * SMALL,
        "stores": [memory_report, postgres_report?],
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Runs the scenario on `store`: submits, starts the workers, waits until the small experiment's tasks have all
/// started (and a few more starts), stops the workers; returns the start order.
async fn scenario(label: &str, store: Arc<dyn TaskStore>) -> anyhow::Result<serde_json::Value> {
    let spec = |experiment: &str| -> anyhow::Result<TaskSpec> {
        Ok(NewTask {
            experiment: Some(experiment.to_string()),
            ..NewTask::new(PROBLEM)
        }
        .validate()?)
    };
    store.create_tasks(vec![spec("big")?; BIG]).await?;
    store.create_tasks(vec![spec("small")?; SMALL]).await?;

    let starts = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let scheduler = Arc::new(DefaultScheduler::new(store.clone()));
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let backend = Arc::new(Recording {
            inner: SimulatedBackend::new(
                SimulatedConfig::default()
                    .with_steps(3)
                    .with_step_delay(Duration::from_millis(10)),
            ),
            starts: starts.clone(),
        });
        let mut config = WorkerConfig::new(format!("fair-{label}-{i}"), "default");
        config.poll_interval = Duration::from_millis(50);
        let runtime = WorkerRuntime::new(store.clone(), scheduler.clone(), backend, config);
        workers.push(tokio::spawn(runtime.run(shutdown.clone())));
    }
    let observed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let seen: Vec<Option<String>> = starts.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let small = seen.iter().filter(|e| e.as_deref() == Some("small")).count();
            if small == SMALL && seen.len() >= SHOWN {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the small experiment's tasks did not all start within 120 s")?;
    shutdown.cancel();
    for worker in workers {
        worker.await??;
    }
    let positions: Vec<usize> = observed
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_deref() == Some("small"))
        .map(|(i, _)| i + 1)
        .collect();
    let last = positions.last().copied().unwrap_or_default();
    eprintln!("{label}: the small experiment's {SMALL} tasks started at positions {positions:?}");
    Ok(json!({
        "store": label,
        "small_start_positions": positions,
        "small_all_started_by_start": last,
        "within_fair_share": last <= 2 * SMALL,
        "first_starts": observed
            .iter()
            .take(SHOWN)
            .map(|e| e.as_deref().unwrap_or("-"))
            .collect::<Vec<_>>(),
    }))
}
