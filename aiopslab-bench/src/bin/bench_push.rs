//! Benchmark of pushed wake-ups (issue 13, item 1): how long an idle worker takes to claim a new task, and a
//! running one to stop a cancelled run, with the store's events and, side by side in the same run, with polling
//! and heartbeats alone (`WorkerConfig::store_events = false`, the behaviour before).
//!
//! ```text
//! cargo run --release -p aiopslab-bench --bin bench_push                   # 30 samples per case (about 2 minutes)
//! BENCH_SAMPLES=10 cargo run --release -p aiopslab-bench --bin bench_push  # a quick run
//! ```
//!
//! Four cases: a worker over HTTP (`HttpStore` to a server on a real loopback socket) or in-process, on the
//! embedded store or on PostgreSQL (a scratch database of its own from `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, dropped at the end). The worker has the default timings (poll
//! 2 s, heartbeat 10 s) and one slot; tasks are created (and cancelled) through the store the server serves. Per
//! case:
//!
//! - `claim_ms`: `started_at - created_at` of `BENCH_SAMPLES` (30) tasks created one at a time on an idle worker
//!   (both instants from the store's clock), the simulated run taking no time;
//! - `cancel_ms`: from just before a `cancel_task` of a running task (a 60 s simulated run) to its `completed_at`
//!   as `cancelled`, `BENCH_CANCEL_SAMPLES` (10) of them.
//!
//! The polling baseline runs `BENCH_BASELINE_SAMPLES` (4) of each (a cancel there waits for a heartbeat). Prints
//! one JSON document: p50/p90/p99/max per case and mode, the push/poll ratio of the p99s, and the issue's targets
//! (claim p99 < 50 ms over HTTP, cancel p99 < 1000 ms everywhere).

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    DefaultScheduler, LeasePolicy, MemoryStore, NewTask, SimulatedBackend, SimulatedConfig, TaskStatus, TaskStore,
    WorkerQueue,
};
use aiopslab_http::app::serve;
use aiopslab_http::client::HttpStore;
use aiopslab_http::server::{ApiConfig, ApiState};
use aiopslab_postgres::PgStore;
use anyhow::{ensure, Context};
use bench_support::{env_or, Scratch};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PROBLEM: &str = "misconfig_app_hotel_res-detection-1";

/// How a worker reaches its store.
#[derive(Clone, Copy)]
enum Transport {
    Http,
    InProcess,
}

struct Sizes {
    samples: usize,
    cancels: usize,
    baseline: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = Sizes {
        samples: env_or("BENCH_SAMPLES", 30)?,
        cancels: env_or("BENCH_CANCEL_SAMPLES", 10)?,
        baseline: env_or("BENCH_BASELINE_SAMPLES", 4)?,
    };
    let scratch = Scratch::create("aiopslab_bench_push").await?;
    let result = run(&scratch, &sizes).await;
    scratch.finish(result).await
}

async fn run(scratch: &Scratch, sizes: &Sizes) -> anyhow::Result<Value> {
    let policy = LeasePolicy::default().with_dispatch_delay(Duration::ZERO);
    let mut cases = serde_json::Map::new();
    for (store_name, transport, transport_name) in [
        ("memory", Transport::Http, "http"),
        ("memory", Transport::InProcess, "in_process"),
        ("postgres", Transport::Http, "http"),
        ("postgres", Transport::InProcess, "in_process"),
    ] {
        let store: Arc<dyn TaskStore> = match store_name {
            "memory" => Arc::new(MemoryStore::with_policy(policy)),
            _ => {
                let pg = PgStore::connect(&scratch.database_url(), policy).await?;
                pg.migrate().await?;
                Arc::new(pg)
            }
        };
        let mut modes = serde_json::Map::new();
        for (mode, events, samples, cancels) in [
            ("push", true, sizes.samples, sizes.cancels),
            ("poll", false, sizes.baseline, sizes.baseline),
        ] {
            eprintln!("{store_name}/{transport_name}/{mode}: {samples} claims, {cancels} cancels");
            let figures = measure(store.clone(), transport, events, samples, cancels).await?;
            modes.insert(mode.into(), figures);
        }
        let ratio = |key: &str| {
            let p99 = |mode: &str| modes[mode][key]["p99"].as_f64().unwrap_or(f64::NAN);
            p99("push") / p99("poll")
        };
        let ratios =
            json!({"claim_p99_push_over_poll": ratio("claim_ms"), "cancel_p99_push_over_poll": ratio("cancel_ms")});
        modes.insert("ratios".into(), ratios);
        cases.insert(format!("{store_name}_{transport_name}"), Value::Object(modes));
    }
    Ok(json!({
        "benchmark": "bench_push",
        "worker": {"poll_interval_s": 2, "heartbeat_interval_s": 10, "slots": 1},
        "cases": cases,
        "targets": {"claim_p99_ms_http": 50, "cancel_p99_ms": 1000},
    }))
}

/// One worker on `store` (over a fresh server when `transport` is HTTP): the claim and cancel latencies.
async fn measure(
    store: Arc<dyn TaskStore>,
    transport: Transport,
    events: bool,
    samples: usize,
    cancels: usize,
) -> anyhow::Result<Value> {
    let stop = CancellationToken::new();
    let queue: Arc<dyn WorkerQueue> = match transport {
        Transport::InProcess => store.clone(),
        Transport::Http => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let state = ApiState::with_default_scheduler(store.clone(), ApiConfig::default());
            tokio::spawn(serve(listener, state, Some(Duration::from_secs(5)), stop.child_token()));
            Arc::new(HttpStore::new(&url, None)?)
        }
    };
    static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WORKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let worker_id = format!("bench-push-{}-{n}", std::process::id());
    let mut config = WorkerConfig::new(worker_id.clone(), "default");
    config.store_events = events;
    // Instant runs for the claims; 60 s runs (60 steps of 1 s) for the cancels.
    let backend = Arc::new(SimulatedBackend::new(
        SimulatedConfig::default()
            .with_steps(60)
            .with_step_delay(Duration::from_secs(1)),
    ));
    let scheduler = Arc::new(DefaultScheduler::new(queue.clone()));
    let runtime = WorkerRuntime::new(queue, scheduler, backend, config);
    let worker = tokio::spawn(runtime.run(stop.child_token()));
    wait_idle(store.as_ref(), &worker_id).await?;

    let mut claims = Vec::with_capacity(samples);
    for _ in 0..samples {
        let task = store.create_task(spec(1)?).await?;
        let done = wait_until(store.as_ref(), task.id, |s| s.is_terminal()).await?;
        let started = done.started_at.context("a completed task has started_at")?;
        claims.push((started - done.created_at).as_seconds_f64() * 1000.0);
        // Let the worker go idle again (its post-run heartbeat) before the next sample.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stops = Vec::with_capacity(cancels);
    for _ in 0..cancels {
        let task = store.create_task(spec(60)?).await?;
        wait_until(store.as_ref(), task.id, |s| s == TaskStatus::Running).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = chrono::Utc::now();
        store.cancel_task(task.id).await?;
        let done = wait_until(store.as_ref(), task.id, |s| s.is_terminal()).await?;
        ensure!(
            done.status == TaskStatus::Cancelled,
            "task {} ended {}",
            task.id,
            done.status
        );
        let completed = done.completed_at.context("a cancelled task has completed_at")?;
        stops.push((completed - asked).as_seconds_f64() * 1000.0);
    }
    stop.cancel();
    worker.await??;
    Ok(json!({"claim_ms": summary(claims), "cancel_ms": summary(stops)}))
}

fn spec(steps: i64) -> anyhow::Result<aiopslab_core::TaskSpec> {
    Ok(NewTask {
        max_steps: Some(steps),
        ..NewTask::new(PROBLEM)
    }
    .validate()?)
}

async fn wait_idle(store: &dyn TaskStore, worker_id: &str) -> anyhow::Result<()> {
    for _ in 0..500 {
        if store.get_worker(worker_id).await.is_ok() {
            // Give the event stream (over HTTP) time to connect.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("worker {worker_id} did not register within 10 s")
}

/// Polls the task (every 5 ms, at most 120 s) until its status satisfies `done`.
async fn wait_until(
    store: &dyn TaskStore,
    id: aiopslab_core::TaskId,
    done: impl Fn(TaskStatus) -> bool,
) -> anyhow::Result<aiopslab_core::Task> {
    for _ in 0..24_000 {
        let task = store.get_task(id).await?;
        if done(task.status) {
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("task {id} did not get there within 120 s")
}

/// p50/p90/p99/max of `values` (milliseconds, rounded to 0.1).
fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((values.len() as f64 - 1.0) * q).round() as usize;
        values.get(i).map(|v| (v * 10.0).round() / 10.0)
    };
    json!({"n": values.len(), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
}
