//! Benchmark of a large fleet of remote workers against one server (issue 13, item 4): heartbeat and claim
//! latency, server memory and CPU per worker and PostgreSQL's CPU, for a ladder of fleet sizes, so where it breaks
//! is visible.
//!
//! ```text
//! cargo build --release -p aiopslab-cli -p aiopslab-bench
//! target/release/bench_workers                                  # 100, 300 and 1,000 workers (~6 min)
//! BENCH_WORKERS=50 BENCH_WINDOW_SECS=20 target/release/bench_workers   # a quick run
//! ```
//!
//! For each fleet size of the ladder it starts, from this program's own directory, the real `aiopslab serve` on a
//! scratch PostgreSQL database (`--database-url` from `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; no in-process workers; `--dispatch-delay-ms 0`; a free port),
//! and, inside this process, that many simulated remote workers. A thousand worker processes do not fit on a
//! 2-core machine, so each simulated worker is the shipped worker code itself: a real
//! [`WorkerRuntime`](aiopslab_core::runtime::WorkerRuntime) with every default timing (heartbeat every 10 s, the
//! runtime's default, which the bundled `worker` keeps for the server's default 60 s lease; poll every 2 s; one
//! slot; the store's events on, so each holds its `GET /workers/{id}/events` stream open as a real worker does)
//! on the simulated backend, driving an `HttpStore` of its own (its own connection pool, real loopback sockets).
//! The only addition is a thin wrapper around that `HttpStore` that times each `heartbeat` and `claim` call
//! client-side (from the call to the decoded answer: the bench process's own scheduling delay is inside, see
//! `bench_process`). The workers start spread over `BENCH_RAMP_SECS` with a jitter, so their heartbeats are not
//! synchronized, as in a real fleet. Once all are registered, a client creates tasks at a fixed rate
//! (`BENCH_TASK_RATE` per second) whose simulated runs take `BENCH_SIM_MS` in `BENCH_SIM_STEPS` steps (each step
//! appends log lines and the trajectory is saved, as a real run does), so claims and finishes go on during the
//! measurement; after `BENCH_WARMUP_SECS` the figures are taken over `BENCH_WINDOW_SECS`. Then task creation stops,
//! the workers shut down gracefully (deregistering) and the server stops; the next size starts afresh on the same
//! database. Every child process is stopped at the end, also on error or interrupt; the server's logs are kept
//! (and named) with `BENCH_KEEP_LOGS=1` or on error.
//!
//! Prints one JSON document (progress goes to stderr). Per rung (`rungs[]`), over the window:
//!
//! - `heartbeats`: count, per second, `latency` (p50/p90/p99/max/mean in ms, and `in_flight_mean`: how many were
//!   awaiting their answer at any moment, by Little's law), errors (with a few samples), how many handed the
//!   worker a task (`next_task`), the same latencies for the heartbeats that reported `idle` (the server claims a
//!   task for those before it answers) and `busy`, and the server-side mean from its `/metrics` (time inside the
//!   server);
//! - `claims`: the same for `POST /workers/claim`, with how many returned a task and how many found none;
//! - `tasks`: created (and create errors, create p99), finished by the workers, pending and running at the start
//!   and end of the window (a growing backlog means the fleet does not keep up);
//! - `server`: RSS (`VmRSS`) before the workers, at the window's start and end, and its peak (`VmHWM`), RSS per
//!   worker, CPU seconds and cores used, CPU seconds per worker per minute, threads, open file descriptors and its
//!   open-files limit;
//! - `postgres`: CPU seconds and cores of the scratch database's own backends (the server's connections, read by
//!   pid from `pg_stat_activity`), per worker per minute, and of all PostgreSQL processes (other databases on a
//!   shared server included), commits per second in the scratch database, rollbacks, deadlocks, its connections;
//! - `bench_process`: this program's CPU (the simulated workers and the task client: it competes with the server
//!   and PostgreSQL for the same cores and skews the latencies), its RSS and RSS per simulated worker;
//! - `machine`: the fraction of all cores busy, CPU seconds of processes outside the measurement (PostgreSQL's
//!   work for other databases apart);
//! - `connections`: established TCP connections on the server's port at the window's start and end, per worker
//!   (each worker holds its request connection and its events stream: about 2), event streams opened;
//! - `probes`: every 100 ms during the window, one after the other: `SELECT 1` on a PostgreSQL connection of this
//!   program's own, a one-row `UPDATE` committed on its own (the WAL flush every heartbeat's transaction waits
//!   for), and the server's `GET /health` (its scheduling and connection pool, and a primary-key read): p50, p99,
//!   max in ms, to tell where slow heartbeats waited;
//! - `http_requests`: per route and status over the window, from `/metrics`, with the server-side mean;
//! - `checks`: heartbeat p99 under the target, no heartbeat errors, the fleet keeping up with the task rate.
//!
//! At the top: the settings, the open-files limits, `target` (heartbeat p99 < 50 ms at 1,000 workers: the figure of
//! the rung of 1,000 workers, or of the largest rung, and whether it is met) and `breaks_at` (the first fleet size
//! whose checks fail, with which).
//!
//! Knobs (environment): `BENCH_WORKERS` (`100,300,1000`: the ladder), `BENCH_WINDOW_SECS` (60),
//! `BENCH_WARMUP_SECS` (10), `BENCH_RAMP_SECS` (10, one heartbeat interval), `BENCH_TASK_RATE` (50 per second),
//! `BENCH_SIM_MS` (1000), `BENCH_SIM_STEPS` (5), `BENCH_PROBLEM` (`k8s_target_port-misconfig-detection-1`),
//! `BENCH_TARGET_P99_MS` (50), `BENCH_STORE_EVENTS` (1; 0 turns the workers' events stream off,
//! `WorkerConfig::store_events = false`, to compare with polling alone).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    ClaimRequest, DefaultScheduler, FinalReport, FinalReports, HeartbeatAck, LeaseState, LeaseToken, NewLogEntry,
    SimulatedBackend, SimulatedConfig, StoreError, StoreEvent, StoreResult, Task, TaskOutcome, Trajectory, Worker,
    WorkerHeartbeat, WorkerQueue, WorkerRegistration, WorkerStatus,
};
use aiopslab_http::client::HttpStore;
use anyhow::{ensure, Context};
use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use bench_support::measure::{
    clock_ticks_per_second, established_on_port, machine_ticks, nofile_limits, open_fds, parse_metrics, percentile,
    postgres_ticks, process_ticks, raise_nofile_limit, round, status_mib, status_number, DbCounters, RouteStatus,
};
use bench_support::{env_or, get_json, get_text, post_task, task_body, until_interrupted, Binaries, Fleet, Scratch};

/// The server's default lease (`--lease-secs`), which the bundled worker is told too: heartbeats every 10 s.
const LEASE: Duration = Duration::from_secs(60);
/// Error messages kept per kind of call.
const ERROR_SAMPLES: usize = 5;

/// The ladder and the load, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    ladder: Vec<usize>,
    window: Duration,
    warmup: Duration,
    ramp: Duration,
    task_rate: f64,
    sim_ms: u64,
    sim_steps: u32,
    problem: String,
    target_p99_ms: f64,
    store_events: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let ladder_text: String = env_or("BENCH_WORKERS", "100,300,1000".to_string())?;
        let ladder = ladder_text
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("BENCH_WORKERS={ladder_text:?} is not a list of numbers"))?;
        let settings = Self {
            ladder,
            window: Duration::from_secs(env_or("BENCH_WINDOW_SECS", 60)?),
            warmup: Duration::from_secs(env_or("BENCH_WARMUP_SECS", 10)?),
            ramp: Duration::from_secs(env_or("BENCH_RAMP_SECS", 10)?),
            task_rate: env_or("BENCH_TASK_RATE", 50.0)?,
            sim_ms: env_or("BENCH_SIM_MS", 1000)?,
            sim_steps: env_or("BENCH_SIM_STEPS", 5)?,
            problem: env_or("BENCH_PROBLEM", "k8s_target_port-misconfig-detection-1".to_string())?,
            target_p99_ms: env_or("BENCH_TARGET_P99_MS", 50.0)?,
            store_events: env_or("BENCH_STORE_EVENTS", 1u8)? != 0,
        };
        ensure!(
            !settings.ladder.is_empty() && settings.ladder.iter().all(|&n| n >= 1),
            "BENCH_WORKERS must list fleet sizes of at least 1"
        );
        ensure!(
            settings.window >= Duration::from_secs(1),
            "BENCH_WINDOW_SECS must be at least 1"
        );
        ensure!(settings.sim_steps >= 1, "BENCH_SIM_STEPS must be at least 1");
        ensure!(
            settings.task_rate >= 0.0 && settings.task_rate.is_finite(),
            "BENCH_TASK_RATE must be a rate ≥ 0"
        );
        Ok(settings)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    // Each simulated worker holds two connections (requests, events) and the server the other ends; the server
    // inherits this limit.
    let largest = settings.ladder.iter().copied().max().unwrap_or(0) as u64;
    let wanted = 6 * largest + 1024;
    let (soft, hard) = raise_nofile_limit(wanted)?;
    eprintln!("open-files limit {soft} (hard {hard}; {wanted} wanted)");
    ensure!(
        soft >= 4 * largest + 256,
        "the open-files limit ({soft}, hard {hard}) is too low for {largest} workers: raise the hard limit"
    );
    let scratch = Scratch::create("aiopslab_bench_workers").await?;
    let result = until_interrupted(run(&settings, &scratch, (soft, hard))).await;
    scratch.finish(result).await
}

async fn run(settings: &Settings, scratch: &Scratch, nofile: (u64, u64)) -> anyhow::Result<Value> {
    let started = Instant::now();
    let (mut db, postgres_version) = scratch.connect().await?;
    let mut rungs = Vec::new();
    for &workers in &settings.ladder {
        eprintln!("== {workers} workers");
        let rung = rung(settings, scratch, &mut db, workers).await?;
        rungs.push(rung);
    }
    drop(db);

    // The target's figure: the rung of 1,000 workers, or the largest one.
    let target_rung = rungs
        .iter()
        .find(|r| r["workers"] == 1000)
        .or_else(|| rungs.iter().max_by_key(|r| r["workers"].as_u64().unwrap_or(0)));
    let target_p99 = target_rung.and_then(|r| r["heartbeats"]["latency"]["p99_ms"].as_f64());
    let breaks_at = rungs.iter().find(|r| r["checks"]["passed"] == false).map(|r| {
        let failed: Vec<&str> = ["heartbeat_p99_under_target", "no_heartbeat_errors", "keeps_up"]
            .into_iter()
            .filter(|check| r["checks"][*check] == false)
            .collect();
        json!({"workers": r["workers"], "failed_checks": failed})
    });
    Ok(json!({
        "benchmark": "bench_workers",
        "postgres_version": postgres_version,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "settings": {
            "ladder": settings.ladder,
            "window_s": settings.window.as_secs(),
            "warmup_s": settings.warmup.as_secs(),
            "ramp_s": settings.ramp.as_secs(),
            "task_rate_per_s": settings.task_rate,
            "sim_run_ms": settings.sim_ms,
            "sim_steps": settings.sim_steps,
            "problem": settings.problem,
            "worker": {
                "code": "aiopslab_core WorkerRuntime + SimulatedBackend + aiopslab_http HttpStore, in this process",
                "heartbeat_interval_s": WorkerConfig::DEFAULT_HEARTBEAT_INTERVAL.as_secs(),
                "lease_s": LEASE.as_secs(),
                "poll_interval_s": 2,
                "slots": 1,
                "store_events": settings.store_events,
            },
            "server": "aiopslab serve --workers 0 --dispatch-delay-ms 0 (other flags default)",
        },
        "open_files_limit": {"soft": nofile.0, "hard": nofile.1},
        "rungs": rungs,
        "target": {
            "heartbeat_p99_ms_below": settings.target_p99_ms,
            "at_workers": target_rung.map(|r| r["workers"].clone()),
            "measured_p99_ms": target_p99,
            "met": target_p99.map(|p| p < settings.target_p99_ms),
        },
        "breaks_at": breaks_at,
        "total_seconds": round(started.elapsed().as_secs_f64(), 1),
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// One rung of the ladder

async fn rung(settings: &Settings, scratch: &Scratch, db: &mut PgConnection, n: usize) -> anyhow::Result<Value> {
    let logs = scratch.logs.join(format!("workers-{n}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut fleet = Fleet::new(Binaries::beside_this_program()?, &logs);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;
    let (port, base) = fleet
        .start_server(&client, &scratch.database_url(), &["--dispatch-delay-ms", "0"])
        .await?;
    let server_pid = fleet.server.as_ref().map(|s| s.pid().to_string()).unwrap_or_default();
    eprintln!("server up on {base} (pid {server_pid})");
    let server_limits = nofile_limits(&server_pid);
    let server_rss_idle = status_mib(&server_pid, "VmRSS");
    let bench_rss_before = status_mib("self", "VmRSS");

    // The fleet: N runtimes, started spread over the ramp.
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let spawn_started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let store = Timed {
            inner: HttpStore::new(&base, None)?,
            stats: stats.clone(),
        };
        let queue: Arc<dyn WorkerQueue> = Arc::new(store);
        let mut config = WorkerConfig::new(format!("bench-w{n}-{i:04}"), "default").with_lease_duration(LEASE);
        config
            .metadata
            .insert("host".into(), Value::String("bench_workers".into()));
        config.store_events = settings.store_events;
        let backend = Arc::new(SimulatedBackend::new(
            SimulatedConfig::default()
                .with_steps(settings.sim_steps)
                .with_step_delay(Duration::from_millis(settings.sim_ms / u64::from(settings.sim_steps))),
        ));
        let scheduler = Arc::new(DefaultScheduler::new(queue.clone()));
        let runtime = WorkerRuntime::new(queue, scheduler, backend, config);
        let delay = settings.ramp.mul_f64((i as f64 + jitter(i as u64)) / n as f64);
        let token = shutdown.child_token();
        handles.push(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return Ok(()),
            }
            runtime.run(token).await
        }));
    }
    // Dropping the guard (on error or interrupt) stops the workers too.
    let _stop_workers = shutdown.clone().drop_guard();
    wait_registered(&stats, n, &mut fleet, settings.ramp + Duration::from_secs(120)).await?;
    let registered_s = spawn_started.elapsed().as_secs_f64();
    eprintln!(
        "{n} workers registered in {registered_s:.1} s; creating {}/s tasks",
        settings.task_rate
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bench_rss_fleet = status_mib("self", "VmRSS");

    // The load: a fixed rate of creates, from now until the window ends.
    let creator_stop = CancellationToken::new();
    let creator = tokio::spawn(create_tasks(
        client.clone(),
        format!("{base}/tasks"),
        task_body(&settings.problem, None).to_string(),
        settings.task_rate,
        stats.clone(),
        creator_stop.clone(),
    ));
    sleep_checking(&mut fleet, settings.warmup).await?;

    // The window, with the probes beside it.
    let (probe_db, _) = scratch.connect().await?;
    let probe_stop = CancellationToken::new();
    let probes = tokio::spawn(probe(probe_db, client.clone(), base.clone(), probe_stop.clone()));
    let before = Snapshot::take(&client, &base, db, &scratch.name, &server_pid, port).await?;
    stats.measuring.store(true, Ordering::SeqCst);
    let window_started = Instant::now();
    let mut last_report = Instant::now();
    while window_started.elapsed() < settings.window {
        fleet.check()?;
        let left = settings.window.saturating_sub(window_started.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  {:5.1} s: {} heartbeats ({} errors), {} claims, {} tasks finished",
                window_started.elapsed().as_secs_f64(),
                stats.heartbeats.len(),
                stats.heartbeats.errors.load(Ordering::Relaxed),
                stats.claims.len(),
                stats.finished.load(Ordering::Relaxed)
            );
        }
    }
    stats.measuring.store(false, Ordering::SeqCst);
    let window_s = window_started.elapsed().as_secs_f64();
    let after = Snapshot::take(&client, &base, db, &scratch.name, &server_pid, port).await?;
    probe_stop.cancel();
    let probes = probes.await.context("the probe panicked")??;
    creator_stop.cancel();
    let creates = creator.await.context("the task client panicked")?;

    // Stop: let the last runs finish, then the workers (they deregister), then the server.
    let drained = wait_drained(&client, &base, Duration::from_secs(30)).await;
    shutdown.cancel();
    let mut worker_errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for handle in handles {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => worker_errors.push(error.to_string()),
            Ok(Err(error)) => worker_errors.push(format!("a worker panicked: {error}")),
            Err(_) => worker_errors.push("a worker did not stop within 60 s".into()),
        }
    }
    fleet.stop_server(Duration::from_secs(15)).await;
    if !worker_errors.is_empty() {
        eprintln!(
            "{} workers ended with an error, e.g. {}",
            worker_errors.len(),
            worker_errors[0]
        );
    }

    let report = rung_report(RungInput {
        settings,
        n,
        registered_s,
        window_s,
        stats: &stats,
        creates: &creates,
        before: &before,
        after: &after,
        server_rss_idle,
        bench_rss_before,
        bench_rss_fleet,
        server_limits,
        drained,
        worker_errors: worker_errors.len(),
        probes: &probes,
    });
    eprintln!(
        "  {n} workers: heartbeat p50 {} / p99 {} / max {} ms, {} errors; claim p99 {} ms; server {} MiB, {} cores; \
         postgres {} cores (this database; all: {}); bench {} cores; machine {} busy",
        report["heartbeats"]["latency"]["p50_ms"],
        report["heartbeats"]["latency"]["p99_ms"],
        report["heartbeats"]["latency"]["max_ms"],
        report["heartbeats"]["errors"],
        report["claims"]["latency"]["p99_ms"],
        report["server"]["rss_mib_window_end"],
        report["server"]["cpu_cores"],
        report["postgres"]["database_backends_cpu_cores"],
        report["postgres"]["all_postgres_processes_cpu_cores"],
        report["bench_process"]["cpu_cores"],
        report["machine"]["busy_fraction"]
    );
    Ok(report)
}

/// A deterministic fraction in [0, 1) for worker `i` (splitmix64), so start times are spread with a jitter but a
/// rerun starts the same way.
fn jitter(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Waits until `n` registrations succeeded, failing when the server exits or `timeout` passes.
async fn wait_registered(stats: &Stats, n: usize, fleet: &mut Fleet, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    while stats.registered.load(Ordering::SeqCst) < n {
        fleet.check()?;
        ensure!(
            Instant::now() < deadline,
            "only {} of {n} workers registered within {timeout:?} (registration errors: {})",
            stats.registered.load(Ordering::SeqCst),
            stats.register_errors.load(Ordering::SeqCst)
        );
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  {} of {n} registered", stats.registered.load(Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn sleep_checking(fleet: &mut Fleet, duration: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        fleet.check()?;
        tokio::time::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        )
        .await;
    }
    Ok(())
}

/// Waits (at most `timeout`) until no task is pending or running; whether that happened.
async fn wait_drained(client: &reqwest::Client, base: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(stats) = get_json(client, &format!("{base}/stats")).await {
            let count = |status: &str| stats["tasks_by_status"][status].as_u64().unwrap_or(0);
            if count("pending") == 0 && count("running") == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------------------------
// The timed store

/// Latencies of one kind of call started during the window, and its errors.
#[derive(Default)]
struct Timings {
    latencies_ms: Mutex<Vec<f32>>,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
}

impl Timings {
    fn record(&self, measuring: bool, started: Instant, error: Option<String>) {
        if !measuring {
            return;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.latencies_ms.lock().unwrap().push(ms as f32);
        if let Some(error) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut samples = self.error_samples.lock().unwrap();
            if samples.len() < ERROR_SAMPLES {
                samples.push(error);
            }
        }
    }

    fn len(&self) -> usize {
        self.latencies_ms.lock().unwrap().len()
    }

    /// The latencies, sorted, in ms.
    fn sorted(&self) -> Vec<f64> {
        let mut values: Vec<f64> = self
            .latencies_ms
            .lock()
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        values.sort_by(f64::total_cmp);
        values
    }
}

/// What the simulated workers did: registrations at any time, the rest only during the window.
#[derive(Default)]
struct Stats {
    measuring: AtomicBool,
    registered: AtomicUsize,
    register_errors: AtomicUsize,
    heartbeats: Timings,
    /// The same heartbeats split by the status they reported: the server answers an idle worker's heartbeat with
    /// a claim on its behalf (`next_task`), a busy one's without.
    idle_heartbeats: Timings,
    busy_heartbeats: Timings,
    /// Heartbeats whose answer handed the worker a task.
    handed: AtomicU64,
    claims: Timings,
    claimed: AtomicU64,
    finished: AtomicU64,
    finish_errors: AtomicU64,
    /// Other worker-protocol calls (logs, trajectory, lease) and their errors.
    other_calls: AtomicU64,
    other_errors: AtomicU64,
}

impl Stats {
    fn on(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    fn other<T>(&self, result: &StoreResult<T>) {
        if self.on() {
            self.other_calls.fetch_add(1, Ordering::Relaxed);
            if result.is_err() {
                self.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A worker's `HttpStore`, passing every call through and timing its heartbeats and claims.
struct Timed {
    inner: HttpStore,
    stats: Arc<Stats>,
}

#[async_trait]
impl WorkerQueue for Timed {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        let result = self.inner.register_worker(registration).await;
        match &result {
            Ok(_) => self.stats.registered.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.stats.register_errors.fetch_add(1, Ordering::SeqCst),
        };
        result
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let measuring = self.stats.on();
        let started = Instant::now();
        let result = self.inner.heartbeat(heartbeat).await;
        let error = result.as_ref().err().map(ToString::to_string);
        let by_status = match heartbeat.status {
            WorkerStatus::Idle => &self.stats.idle_heartbeats,
            _ => &self.stats.busy_heartbeats,
        };
        by_status.record(measuring, started, error.clone());
        self.stats.heartbeats.record(measuring, started, error);
        if measuring && result.as_ref().is_ok_and(|ack| ack.next_task.is_some()) {
            self.stats.handed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.inner.deregister_worker(worker_id).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        let measuring = self.stats.on();
        let started = Instant::now();
        let result = self.inner.claim(request).await;
        let error = result.as_ref().err().map(ToString::to_string);
        self.stats.claims.record(measuring, started, error);
        if measuring && result.as_ref().is_ok_and(Option::is_some) {
            self.stats.claimed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let result = self.inner.extend_lease(lease).await;
        self.stats.other(&result);
        result
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        let result = self.inner.append_logs(lease, entries).await;
        self.stats.other(&result);
        result
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        let result = self.inner.save_trajectory(lease, trajectory).await;
        self.stats.other(&result);
        result
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let result = self.inner.finish(lease, outcome).await;
        self.count_finish(&result);
        result
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.inner.subscribe()
    }

    // The shipped worker ends its runs with a final report when the server takes them: pass it through too.
    fn final_reports(&self) -> Option<&dyn FinalReports> {
        self.inner.final_reports().map(|_| self as &dyn FinalReports)
    }
}

#[async_trait]
impl FinalReports for Timed {
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        let reports = self
            .inner
            .final_reports()
            .ok_or_else(|| StoreError::Internal("the server stopped taking final reports".into()))?;
        let result = reports.finish_run(lease, report).await;
        self.count_finish(&result);
        result
    }
}

impl Timed {
    fn count_finish(&self, result: &StoreResult<Task>) {
        if self.stats.on() {
            match result {
                Ok(_) => self.stats.finished.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.finish_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The task client

#[derive(Default)]
struct Creates {
    /// Creates sent while the window was open, and their latencies (ms, sorted).
    in_window: usize,
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

/// `POST /tasks` at `rate` per second (each create its own request, so a slow answer does not slow the rate) until
/// `stop` fires.
async fn create_tasks(
    client: reqwest::Client,
    url: String,
    body: String,
    rate: f64,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Creates {
    let mut creates = Creates::default();
    if rate <= 0.0 {
        stop.cancelled().await;
        return creates;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut requests = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let measuring = stats.on();
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        requests.spawn(async move {
            let sent = Instant::now();
            let result = post_task(&client, &url, body).await;
            (measuring, sent.elapsed().as_secs_f64() * 1000.0, result.err())
        });
        while let Some(done) = requests.try_join_next() {
            tally(&mut creates, done);
        }
    }
    while let Some(done) = requests.join_next().await {
        tally(&mut creates, done);
    }
    creates.latencies_ms.sort_by(f64::total_cmp);
    creates
}

type CreateResult = (bool, f64, Option<anyhow::Error>);

fn tally(creates: &mut Creates, done: Result<CreateResult, tokio::task::JoinError>) {
    match done {
        Ok((measuring, ms, None)) => {
            if measuring {
                creates.in_window += 1;
                creates.latencies_ms.push(ms);
            }
        }
        Ok((_, _, Some(error))) => {
            creates.errors += 1;
            creates.first_error.get_or_insert_with(|| format!("{error:#}"));
        }
        Err(error) => {
            creates.errors += 1;
            creates
                .first_error
                .get_or_insert_with(|| format!("a create panicked: {error}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/// How often the probes run during the window.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Round trips that tell where a slow heartbeat waited (ms, sorted): `SELECT 1` on a connection of our own (is
/// PostgreSQL answering at once?), a one-row `UPDATE` committed on its own (a commit's WAL flush, as each
/// heartbeat's), and the server's `GET /health` (its scheduling and connection pool, and a primary-key read).
#[derive(Default)]
struct Probes {
    select_ms: Vec<f64>,
    commit_ms: Vec<f64>,
    health_ms: Vec<f64>,
}

/// Runs the probes one after the other every [`PROBE_INTERVAL`] until `stop` fires.
async fn probe(
    mut db: PgConnection,
    client: reqwest::Client,
    base: String,
    stop: CancellationToken,
) -> anyhow::Result<Probes> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_probe (id int PRIMARY KEY, n bigint NOT NULL)")
        .execute(&mut db)
        .await?;
    sqlx::query("INSERT INTO bench_probe VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
        .execute(&mut db)
        .await?;
    let health = format!("{base}/health");
    let mut probes = Probes::default();
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1000.0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut db).await?;
        probes.select_ms.push(ms(t));
        let t = Instant::now();
        sqlx::query("UPDATE bench_probe SET n = n + 1 WHERE id = 1")
            .execute(&mut db)
            .await?;
        probes.commit_ms.push(ms(t));
        let t = Instant::now();
        if get_text(&client, &health).await.is_ok() {
            probes.health_ms.push(ms(t));
        }
    }
    for values in [&mut probes.select_ms, &mut probes.commit_ms, &mut probes.health_ms] {
        values.sort_by(f64::total_cmp);
    }
    Ok(probes)
}

/// Count, p50, p99 and max of sorted milliseconds.
fn summary(sorted: &[f64]) -> Value {
    json!({
        "n": sorted.len(),
        "p50": round(percentile(sorted, 0.5), 2),
        "p99": round(percentile(sorted, 0.99), 2),
        "max": round(sorted.last().copied().unwrap_or(0.0), 2),
    })
}

/// The state of the server, PostgreSQL, this process and the machine at one instant.
struct Snapshot {
    at: Instant,
    server_ticks: u64,
    postgres_ticks: u64,
    bench_ticks: u64,
    machine_busy: u64,
    machine_total: u64,
    server_rss_mib: Option<f64>,
    server_hwm_mib: Option<f64>,
    server_threads: Option<u64>,
    server_fds: Option<usize>,
    bench_rss_mib: Option<f64>,
    connections: usize,
    db: DbCounters,
    db_connections: i64,
    /// CPU ticks of each backend of the scratch database (the server's connections).
    db_backend_ticks: BTreeMap<i32, u64>,
    metrics: Vec<RouteStatus>,
    pending: u64,
    running: u64,
}

impl Snapshot {
    async fn take(
        client: &reqwest::Client,
        base: &str,
        db: &mut PgConnection,
        database: &str,
        server_pid: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        let (machine_busy, machine_total) = machine_ticks();
        let mut snapshot = Self {
            at: Instant::now(),
            server_ticks: process_ticks(server_pid).unwrap_or(0),
            postgres_ticks: postgres_ticks(),
            bench_ticks: process_ticks("self").unwrap_or(0),
            machine_busy,
            machine_total,
            server_rss_mib: status_mib(server_pid, "VmRSS"),
            server_hwm_mib: status_mib(server_pid, "VmHWM"),
            server_threads: status_number(server_pid, "Threads"),
            server_fds: open_fds(server_pid),
            bench_rss_mib: status_mib("self", "VmRSS"),
            connections: established_on_port(port),
            db: DbCounters::read(db, database).await?,
            db_connections: 0,
            db_backend_ticks: BTreeMap::new(),
            metrics: Vec::new(),
            pending: 0,
            running: 0,
        };
        let backends: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                .bind(database)
                .fetch_all(&mut *db)
                .await?;
        snapshot.db_connections = backends.len() as i64;
        snapshot.db_backend_ticks = backends
            .into_iter()
            .filter_map(|pid| Some((pid, process_ticks(&pid.to_string())?)))
            .collect();
        snapshot.metrics = match get_text(client, &format!("{base}/metrics")).await {
            Ok(text) => parse_metrics(&text),
            Err(error) => {
                eprintln!("cannot read /metrics: {error:#}");
                Vec::new()
            }
        };
        if let Ok(stats) = get_json(client, &format!("{base}/stats")).await {
            let count = |status: &str| stats["tasks_by_status"][status].as_u64().unwrap_or(0);
            snapshot.pending = count("pending");
            snapshot.running = count("running");
        }
        Ok(snapshot)
    }
}

/// The requests per (method, route, status) between two readings of `/metrics`: count and server seconds.
fn metrics_delta(before: &[RouteStatus], after: &[RouteStatus]) -> Vec<RouteStatus> {
    let earlier: BTreeMap<(&str, &str, u16), &RouteStatus> = before
        .iter()
        .map(|s| ((s.method.as_str(), s.route.as_str(), s.status), s))
        .collect();
    after
        .iter()
        .filter_map(|s| {
            let (count, seconds) = match earlier.get(&(s.method.as_str(), s.route.as_str(), s.status)) {
                Some(b) => (s.count.saturating_sub(b.count), s.seconds - b.seconds),
                None => (s.count, s.seconds),
            };
            (count > 0).then(|| RouteStatus {
                count,
                seconds,
                ..s.clone()
            })
        })
        .collect()
}

/// The server-side count and mean (ms) of `route`'s successful requests in `delta`.
fn server_side(delta: &[RouteStatus], route: &str) -> Value {
    let (count, seconds) = delta
        .iter()
        .filter(|s| s.route == route && (200..300).contains(&s.status))
        .fold((0, 0.0), |(c, t), s| (c + s.count, t + s.seconds));
    json!({"count": count, "mean_ms": round(seconds * 1000.0 / count.max(1) as f64, 2)})
}

struct RungInput<'a> {
    settings: &'a Settings,
    n: usize,
    registered_s: f64,
    window_s: f64,
    stats: &'a Stats,
    creates: &'a Creates,
    before: &'a Snapshot,
    after: &'a Snapshot,
    server_rss_idle: Option<f64>,
    bench_rss_before: Option<f64>,
    bench_rss_fleet: Option<f64>,
    server_limits: Option<(u64, u64)>,
    drained: bool,
    worker_errors: usize,
    probes: &'a Probes,
}

fn rung_report(input: RungInput<'_>) -> Value {
    let RungInput {
        settings,
        n,
        window_s,
        stats,
        creates,
        before,
        after,
        ..
    } = input;
    let hz = clock_ticks_per_second();
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let cpu = |after: u64, before: u64| after.saturating_sub(before) as f64 / hz;
    let server_cpu = cpu(after.server_ticks, before.server_ticks);
    let postgres_cpu = cpu(after.postgres_ticks, before.postgres_ticks);
    // The scratch database's own backends: those alive at both ends count their difference, those opened during the
    // window all their ticks; those closed during it are lost (counted).
    let backends_cpu = after
        .db_backend_ticks
        .iter()
        .map(|(pid, &ticks)| ticks.saturating_sub(before.db_backend_ticks.get(pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / hz;
    let backends_closed = before
        .db_backend_ticks
        .keys()
        .filter(|pid| !after.db_backend_ticks.contains_key(pid))
        .count();
    let bench_cpu = cpu(after.bench_ticks, before.bench_ticks);
    let busy = cpu(after.machine_busy, before.machine_busy);
    let total = cpu(after.machine_total, before.machine_total).max(1e-9);
    let per_worker_kib = |from: Option<f64>, to: Option<f64>| match (from, to) {
        (Some(from), Some(to)) => json!(round((to - from) * 1024.0 / n as f64, 1)),
        _ => Value::Null,
    };
    let opt = |x: Option<f64>| x.map_or(Value::Null, |x| json!(round(x, 1)));

    let latency = |timings: &Timings| {
        let sorted = timings.sorted();
        let p = |q: f64| round(percentile(&sorted, q), 2);
        let sum: f64 = sorted.iter().sum();
        let figures = json!({
            "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99),
            "max_ms": sorted.last().map_or(0.0, |m| round(*m, 2)),
            "mean_ms": round(sum / sorted.len().max(1) as f64, 2),
            // Little's law: how many of these calls were awaiting their answer at any moment, on average.
            "in_flight_mean": round(sum / 1000.0 / window_s, 1),
        });
        (sorted.len(), p(0.99), figures)
    };
    let (beats, hb99, heartbeat_latency) = latency(&stats.heartbeats);
    let (claims, _, claim_latency) = latency(&stats.claims);
    let (idle_beats, _, idle_latency) = latency(&stats.idle_heartbeats);
    let (busy_beats, _, busy_latency) = latency(&stats.busy_heartbeats);
    let heartbeat_errors = stats.heartbeats.errors.load(Ordering::Relaxed);
    let claimed = stats.claimed.load(Ordering::Relaxed);
    let finished = stats.finished.load(Ordering::Relaxed);

    let delta = metrics_delta(&before.metrics, &after.metrics);
    let http: Vec<Value> = delta
        .iter()
        .map(|s| {
            json!({
                "method": s.method, "route": s.route, "status": s.status, "count": s.count,
                "per_sec": round(s.count as f64 / seconds, 1),
                "server_mean_ms": round(s.seconds * 1000.0 / s.count.max(1) as f64, 2),
            })
        })
        .collect();
    let event_streams: u64 = after
        .metrics
        .iter()
        .filter(|s| s.route == "/workers/{id}/events")
        .map(|s| s.count)
        .sum();

    // Keeping up: the workers finished about as many tasks as were created over the window, and the backlog did
    // not grow by more than a few seconds of creates.
    let expected = settings.task_rate * window_s;
    let backlog_growth = after.pending as f64 - before.pending as f64;
    let keeps_up = finished as f64 >= 0.9 * expected && backlog_growth <= (settings.task_rate * 5.0).max(5.0);
    let p99_ok = beats > 0 && hb99 < settings.target_p99_ms;
    let commits = after.db.commits - before.db.commits;

    json!({
        "workers": n,
        "registered_after_s": round(input.registered_s, 1),
        "window_s": round(window_s, 1),
        "heartbeats": {
            "count": beats,
            "per_sec": round(beats as f64 / window_s, 1),
            "latency": heartbeat_latency,
            "errors": heartbeat_errors,
            "error_samples": *stats.heartbeats.error_samples.lock().unwrap(),
            "handed_a_task": stats.handed.load(Ordering::Relaxed),
            "idle": {"count": idle_beats, "latency": idle_latency},
            "busy": {"count": busy_beats, "latency": busy_latency},
            "server_side": server_side(&delta, "/workers/heartbeat"),
        },
        "claims": {
            "count": claims,
            "per_sec": round(claims as f64 / window_s, 1),
            "latency": claim_latency,
            "errors": stats.claims.errors.load(Ordering::Relaxed),
            "error_samples": *stats.claims.error_samples.lock().unwrap(),
            "got_a_task": claimed,
            "found_none": (claims as u64).saturating_sub(claimed + stats.claims.errors.load(Ordering::Relaxed)),
            "server_side": server_side(&delta, "/workers/claim"),
        },
        "tasks": {
            "created": creates.in_window,
            "create_errors": creates.errors,
            "create_first_error": creates.first_error,
            "create_p99_ms": round(percentile(&creates.latencies_ms, 0.99), 2),
            "finished": finished,
            "finished_per_sec": round(finished as f64 / window_s, 1),
            "finish_errors": stats.finish_errors.load(Ordering::Relaxed),
            "other_calls": stats.other_calls.load(Ordering::Relaxed),
            "other_call_errors": stats.other_errors.load(Ordering::Relaxed),
            "pending_at_start": before.pending, "pending_at_end": after.pending,
            "running_at_start": before.running, "running_at_end": after.running,
            "drained_after_window": input.drained,
        },
        "server": {
            "rss_mib_before_workers": opt(input.server_rss_idle),
            "rss_mib_window_start": opt(before.server_rss_mib),
            "rss_mib_window_end": opt(after.server_rss_mib),
            "peak_rss_mib": opt(after.server_hwm_mib),
            "rss_kib_per_worker": per_worker_kib(input.server_rss_idle, after.server_rss_mib),
            "cpu_s": round(server_cpu, 2),
            "cpu_cores": round(server_cpu / seconds, 3),
            "cpu_s_per_worker_per_min": round(server_cpu / n as f64 / (seconds / 60.0), 5),
            "threads": after.server_threads,
            "open_fds": after.server_fds,
            "open_files_limit": input.server_limits.map(|(soft, hard)| json!({"soft": soft, "hard": hard})),
        },
        "postgres": {
            "database_backends_cpu_s": round(backends_cpu, 2),
            "database_backends_cpu_cores": round(backends_cpu / seconds, 3),
            "database_backends_cpu_s_per_worker_per_min": round(backends_cpu / n as f64 / (seconds / 60.0), 5),
            "database_backends_closed_in_window": backends_closed,
            "all_postgres_processes_cpu_s": round(postgres_cpu, 2),
            "all_postgres_processes_cpu_cores": round(postgres_cpu / seconds, 3),
            "commits_per_sec": round(commits as f64 / seconds, 1),
            "rollbacks": after.db.rollbacks - before.db.rollbacks,
            "deadlocks": after.db.deadlocks - before.db.deadlocks,
            "connections": after.db_connections,
        },
        "bench_process": {
            "cpu_s": round(bench_cpu, 2),
            "cpu_cores": round(bench_cpu / seconds, 3),
            "rss_mib_before_workers": opt(input.bench_rss_before),
            "rss_mib_with_fleet": opt(input.bench_rss_fleet),
            "rss_mib_window_end": opt(after.bench_rss_mib),
            "rss_kib_per_worker": per_worker_kib(input.bench_rss_before, input.bench_rss_fleet),
        },
        "machine": {
            "busy_fraction": round(busy / total, 3),
            "other_processes_cpu_s": round((busy - server_cpu - postgres_cpu - bench_cpu).max(0.0), 2),
            "other_postgres_cpu_s": round((postgres_cpu - backends_cpu).max(0.0), 2),
        },
        "connections": {
            "server_established_window_start": before.connections,
            "server_established_window_end": after.connections,
            "per_worker": round(after.connections as f64 / n as f64, 2),
            "event_streams_opened": event_streams,
        },
        "probes": {
            "interval_ms": PROBE_INTERVAL.as_millis() as u64,
            "db_select_ms": summary(&input.probes.select_ms),
            "db_commit_ms": summary(&input.probes.commit_ms),
            "server_health_ms": summary(&input.probes.health_ms),
        },
        "http_requests": http,
        "workers_ended_with_error": input.worker_errors,
        "checks": {
            "heartbeat_p99_under_target": p99_ok,
            "no_heartbeat_errors": heartbeat_errors == 0,
            "keeps_up": keeps_up,
            "passed": p99_ok && heartbeat_errors == 0 && keeps_up,
        },
    })
}
