//! Benchmark of the PostgreSQL queue, against the database's own commit rate.
//!
//! ```text
//! cargo run --release -p aiopslab-postgres --example bench_queue
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), creates a scratch
//! database of its own (dropped at the end), and prints one JSON document:
//!
//! - `task_rate`: no-op tasks per second end to end (create, claim, finish: three commits each) with 1, 8 and 32
//!   concurrent workers, each a registered worker looping create → claim → finish through one shared `PgStore`;
//! - `baseline_commit_rate`: at the same concurrency, the database's rate of trivial commits (one single-row
//!   `UPDATE` per transaction, each connection on its own row, each on a dedicated connection, same server
//!   settings), measured in slices alternating with the task-rate slices so both see the same machine load;
//! - `ratio`: task rate ÷ (baseline ÷ 3), since a task needs three commits (target ≥ 0.8 at 8 workers);
//! - `calls_per_statement`: how many calls of each kind the store's coalesced writes carried per statement;
//! - `task_rate_one_statement_per_call`, `ratio_one_statement_per_call`: the same loop through a second store with
//!   coalescing off (`PgStoreOptions::coalesce_writes(false)`), measured in the same alternating slices;
//! - `claim_latency_ms`: create → claim delay for an idle worker woken by LISTEN/NOTIFY (p50, p99);
//! - `log_ingestion`: log lines per second appended in batches of 100;
//! - `export`: episodes per second read by `export_episodes` (pages of 500, keyset cursor) over 100,000 stored
//!   episodes of 30 steps (~62 messages and 30 LLM calls each, recorded by the simulated backend as AIOpsLab's
//!   driver records them, so every call carries its whole request), alone and with each page encoded as the
//!   export's JSON Lines.
//!
//! - `fair_share`: the fair-share claim beside today's, at 8 and 32 workers: the same loop with tasks without an
//!   experiment (`today`), spread over 8 experiments (`fair`), and over 8 experiments with a `max_running` each
//!   (`fair_limited`), alternating slices; tasks per second, mean claim time and `cost_ratio_*` (how much more a
//!   task and a claim cost than `today`; target ≤ 1.2), coalesced and with one statement per call (see
//!   `bench_queue/fair.rs`).
//!
//! Arguments name the sections to run (`queue`, `fair`, `latency`, `logs`, `export`; default: all), e.g.
//! `cargo run --release -p aiopslab-postgres --example bench_queue -- export`. `BENCH_EXPORT_EPISODES` changes
//! the number of stored episodes; `BENCH_KEEP_DATABASE=1` keeps the scratch database (its name is printed).

#[path = "bench_queue/export.rs"]
mod export;
#[path = "bench_queue/fair.rs"]
mod fair;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    ClaimRequest, LeasePolicy, LogLevel, NewLogEntry, NewTask, StoreError, StoreEvent, TaskOutcome, TaskResult,
    TerminalStatus, WorkerHeartbeat, WorkerRegistration, WorkerStatus,
};
use aiopslab_postgres::{BatchCounts, PgStore, PgStoreOptions};
use anyhow::Context;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Baseline and task rates are measured in alternating slices, so all see the same load on a shared machine; a
/// multiple of 3, so each kind of slice runs equally often in each position of a round.
const ROUNDS: usize = 6;
const WARMUP: Duration = Duration::from_millis(250);
const MEASURE: Duration = Duration::from_secs(1);
const LATENCY_SAMPLES: usize = 500;
const LOG_BATCH: usize = 100;
const LOG_WRITERS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
    let name = format!("aiopslab_bench_{}", std::process::id());
    let mut conn = admin.connect().await.context("cannot connect to DATABASE_URL")?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    let result = run(admin.clone().database(&name)).await;
    if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
        eprintln!("kept database {name}");
    } else {
        conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
    }
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run(options: PgConnectOptions) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let policy = LeasePolicy::default().with_dispatch_delay(Duration::ZERO);
    let store_options = PgStoreOptions::default().max_connections(40);
    let store = PgStore::from_options(store_options.apply(options.clone()), policy, &store_options)?;
    store.migrate().await?;
    let mut admin = store.connection().await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', \
         'shared_buffers', 'server_version') ORDER BY name",
    )
    .fetch_all(&mut admin)
    .await?;

    let sections: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    let mut report = serde_json::Map::new();
    report.insert("benchmark".into(), json!("aiopslab-postgres bench_queue"));
    report.insert(
        "database".into(),
        json!(settings
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect::<serde_json::Map<_, _>>()),
    );
    if wanted("queue") {
        report.extend(queue_rates(&store, &options, &mut admin).await?);
    }
    if wanted("fair") {
        report.insert("fair_share".into(), fair::run(&store, &options, &mut admin).await?);
    }
    if wanted("latency") {
        reset(&mut admin).await?;
        let latency = claim_latency(&store).await?;
        eprintln!(
            "claim latency p50 {:.2} ms, p99 {:.2} ms (in the database: p50 {:.2} ms, p99 {:.2} ms)",
            latency.p50, latency.p99, latency.db_p50, latency.db_p99
        );
        report.insert(
            "claim_latency_ms".into(),
            json!({
                "samples": LATENCY_SAMPLES,
                "p50": round2(latency.p50),
                "p99": round2(latency.p99),
                "max": round2(latency.max),
                "database_created_at_to_started_at_p50": round2(latency.db_p50),
                "database_created_at_to_started_at_p99": round2(latency.db_p99),
                "woken_by_poll_not_notify": latency.polled,
            }),
        );
    }
    if wanted("logs") {
        reset(&mut admin).await?;
        let lines = log_rate(&store).await?;
        eprintln!("log ingestion {lines:.0} lines/s");
        report.insert(
            "log_ingestion".into(),
            json!({
                "batch_size": LOG_BATCH,
                "writers": LOG_WRITERS,
                "lines_per_sec": lines.round(),
            }),
        );
    }
    if wanted("export") {
        reset(&mut admin).await?;
        let episodes = std::env::var("BENCH_EXPORT_EPISODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(export::EPISODES);
        report.insert("export".into(), export::run(&store, &mut admin, episodes).await?);
    }
    report.insert(
        "targets".into(),
        json!({
            "ratio_at_8_workers_min": 0.8,
            "fair_share_cost_ratio_max": 1.2,
            "claim_latency_p50_ms_max": 10,
            "claim_latency_p99_ms_max": 50,
            "log_lines_per_sec_min": 50000,
            "export_episodes_per_sec_min": 5000,
        }),
    );
    report.insert(
        "total_seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(serde_json::Value::Object(report))
}

/// Task rates against the baseline commit rate, at each concurrency: with the store's default coalesced writes,
/// and with one statement per call (a second store on the same database).
async fn queue_rates(
    store: &PgStore,
    options: &PgConnectOptions,
    admin: &mut sqlx::PgConnection,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let single_options = PgStoreOptions::default().max_connections(40).coalesce_writes(false);
    let single = PgStore::from_options(single_options.apply(options.clone()), *store.policy(), &single_options)?;
    let mut task_rates = serde_json::Map::new();
    let mut single_rates = serde_json::Map::new();
    let mut baselines = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    let mut single_ratios = serde_json::Map::new();
    let mut batch_sizes = serde_json::Map::new();
    prepare_baseline(options).await?;
    for workers in CONCURRENCY {
        reset(admin).await?;
        let connections = baseline_connections(options, workers).await?;
        register_workers(store, workers).await?;
        let mut baseline = Rate::default();
        let mut rate = Rate::default();
        let mut single_rate = Rate::default();
        let before = store.write_batches();
        for round in 0..ROUNDS {
            // The three take turns at each position of a round, so none always inherits the same predecessor's
            // state (a fixed order once put every task slice first after the reset, on plans fixed while the table
            // was nearly empty; see the crate README).
            for slot in 0..3 {
                match (round + slot) % 3 {
                    0 => baseline.add(baseline_slice(&connections).await?),
                    1 => rate.add(task_slice(store, workers).await?),
                    _ => single_rate.add(task_slice(&single, workers).await?),
                }
            }
        }
        let after = store.write_batches();
        let (baseline, rate, single_rate) = (baseline.per_sec(), rate.per_sec(), single_rate.per_sec());
        let ratio = rate / (baseline / 3.0);
        let single_ratio = single_rate / (baseline / 3.0);
        let mean =
            |a: BatchCounts, b: BatchCounts| round2((a.items - b.items) as f64 / (a.batches - b.batches).max(1) as f64);
        let sizes = json!({
            "create": mean(after.creates, before.creates),
            "claim": mean(after.claims, before.claims),
            "finish": mean(after.finishes, before.finishes),
        });
        eprintln!(
            "{workers:>2} workers: {rate:.0} tasks/s (one statement per call: {single_rate:.0}), baseline \
             {baseline:.0} commits/s, ratio {ratio:.2} ({single_ratio:.2}); calls per statement {sizes}"
        );
        task_rates.insert(workers.to_string(), json!(rate.round()));
        single_rates.insert(workers.to_string(), json!(single_rate.round()));
        baselines.insert(workers.to_string(), json!(baseline.round()));
        ratios.insert(workers.to_string(), json!((ratio * 1000.0).round() / 1000.0));
        single_ratios.insert(workers.to_string(), json!((single_ratio * 1000.0).round() / 1000.0));
        batch_sizes.insert(workers.to_string(), sizes);
    }
    single.close().await;
    let mut out = serde_json::Map::new();
    out.insert(
        "measure_seconds_per_point".into(),
        json!(MEASURE.as_secs_f64() * ROUNDS as f64),
    );
    out.insert("task_rate".into(), json!(task_rates));
    out.insert("baseline_commit_rate".into(), json!(baselines));
    out.insert("ratio".into(), json!(ratios));
    out.insert("calls_per_statement".into(), json!(batch_sizes));
    out.insert("task_rate_one_statement_per_call".into(), json!(single_rates));
    out.insert("ratio_one_statement_per_call".into(), json!(single_ratios));
    Ok(out)
}

/// Operations counted over measured time, summed across slices.
#[derive(Default)]
struct Rate {
    count: u64,
    time: Duration,
}

impl Rate {
    fn add(&mut self, (count, time): (u64, Duration)) {
        self.count += count;
        self.time += time;
    }

    fn per_sec(&self) -> f64 {
        self.count as f64 / self.time.as_secs_f64()
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Create → claim delays, in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    /// The same delay by the database's clock: the task's `started_at - created_at`.
    db_p50: f64,
    db_p99: f64,
    polled: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)]
}

/// Empties the tables and lets the database tidy up, so every measurement starts from the same state.
async fn reset(admin: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE tasks, task_logs, trajectories, workers, webhook_outbox, webhook_attempts, idempotency_keys, \
         experiments",
    )
    .execute(&mut *admin)
    .await?;
    sqlx::query("VACUUM ANALYZE tasks").execute(&mut *admin).await?;
    Ok(())
}

/// Runs `work` on `n` concurrent loops for a warmup and one measured slice; returns the operations counted in the
/// slice and its length.
async fn measure<F, Fut>(n: usize, work: F) -> anyhow::Result<(u64, Duration)>
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(work(i, stop.clone(), count.clone())))
        .collect();
    tokio::time::sleep(WARMUP).await;
    let start_count = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let done = count.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await??;
    }
    Ok((done, elapsed))
}

/// The baseline table: one row per connection.
async fn prepare_baseline(options: &PgConnectOptions) -> anyhow::Result<()> {
    let mut setup = options.connect().await?;
    setup
        .execute("CREATE TABLE IF NOT EXISTS bench_baseline (id int PRIMARY KEY, n bigint NOT NULL)")
        .await?;
    setup
        .execute("INSERT INTO bench_baseline SELECT g, 0 FROM generate_series(0, 63) g ON CONFLICT DO NOTHING")
        .await?;
    setup.close().await?;
    Ok(())
}

type Shared<T> = Arc<tokio::sync::Mutex<T>>;

/// `n` dedicated connections for the baseline.
async fn baseline_connections(options: &PgConnectOptions, n: usize) -> anyhow::Result<Vec<Shared<sqlx::PgConnection>>> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(Arc::new(tokio::sync::Mutex::new(options.connect().await?)));
    }
    Ok(connections)
}

/// One slice of the database's commit rate: each connection updates its own row, one row per transaction.
async fn baseline_slice(connections: &[Shared<sqlx::PgConnection>]) -> anyhow::Result<(u64, Duration)> {
    let connections = connections.to_vec();
    measure(connections.len(), move |i, stop, count| {
        let conn = connections[i].clone();
        async move {
            let mut conn = conn.lock().await;
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("UPDATE bench_baseline SET n = n + 1 WHERE id = $1")
                    .bind(i as i32)
                    .execute(&mut *conn)
                    .await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

fn noop_outcome() -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Completed,
        result: Some(TaskResult::default()),
        error: None,
    }
}

/// A claim for the next `default` task, by `worker_id`.
fn claim_request(worker_id: impl Into<String>) -> ClaimRequest {
    ClaimRequest::new(worker_id, "default")
}

/// Makes `worker_id` a live worker (only live workers claim): registers it, or, when it is registered and alive
/// already, sends it a heartbeat.
pub(crate) async fn live_worker(store: &PgStore, worker_id: &str) -> anyhow::Result<()> {
    live_worker_on(store, worker_id, "default").await
}

/// [`live_worker`] for a worker of `backend_type`.
pub(crate) async fn live_worker_on(store: &PgStore, worker_id: &str, backend_type: &str) -> anyhow::Result<()> {
    match store
        .register_worker(WorkerRegistration::new(worker_id, backend_type))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::WorkerAlive(_)) => {
            let beat = WorkerHeartbeat::new(worker_id, WorkerStatus::Busy);
            store.heartbeat(&beat).await?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

async fn register_workers(store: &PgStore, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        store
            .register_worker(WorkerRegistration::new(format!("bench-{i}"), "default"))
            .await?;
    }
    Ok(())
}

/// One slice of end-to-end no-op tasks: each worker loops create → claim → finish.
async fn task_slice(store: &PgStore, n: usize) -> anyhow::Result<(u64, Duration)> {
    let spec = NewTask::new("noop").validate()?;
    let store = store.clone();
    measure(n, move |i, stop, count| {
        let store = store.clone();
        let spec = spec.clone();
        async move {
            let request = claim_request(format!("bench-{i}"));
            // A measured slice is short; a beat at its start keeps the worker live however many slices ran before.
            live_worker(&store, &request.worker_id).await?;
            while !stop.load(Ordering::Relaxed) {
                store.create_task(spec.clone()).await?;
                if let Some(task) = store.claim(&request).await? {
                    store.finish(task.lease_token(), noop_outcome()).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }
    })
    .await
}

/// Create → claim delay for an idle worker that waits on notifications (and polls every second as the fallback).
async fn claim_latency(store: &PgStore) -> anyhow::Result<Latency> {
    let mut events = store.subscribe().context("PgStore offers notifications")?;
    // Let the listener connect before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(uuid::Uuid, Instant, bool, f64)>();
    let worker_store = store.clone();
    let worker = tokio::spawn(async move {
        let request = claim_request("listener");
        live_worker(&worker_store, &request.worker_id).await?;
        let mut claimed = 0;
        while claimed < LATENCY_SAMPLES {
            let woken = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
            let by_notify = matches!(woken, Ok(Ok(StoreEvent::TaskAvailable { .. })));
            while let Some(task) = worker_store.claim(&request).await? {
                let at = Instant::now();
                let in_db = task
                    .started_at
                    .and_then(|started| (started - task.created_at).num_microseconds())
                    .unwrap_or_default() as f64
                    / 1000.0;
                worker_store.finish(task.lease_token(), noop_outcome()).await?;
                let _ = tx.send((task.id, at, by_notify, in_db));
                claimed += 1;
            }
        }
        anyhow::Ok(())
    });
    let spec = NewTask::new("latency").validate()?;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    let mut in_db = Vec::with_capacity(LATENCY_SAMPLES);
    let mut polled = 0;
    for _ in 0..LATENCY_SAMPLES {
        let created_at = Instant::now();
        let task = store.create_task(spec.clone()).await?;
        let (id, claimed_at, by_notify, db_ms) = rx.recv().await.context("the listening worker stopped")?;
        anyhow::ensure!(id == task.id, "claimed a different task");
        samples.push(claimed_at.duration_since(created_at).as_secs_f64() * 1000.0);
        in_db.push(db_ms);
        if !by_notify {
            polled += 1;
        }
        // Idle between tasks, as a worker waiting for work would be.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    worker.await??;
    samples.sort_by(f64::total_cmp);
    in_db.sort_by(f64::total_cmp);
    Ok(Latency {
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
        max: samples[samples.len() - 1],
        db_p50: percentile(&in_db, 0.50),
        db_p99: percentile(&in_db, 0.99),
        polled,
    })
}

/// Log lines per second, appended in batches of 100 by several workers, each to its own running task.
async fn log_rate(store: &PgStore) -> anyhow::Result<f64> {
    let mut leases = Vec::new();
    for i in 0..LOG_WRITERS {
        store.create_task(NewTask::new("logs").validate()?).await?;
        let request = claim_request(format!("logger-{i}"));
        live_worker(store, &request.worker_id).await?;
        let task = store.claim(&request).await?.context("claim a task to log to")?;
        leases.push(task.lease_token());
    }
    let batch: Vec<NewLogEntry> = (0..LOG_BATCH)
        .map(|i| {
            NewLogEntry::new(
                LogLevel::Info,
                format!("step {i}: kubectl get pods -n test-hotel-reservation -> 12 pods Running"),
            )
            .at_step(i as u32)
            .with_action("exec_shell")
        })
        .collect();
    let (mut batches, mut elapsed) = (0, Duration::ZERO);
    for _ in 0..3 {
        let store = store.clone();
        let batch = batch.clone();
        let leases = leases.clone();
        let (n, t) = measure(LOG_WRITERS, move |i, stop, count| {
            let store = store.clone();
            let batch = batch.clone();
            let lease = leases[i];
            async move {
                while !stop.load(Ordering::Relaxed) {
                    store.append_logs(lease, batch.clone()).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await?;
        batches += n;
        elapsed += t;
    }
    Ok((batches * LOG_BATCH as u64) as f64 / elapsed.as_secs_f64())
}
