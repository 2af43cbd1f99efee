//! Benchmark of a whole fleet under load (issue 11): the real server on PostgreSQL, real worker processes on the
//! simulated backend, and many HTTP clients creating tasks at once.
//!
//! ```text
//! cargo build --release -p aiopslab-cli -p aiopslab-bench
//! cargo run --release -p aiopslab-bench --bin bench_fleet                      # 20,000 tasks, 50 clients, 4 workers × 4 slots
//! BENCH_TASKS=2000 cargo run --release -p aiopslab-bench --bin bench_fleet     # a quick run
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), creates a scratch
//! database of its own (dropped at the end unless `BENCH_KEEP_DATABASE=1`), and starts, from this program's own
//! directory, `aiopslab serve` (`--database-url` on the scratch database, no in-process workers, a free port)
//! and `BENCH_WORKERS` `aiopslab worker`s (`--server URL --cluster simulated`, `BENCH_SLOTS` slots each, runs of
//! `BENCH_SIM_STEPS` steps lasting `BENCH_SIM_MS` in all). Once every worker is registered, `BENCH_CLIENTS`
//! concurrent clients create `BENCH_TASKS` tasks with `POST /tasks`, and the program waits until every task is
//! terminal (polling `GET /stats`). Every child process is stopped at the end, also on error or interrupt; their
//! output goes to files in a temporary directory (kept, and named, with `BENCH_KEEP_LOGS=1` or on error).
//!
//! Prints one JSON document (progress goes to stderr):
//!
//! - `create`: creates per second (first create sent → last answered) and their latency (p50, p90, p99, max);
//! - `drain`: seconds from the first create until every task is terminal, tasks per second over that span, the
//!   steady rate (10 % → 90 % of tasks terminal), the best second (by `completed_at`), tasks by final status, and a
//!   timeline of `[seconds, pending, running, terminal]`;
//! - `task_ms`: create → claim (`started_at - created_at`) and claim → finish (`completed_at - started_at`);
//! - `deadlocks`: `pg_stat_database.deadlocks` of the scratch database before the load and after the fleet stopped;
//! - `heartbeats`: heartbeat requests and the non-2xx ones (the server's `/metrics`), and the heartbeat
//!   warnings and errors in the workers' logs;
//! - `http_requests`: requests per route and status from `/metrics`, per task and with the server's time in them;
//! - `cpu`: CPU seconds used during the drain by the server, the workers, PostgreSQL, this program and every other
//!   process of the machine (a busy machine skews the figures), in all and per task;
//! - `baseline`: the ideal drain rate of this fleet (total slots ÷ simulated run time) and the ratio achieved ÷ ideal;
//! - `previous_report`: the operator's earlier figures for the 20,000-task load, labelled as such, and the ratio of
//!   this run's figures to them; `targets`: 0 deadlocks, a drain of at least 290 tasks/s.
//!
//! Knobs (environment): `BENCH_TASKS` (20000), `BENCH_CLIENTS` (50), `BENCH_WORKERS` (4), `BENCH_SLOTS` (4),
//! `BENCH_SIM_MS` (20), `BENCH_SIM_STEPS` (1), `BENCH_DISPATCH_DELAY_MS` (the server's default, 1000),
//! `BENCH_PROBLEM` (`k8s_target_port-misconfig-detection-1`), `BENCH_DRAIN_TIMEOUT_SECS` (1800: the run is
//! reported as not drained past it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use bench_support::measure::{parse_metrics, percentile, round, CpuSnapshot, DbCounters, RouteStatus};
use bench_support::{env_or, get_json, get_text, post_task, task_body, until_interrupted, Binaries, Fleet, Scratch};

/// The operator's figures for the 20,000-task load, before the fixes of issue 11.
const PREVIOUS_CREATES_PER_SEC: f64 = 474.0;
const PREVIOUS_CREATE_P99_MS: f64 = 340.0;
const PREVIOUS_DRAIN_TASKS_PER_SEC: f64 = 29.0;
const PREVIOUS_DEADLOCKS: i64 = 1808;
/// Issue 11's target: at least ten times the earlier drain rate.
const TARGET_DRAIN_TASKS_PER_SEC: f64 = 290.0;
const STATS_POLL: Duration = Duration::from_millis(500);
const TIMELINE_POINTS: usize = 20;

/// The load, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    tasks: usize,
    clients: usize,
    workers: usize,
    slots: u32,
    sim_ms: u64,
    sim_steps: u32,
    dispatch_delay_ms: Option<u64>,
    problem: String,
    drain_timeout: Duration,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let settings = Self {
            tasks: env_or("BENCH_TASKS", 20_000)?,
            clients: env_or("BENCH_CLIENTS", 50)?,
            workers: env_or("BENCH_WORKERS", 4)?,
            slots: env_or("BENCH_SLOTS", 4)?,
            sim_ms: env_or("BENCH_SIM_MS", 20)?,
            sim_steps: env_or("BENCH_SIM_STEPS", 1)?,
            dispatch_delay_ms: match std::env::var("BENCH_DISPATCH_DELAY_MS") {
                Ok(_) => Some(env_or("BENCH_DISPATCH_DELAY_MS", 1000)?),
                Err(_) => None,
            },
            problem: env_or("BENCH_PROBLEM", "k8s_target_port-misconfig-detection-1".to_string())?,
            drain_timeout: Duration::from_secs(env_or("BENCH_DRAIN_TIMEOUT_SECS", 1800)?),
        };
        ensure!(
            settings.tasks >= 1 && settings.clients >= 1 && settings.workers >= 1 && settings.slots >= 1,
            "BENCH_TASKS, BENCH_CLIENTS, BENCH_WORKERS and BENCH_SLOTS must be at least 1"
        );
        ensure!(settings.sim_steps >= 1, "BENCH_SIM_STEPS must be at least 1");
        Ok(settings)
    }

    fn step_delay_ms(&self) -> u64 {
        self.sim_ms / u64::from(self.sim_steps)
    }

    fn total_slots(&self) -> u64 {
        self.workers as u64 * u64::from(self.slots)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let binaries = Binaries::beside_this_program()?;
    let scratch = Scratch::create("aiopslab_bench_fleet").await?;
    // The fleet lives inside `run`: whether it returns, fails or is dropped on a signal, its children are stopped.
    let result = until_interrupted(run(&settings, binaries, &scratch)).await;
    scratch.finish(result).await
}

async fn run(settings: &Settings, binaries: Binaries, scratch: &Scratch) -> anyhow::Result<Value> {
    let started = Instant::now();
    let database = scratch.name.as_str();
    let (mut db, postgres_version) = scratch.connect().await?;

    let mut fleet = Fleet::new(binaries, &scratch.logs);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.clients + 8)
        .timeout(Duration::from_secs(120))
        .build()?;
    let dispatch_delay = settings.dispatch_delay_ms.map(|delay| delay.to_string());
    let server_extra: Vec<&str> = match &dispatch_delay {
        Some(delay) => vec!["--dispatch-delay-ms", delay],
        None => Vec::new(),
    };
    let (_, base) = fleet
        .start_server(&client, &scratch.database_url(), &server_extra)
        .await?;
    eprintln!("server up on {base} (database {database})");

    let worker_ids: Vec<String> = (1..=settings.workers)
        .map(|i| format!("bench-fleet-worker-{i:03}"))
        .collect();
    let slots = settings.slots.to_string();
    for id in &worker_ids {
        let args = bench_support::worker_args(
            id,
            &base,
            settings.sim_steps,
            settings.step_delay_ms(),
            &["--max-parallel", &slots],
        );
        fleet.spawn_worker(id, &args)?;
    }
    wait_registered(&client, &base, &worker_ids, &mut fleet).await?;
    eprintln!(
        "{} workers × {} slots registered; creating {} tasks with {} clients",
        settings.workers, settings.slots, settings.tasks, settings.clients
    );

    let before = DbCounters::read(&mut db, database).await?;
    let cpu_before = CpuSnapshot::take(&fleet);

    // The load: creates, and the drain monitor beside them.
    let load_start = Instant::now();
    let creates_done = Arc::new(AtomicBool::new(false));
    let created_ok = Arc::new(AtomicUsize::new(0));
    let monitor = tokio::spawn(monitor(
        client.clone(),
        base.clone(),
        load_start,
        creates_done.clone(),
        created_ok.clone(),
        settings.drain_timeout,
    ));
    let creates = create_tasks(&client, &base, settings).await;
    created_ok.store(creates.ok, Ordering::SeqCst);
    creates_done.store(true, Ordering::SeqCst);
    eprintln!(
        "created {} tasks in {:.1} s ({:.0}/s, {} errors); waiting for the drain",
        creates.ok,
        creates.seconds,
        creates.ok as f64 / creates.seconds,
        creates.errors
    );
    ensure!(
        creates.ok > 0,
        "no task was created: {}",
        creates.first_error.as_deref().unwrap_or("?")
    );
    let drain = monitor.await.context("the drain monitor panicked")??;
    let cpu_after = CpuSnapshot::take(&fleet);
    eprintln!(
        "{} after {:.1} s ({} terminal of {})",
        if drain.drained { "drained" } else { "NOT drained" },
        drain.seconds,
        drain.samples.last().map_or(0, |s| s.terminal),
        creates.ok
    );

    // Workers stop first (their last heartbeats and deregistrations are counted), then the metrics are read and the
    // server stops; the database's counters are read once every connection is gone.
    fleet.stop_workers(Duration::from_secs(40)).await;
    let metrics = match get_text(&client, &format!("{base}/metrics")).await {
        Ok(text) => parse_metrics(&text),
        Err(error) => {
            eprintln!("cannot read /metrics: {error:#}");
            Vec::new()
        }
    };
    fleet.stop_server(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = DbCounters::read(&mut db, database).await?;
    let tasks = TaskFigures::read(&mut db).await?;
    db.close().await?;

    let worker_logs: Vec<LogScan> = fleet.workers.iter().map(|w| LogScan::read(&w.log)).collect();
    let server_log = fleet.server.as_ref().map(|s| LogScan::read(&s.log)).unwrap_or_default();
    Ok(report(ReportInput {
        settings,
        postgres_version,
        creates: &creates,
        drain: &drain,
        tasks: &tasks,
        before: &before,
        after: &after,
        metrics: &metrics,
        worker_logs: &worker_logs,
        server_log: &server_log,
        cpu: cpu_after.since(&cpu_before, creates.ok as u64, "bench_clients"),
        total_seconds: started.elapsed().as_secs_f64(),
    }))
}

async fn wait_registered(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fleet.check()?;
        if let Ok(listing) = get_json(client, &format!("{base}/workers")).await {
            let live: Vec<&str> = listing["workers"]
                .as_array()
                .map(|workers| {
                    workers
                        .iter()
                        .filter(|w| w["status"] != "offline")
                        .filter_map(|w| w["id"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            if ids.iter().all(|id| live.contains(&id.as_str())) {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "the workers did not register within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The load

struct Creates {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
    /// Latencies of the successful creates, in milliseconds, sorted.
    latencies_ms: Vec<f64>,
}

/// `settings.tasks` creates by `settings.clients` concurrent clients, each taking the next until none is left.
async fn create_tasks(client: &reqwest::Client, base: &str, settings: &Settings) -> Creates {
    let body = task_body(&settings.problem, None).to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/tasks");
    let started = Instant::now();
    let handles: Vec<_> = (0..settings.clients)
        .map(|_| {
            let (client, url, body, next, total) =
                (client.clone(), url.clone(), body.clone(), next.clone(), settings.tasks);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut first_error = None;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    match post_task(&client, &url, body.clone()).await {
                        Ok(_) => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut creates = Creates {
        ok: 0,
        errors: 0,
        first_error: None,
        seconds: 0.0,
        latencies_ms: Vec::with_capacity(settings.tasks),
    };
    for handle in handles {
        match handle.await {
            Ok((latencies, errors, first_error)) => {
                creates.latencies_ms.extend(latencies);
                creates.errors += errors;
                if creates.first_error.is_none() {
                    creates.first_error = first_error;
                }
            }
            Err(error) => {
                creates.errors += 1;
                creates
                    .first_error
                    .get_or_insert_with(|| format!("a client panicked: {error}"));
            }
        }
    }
    creates.seconds = started.elapsed().as_secs_f64();
    creates.ok = creates.latencies_ms.len();
    creates.latencies_ms.sort_by(f64::total_cmp);
    creates
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    pending: u64,
    running: u64,
    terminal: u64,
}

struct Drain {
    drained: bool,
    /// From the first create until every created task was seen terminal (or the timeout).
    seconds: f64,
    samples: Vec<Sample>,
    failed_polls: u64,
}

/// Polls `GET /stats` until the creates are done and every created task is terminal, or `timeout` passes.
async fn monitor(
    client: reqwest::Client,
    base: String,
    start: Instant,
    creates_done: Arc<AtomicBool>,
    created_ok: Arc<AtomicUsize>,
    timeout: Duration,
) -> anyhow::Result<Drain> {
    let url = format!("{base}/stats");
    let mut samples = Vec::new();
    let mut failed_polls = 0;
    let mut last_report = Instant::now();
    loop {
        match get_json(&client, &url).await {
            Ok(stats) => {
                let count = |status: &str| stats["tasks_by_status"][status].as_u64().unwrap_or(0);
                let sample = Sample {
                    seconds: start.elapsed().as_secs_f64(),
                    pending: count("pending"),
                    running: count("running"),
                    terminal: ["completed", "failed", "timeout", "cancelled"]
                        .iter()
                        .map(|s| count(s))
                        .sum(),
                };
                samples.push(sample);
                if last_report.elapsed() >= Duration::from_secs(5) {
                    eprintln!(
                        "  {:6.1} s: pending {}, running {}, terminal {}",
                        sample.seconds, sample.pending, sample.running, sample.terminal
                    );
                    last_report = Instant::now();
                }
                let done = creates_done.load(Ordering::SeqCst);
                if done && sample.terminal >= created_ok.load(Ordering::SeqCst) as u64 {
                    return Ok(Drain {
                        drained: true,
                        seconds: sample.seconds,
                        samples,
                        failed_polls,
                    });
                }
            }
            Err(error) => {
                failed_polls += 1;
                if failed_polls <= 3 {
                    eprintln!("GET /stats failed: {error:#}");
                }
            }
        }
        if start.elapsed() > timeout {
            return Ok(Drain {
                drained: false,
                seconds: start.elapsed().as_secs_f64(),
                samples,
                failed_polls,
            });
        }
        tokio::time::sleep(STATS_POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/// What the tasks table says after the run.
struct TaskFigures {
    by_status: BTreeMap<String, i64>,
    /// `started_at - created_at` and `completed_at - started_at` of completed tasks, ms: p50, p99, max.
    wait_ms: [Option<f64>; 3],
    run_ms: [Option<f64>; 3],
    /// Most tasks completed in one second of the database's clock.
    best_second: Option<i64>,
    /// `max(completed_at) - min(created_at)`, seconds.
    span_seconds: Option<f64>,
    max_attempt: Option<i32>,
}

impl TaskFigures {
    async fn read(db: &mut PgConnection) -> anyhow::Result<Self> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY 1")
            .fetch_all(&mut *db)
            .await?;
        let percentiles = |expression: &str| {
            format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::float8, \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::float8, max(x)::float8 \
                 FROM (SELECT extract(epoch FROM {expression}) * 1000 AS x FROM tasks WHERE status = 'completed') s"
            )
        };
        let wait: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(&percentiles("started_at - created_at"))
            .fetch_one(&mut *db)
            .await?;
        let run: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(&percentiles("completed_at - started_at"))
            .fetch_one(&mut *db)
            .await?;
        let best_second: Option<i64> = sqlx::query_scalar(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM tasks WHERE completed_at IS NOT NULL \
             GROUP BY date_trunc('second', completed_at)) s",
        )
        .fetch_one(&mut *db)
        .await?;
        let span_seconds: Option<f64> =
            sqlx::query_scalar("SELECT extract(epoch FROM max(completed_at) - min(created_at))::float8 FROM tasks")
                .fetch_one(&mut *db)
                .await?;
        let max_attempt: Option<i32> = sqlx::query_scalar("SELECT max(attempt) FROM tasks")
            .fetch_one(&mut *db)
            .await?;
        Ok(Self {
            by_status: rows.into_iter().collect(),
            wait_ms: [wait.0, wait.1, wait.2],
            run_ms: [run.0, run.1, run.2],
            best_second,
            span_seconds,
            max_attempt,
        })
    }
}

/// Warnings and errors in a process's log.
#[derive(Debug, Default)]
struct LogScan {
    lines: u64,
    warnings: u64,
    errors: u64,
    heartbeat_warnings: u64,
    heartbeat_errors: u64,
    samples: Vec<String>,
}

impl LogScan {
    fn read(path: &Path) -> Self {
        let mut scan = Self::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return scan;
        };
        for line in text.lines() {
            scan.lines += 1;
            let head: String = line.chars().take(48).collect();
            let (warning, error) = (head.contains(" WARN "), head.contains(" ERROR "));
            if !(warning || error) {
                continue;
            }
            let heartbeat = line.to_ascii_lowercase().contains("heartbeat");
            scan.warnings += u64::from(warning);
            scan.errors += u64::from(error);
            scan.heartbeat_warnings += u64::from(warning && heartbeat);
            scan.heartbeat_errors += u64::from(error && heartbeat);
            if scan.samples.len() < 3 {
                scan.samples.push(line.chars().take(400).collect());
            }
        }
        scan
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The report

fn ratio(a: f64, b: f64) -> Value {
    if b == 0.0 {
        Value::Null
    } else {
        json!(round(a / b, 3))
    }
}

fn opt_ms(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| json!(round(x, 1)))
}

/// Tasks per second between the first samples with 10 % and 90 % of `total` terminal.
fn steady_rate(samples: &[Sample], total: u64) -> Option<f64> {
    let at = |fraction: f64| {
        let threshold = (total as f64 * fraction).ceil() as u64;
        samples.iter().find(|s| s.terminal >= threshold)
    };
    let (from, to) = (at(0.1)?, at(0.9)?);
    (to.seconds > from.seconds).then(|| (to.terminal - from.terminal) as f64 / (to.seconds - from.seconds))
}

struct ReportInput<'a> {
    settings: &'a Settings,
    postgres_version: String,
    creates: &'a Creates,
    drain: &'a Drain,
    tasks: &'a TaskFigures,
    before: &'a DbCounters,
    after: &'a DbCounters,
    metrics: &'a [RouteStatus],
    worker_logs: &'a [LogScan],
    server_log: &'a LogScan,
    cpu: Value,
    total_seconds: f64,
}

fn report(input: ReportInput<'_>) -> Value {
    let ReportInput {
        settings,
        creates,
        drain,
        tasks,
        before,
        after,
        metrics,
        ..
    } = input;
    let created = creates.ok as u64;
    let create_rate = created as f64 / creates.seconds.max(1e-9);
    let p = |q: f64| round(percentile(&creates.latencies_ms, q), 1);
    let terminal = drain.samples.last().map_or(0, |s| s.terminal);
    let drain_rate = terminal as f64 / drain.seconds.max(1e-9);
    let steady = steady_rate(&drain.samples, created);
    let first_terminal = drain.samples.iter().find(|s| s.terminal > 0).map(|s| s.seconds);
    let completed = tasks.by_status.get("completed").copied().unwrap_or(0);
    let not_completed: i64 = tasks
        .by_status
        .iter()
        .filter(|(s, _)| *s != "completed")
        .map(|(_, n)| n)
        .sum();
    let deadlocks = after.deadlocks - before.deadlocks;
    let commits = after.commits - before.commits;

    let step = (drain.samples.len() / TIMELINE_POINTS).max(1);
    let mut timeline: Vec<Value> = drain
        .samples
        .iter()
        .step_by(step)
        .map(|s| json!([round(s.seconds, 1), s.pending, s.running, s.terminal]))
        .collect();
    if let Some(last) = drain.samples.last() {
        let entry = json!([round(last.seconds, 1), last.pending, last.running, last.terminal]);
        if timeline.last() != Some(&entry) {
            timeline.push(entry);
        }
    }

    let mut routes = serde_json::Map::new();
    for series in metrics {
        routes.insert(
            format!("{} {} {}", series.method, series.route, series.status),
            json!({
                "count": series.count,
                "per_task": round(series.count as f64 / created.max(1) as f64, 2),
                "server_seconds": round(series.seconds, 2),
                "mean_ms": round(series.seconds * 1000.0 / series.count.max(1) as f64, 2),
            }),
        );
    }
    let heartbeat_series: Vec<&RouteStatus> = metrics.iter().filter(|s| s.route == "/workers/heartbeat").collect();
    let heartbeat_requests: u64 = heartbeat_series.iter().map(|s| s.count).sum();
    let heartbeat_non_2xx: u64 = heartbeat_series
        .iter()
        .filter(|s| !(200..300).contains(&s.status))
        .map(|s| s.count)
        .sum();
    let non_2xx_by_route: BTreeMap<String, u64> =
        metrics
            .iter()
            .filter(|s| !(200..300).contains(&s.status))
            .fold(BTreeMap::new(), |mut acc, s| {
                *acc.entry(format!("{} {} {}", s.method, s.route, s.status)).or_insert(0) += s.count;
                acc
            });
    let logs = input.worker_logs;
    let sum = |f: fn(&LogScan) -> u64| logs.iter().map(f).sum::<u64>();
    let samples: Vec<&String> = logs.iter().flat_map(|l| &l.samples).take(5).collect();

    let sim_seconds = settings.sim_ms as f64 / 1000.0;
    let ideal = if settings.sim_ms == 0 {
        None
    } else {
        Some(settings.total_slots() as f64 / sim_seconds)
    };
    let create_p99 = percentile(&creates.latencies_ms, 0.99);
    json!({
        "benchmark": "aiopslab-bench bench_fleet",
        "settings": {
            "tasks": settings.tasks,
            "clients": settings.clients,
            "workers": settings.workers,
            "slots_per_worker": settings.slots,
            "sim_steps": settings.sim_steps,
            "sim_step_delay_ms": settings.step_delay_ms(),
            "dispatch_delay_ms": settings.dispatch_delay_ms.map_or(json!("server default (1000)"), |d| json!(d)),
            "problem_id": settings.problem,
            "store": "postgresql",
            "postgres_version": input.postgres_version,
        },
        "create": {
            "ok": created,
            "errors": creates.errors,
            "first_error": creates.first_error,
            "seconds": round(creates.seconds, 2),
            "creates_per_sec": round(create_rate, 1),
            "latency_ms": {"p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "max": p(1.0)},
        },
        "drain": {
            "drained": drain.drained,
            "seconds_first_create_to_all_terminal": round(drain.seconds, 2),
            "seconds_to_first_terminal": first_terminal.map(|s| round(s, 2)),
            "tasks_per_sec": round(drain_rate, 1),
            "steady_tasks_per_sec_10_to_90_percent": steady.map(|r| round(r, 1)),
            "best_second_tasks": tasks.best_second,
            "database_span_seconds": tasks.span_seconds.map(|s| round(s, 2)),
            "by_status": tasks.by_status,
            "not_completed": not_completed,
            "all_completed": drain.drained && not_completed == 0 && completed as u64 == created,
            "max_attempt": tasks.max_attempt,
            "failed_stats_polls": drain.failed_polls,
            "timeline_seconds_pending_running_terminal": timeline,
        },
        "task_ms": {
            "create_to_claim": {"p50": opt_ms(tasks.wait_ms[0]), "p99": opt_ms(tasks.wait_ms[1]), "max": opt_ms(tasks.wait_ms[2])},
            "claim_to_finish": {"p50": opt_ms(tasks.run_ms[0]), "p99": opt_ms(tasks.run_ms[1]), "max": opt_ms(tasks.run_ms[2])},
            "simulated_run": settings.sim_ms,
        },
        "deadlocks": {"before": before.deadlocks, "after": after.deadlocks, "delta": deadlocks},
        "database": {
            "commits": commits,
            "rollbacks": after.rollbacks - before.rollbacks,
            "commits_per_task": round(commits as f64 / created.max(1) as f64, 2),
        },
        "heartbeats": {
            "requests": heartbeat_requests,
            "non_2xx": heartbeat_non_2xx,
            "worker_log_heartbeat_warnings": sum(|l| l.heartbeat_warnings),
            "worker_log_heartbeat_errors": sum(|l| l.heartbeat_errors),
        },
        "logs": {
            "worker_warnings": sum(|l| l.warnings),
            "worker_errors": sum(|l| l.errors),
            "worker_lines": sum(|l| l.lines),
            "server_warnings": input.server_log.warnings,
            "server_errors": input.server_log.errors,
            "samples": samples,
        },
        "http_non_2xx": non_2xx_by_route,
        "http_requests": routes,
        "cpu": input.cpu,
        "baseline": {
            "total_slots": settings.total_slots(),
            "simulated_run_seconds": sim_seconds,
            "ideal_drain_tasks_per_sec": ideal.map(|i| round(i, 1)),
            "achieved_over_ideal": ideal.map_or(Value::Null, |i| ratio(drain_rate, i)),
            "steady_over_ideal": match (steady, ideal) {
                (Some(s), Some(i)) => ratio(s, i),
                _ => Value::Null,
            },
        },
        "previous_report": {
            "label": "the operator's earlier figures for the 20,000-task load (issue 11), not measured here",
            "creates_per_sec": PREVIOUS_CREATES_PER_SEC,
            "create_p99_ms": PREVIOUS_CREATE_P99_MS,
            "drain_tasks_per_sec": PREVIOUS_DRAIN_TASKS_PER_SEC,
            "deadlocks": PREVIOUS_DEADLOCKS,
            "this_run_over_previous": {
                "creates_per_sec": ratio(create_rate, PREVIOUS_CREATES_PER_SEC),
                "create_p99_ms": ratio(create_p99, PREVIOUS_CREATE_P99_MS),
                "drain_tasks_per_sec": ratio(drain_rate, PREVIOUS_DRAIN_TASKS_PER_SEC),
                "deadlocks": ratio(deadlocks as f64, PREVIOUS_DEADLOCKS as f64),
            },
        },
        "targets": {
            "deadlocks": 0,
            "drain_tasks_per_sec_min": TARGET_DRAIN_TASKS_PER_SEC,
            "deadlocks_met": deadlocks == 0,
            "drain_met": drain.drained && drain_rate >= TARGET_DRAIN_TASKS_PER_SEC,
        },
        "total_seconds": round(input.total_seconds, 1),
    })
}
