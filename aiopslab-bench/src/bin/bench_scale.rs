//! The scale benchmark (issue 13, item 6): in one run on one scratch database, the server's figures beside the
//! database's own and PgQueuer's.
//!
//! ```text
//! cargo build --release -p aiopslab-cli -p aiopslab-bench
//! target/release/bench_scale                       # the full run (11 to 13 minutes)
//! BENCH_TASKS_STORED=20000 BENCH_DRAIN_TASKS=1000 BENCH_SECS=3 BENCH_SKIP=push target/release/bench_scale
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), creates a scratch database
//! of its own (dropped at the end unless `BENCH_KEEP_DATABASE=1`) and starts `aiopslab serve` beside this
//! program on it (`--dispatch-delay-ms 0`, no in-process workers). Sections, in this order (progress on stderr):
//!
//! - `post_tasks`: `BENCH_CLIENTS` (64) clients send `POST /tasks` for `BENCH_SECS` (10) seconds on the empty tasks
//!   table: creates/s and latency; beside it `pgbench -n -c 64 -j 2 -T 10 -f` of a single-row `INSERT` into
//!   `bench_insert`, made `LIKE tasks INCLUDING ALL` (the same columns, defaults, constraints and indexes), and the
//!   ratio. The tasks are then removed (`TRUNCATE`) and the copy dropped.
//! - seeding: `BENCH_TASKS_STORED` (1,000,000) tasks in one `INSERT ... SELECT generate_series`, the newest
//!   `BENCH_DRAIN_TASKS` (10,000) pending, the others terminal (completed with a result, some failed, cancelled,
//!   timed out with their error details), four problem ids of which one has 60 % of the rows; then `VACUUM ANALYZE
//!   tasks` and a `CHECKPOINT`. Ids are `md5('aiopslab-bench-' || n)::uuid`, so pgbench can name a random one.
//! - `get_task`: the same clients on `GET /tasks/{id}` of random stored ids, beside pgbench's
//!   `SELECT * FROM tasks WHERE id = md5('aiopslab-bench-' || :n)::uuid` (`\set n random(1, stored)`); target ≥ 0.8.
//! - `list`: `BENCH_LIST_SAMPLES` (200) sequential requests of each list query (`limit=10`; `status=pending`;
//!   `status=pending&sort=-priority`; `problem_id=` the popular one), target p99 < 20 ms, and `BENCH_STATS_SAMPLES`
//!   (50) of `GET /stats` and `GET /metrics`, target p99 < 50 ms; with the `total` the page answered.
//! - `drain_database` and `drain_http`: `BENCH_DRAIN_TASKS` pending tasks (the seeded ones, then as many inserted by
//!   SQL at once) drained by ONE `worker` process (`--max-parallel BENCH_SLOTS` (16), `--cluster simulated`, runs
//!   of one step of 0 ms) straight on the database (`--database-url`, `--dispatch-delay-ms 0`), then over HTTP
//!   (`--server`): tasks/s from the first `started_at` to the last `completed_at`, and the CPU used.
//! - `pgqueuer`: the benchmark's setup makes a Python venv (`BENCH_VENV`, default `.bench/venv` in the repository),
//!   installs pinned `pgqueuer` and `asyncpg` from PyPI when they are missing, and runs
//!   `aiopslab-bench/pgqueuer_drain.py` on the scratch database: PgQueuer's schema installed, as many jobs
//!   enqueued in one batch, drained by one queue manager with a no-op entrypoint (batch 8, at most 16 picked:
//!   `BENCH_PGQ_BATCH`, `BENCH_PGQ_MAX_CONCURRENT`), first pick → last ack from its log table. The drains' ratios to
//!   it are in `drain_database`/`drain_http` (target ≥ 1).
//! - `push`: the `bench_push` program beside this one, run as a child, its JSON embedded (`BENCH_PUSH_SAMPLES`,
//!   `BENCH_PUSH_CANCEL_SAMPLES`, `BENCH_PUSH_BASELINE_SAMPLES` become its `BENCH_SAMPLES`, `BENCH_CANCEL_SAMPLES`,
//!   `BENCH_BASELINE_SAMPLES`; its defaults take about 6 minutes).
//!
//! `BENCH_SKIP=post,get,list,drain_database,drain_http,pgqueuer,push` (any of them; `drain` is the three drains)
//! leaves sections out: a skipped section is printed as `{"skipped": true}`, never with figures. A section that
//! failed in a child (pgqueuer, push) is printed as `{"error": ...}` and the run goes on.
//!
//! Prints one JSON document: `machine` (cores, load average before and after, PostgreSQL's version and `fsync`,
//! `synchronous_commit`, `shared_buffers`), `settings`, the sections above (each with its `cpu`: server, worker,
//! PostgreSQL, this program with its reaped children, other processes), and `targets`: one row per figure with
//! `measured`, `baseline`, `ratio`, `target` and `met` (`null` when there is no target or no figure), which
//! `scripts/bench_table.py` turns into the README's table. Other knobs: `BENCH_PGBENCH` (`pgbench`),
//! `BENCH_PGBENCH_THREADS` (2), `BENCH_PYTHON` (`python3`, for the venv), `BENCH_DRAIN_TIMEOUT_SECS` (600).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, Row};

use bench_support::measure::{latency_summary, percentile, round, CpuSnapshot};
use bench_support::{
    env_or, get_text, post_task, simulated_worker_args, task_body, until_interrupted, Binaries, Fleet, Scratch,
};

/// The popular problem (60 % of the seeded rows) and the three others.
const PROBLEMS: [&str; 4] = [
    "misconfig_app_hotel_res-detection-1",
    "k8s_target_port-misconfig-detection-1",
    "revoke_auth_mongodb-detection-1",
    "pod_failure_hotel_res-localization-1",
];
/// The PyPI versions the benchmark's setup installs (they work with Python 3.11).
const PGQUEUER_VERSION: &str = "1.6.0";
const ASYNCPG_VERSION: &str = "0.32.0";
const SECTIONS: [&str; 7] = [
    "post",
    "get",
    "list",
    "drain_database",
    "drain_http",
    "pgqueuer",
    "push",
];
const LIST_TARGET_P99_MS: f64 = 20.0;
const STATS_TARGET_P99_MS: f64 = 50.0;
const GET_TARGET_RATIO: f64 = 0.8;
const DRAIN_TARGET_RATIO: f64 = 1.0;

#[derive(Debug, Clone)]
struct Settings {
    stored: u64,
    drain_tasks: u64,
    slots: u32,
    clients: usize,
    secs: u64,
    list_samples: usize,
    stats_samples: usize,
    skip: BTreeSet<String>,
    pgbench: String,
    pgbench_threads: u32,
    python: String,
    venv: PathBuf,
    pgq_batch: u32,
    pgq_max_concurrent: u32,
    drain_timeout: Duration,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let mut skip = BTreeSet::new();
        for name in std::env::var("BENCH_SKIP").unwrap_or_default().split(',') {
            match name.trim() {
                "" => {}
                "drain" => skip.extend(["drain_database", "drain_http", "pgqueuer"].map(String::from)),
                name if SECTIONS.contains(&name) => {
                    skip.insert(name.to_string());
                }
                other => bail!("BENCH_SKIP: unknown section {other:?}; expected some of {SECTIONS:?} or drain"),
            }
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
        let settings = Self {
            stored: env_or("BENCH_TASKS_STORED", 1_000_000)?,
            drain_tasks: env_or("BENCH_DRAIN_TASKS", 10_000)?,
            slots: env_or("BENCH_SLOTS", 16)?,
            clients: env_or("BENCH_CLIENTS", 64)?,
            secs: env_or("BENCH_SECS", 10)?,
            list_samples: env_or("BENCH_LIST_SAMPLES", 200)?,
            stats_samples: env_or("BENCH_STATS_SAMPLES", 50)?,
            skip,
            pgbench: env_or("BENCH_PGBENCH", "pgbench".to_string())?,
            pgbench_threads: env_or("BENCH_PGBENCH_THREADS", 2)?,
            python: env_or("BENCH_PYTHON", "python3".to_string())?,
            venv: env_or("BENCH_VENV", repo.join(".bench/venv"))?,
            pgq_batch: env_or("BENCH_PGQ_BATCH", 8)?,
            pgq_max_concurrent: env_or("BENCH_PGQ_MAX_CONCURRENT", 16)?,
            drain_timeout: Duration::from_secs(env_or("BENCH_DRAIN_TIMEOUT_SECS", 600)?),
        };
        ensure!(
            settings.stored >= settings.drain_tasks && settings.drain_tasks >= 1,
            "BENCH_DRAIN_TASKS must be at least 1 and at most BENCH_TASKS_STORED"
        );
        ensure!(
            settings.clients >= 1 && settings.secs >= 1 && settings.slots >= 1 && settings.slots <= 64,
            "BENCH_CLIENTS and BENCH_SECS must be at least 1, BENCH_SLOTS 1 to 64"
        );
        ensure!(
            settings.list_samples >= 1 && settings.stats_samples >= 1,
            "BENCH_LIST_SAMPLES and BENCH_STATS_SAMPLES must be at least 1"
        );
        Ok(settings)
    }

    fn runs(&self, section: &str) -> bool {
        !self.skip.contains(section)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let binaries = Binaries::beside_this_program()?;
    let bench_push = binaries.aiopslab.with_file_name("bench_push");
    if settings.runs("push") {
        ensure!(
            bench_push.exists(),
            "{} not found: build them first (cargo build --release -p aiopslab-cli -p aiopslab-bench)",
            bench_push.display()
        );
    }
    let scratch = Scratch::create("aiopslab_bench_scale").await?;
    // The fleet lives inside `run`: whether it returns, fails or is dropped on a signal, its children are stopped.
    let result = until_interrupted(run(&settings, binaries, &bench_push, &scratch)).await;
    scratch.finish(result).await
}

/// The report of a skipped section.
fn skipped() -> Value {
    json!({"skipped": true})
}

async fn run(settings: &Settings, binaries: Binaries, bench_push: &Path, scratch: &Scratch) -> anyhow::Result<Value> {
    let started = Instant::now();
    let (mut db, _) = scratch.connect().await?;
    let machine_before = machine(&mut db).await?;
    let url = scratch.database_url();
    // pgbench (libpq) and asyncpg refuse sqlx's own URL parameters (statement-cache-capacity).
    let libpq_url = url.split('?').next().unwrap_or(&url).to_string();

    let mut fleet = Fleet::new(binaries, &scratch.logs);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.clients + 8)
        .timeout(Duration::from_secs(60))
        .build()?;
    let (_, base) = fleet.start_server(&client, &url, &["--dispatch-delay-ms", "0"]).await?;
    eprintln!("server up on {base} (database {})", scratch.name);

    let post = if settings.runs("post") {
        post_tasks(settings, &client, &base, &mut fleet, &mut db, scratch, &libpq_url).await?
    } else {
        skipped()
    };

    seed(&mut db, settings).await?;

    let get = if settings.runs("get") {
        get_task(settings, &client, &base, &mut fleet, &mut db, scratch, &libpq_url).await?
    } else {
        skipped()
    };
    let list = if settings.runs("list") {
        list(settings, &client, &base, &mut fleet, &scratch.name).await?
    } else {
        skipped()
    };

    let mut drains = serde_json::Map::new();
    for (section, store) in [
        ("drain_database", ("--database-url", url.as_str())),
        ("drain_http", ("--server", base.as_str())),
    ] {
        let figures = if settings.runs(section) {
            drain(settings, section, store, &mut fleet, &mut db, &scratch.name).await?
        } else {
            skipped()
        };
        drains.insert(section.into(), figures);
    }
    fleet.stop_server(Duration::from_secs(15)).await;

    let pgqueuer = if settings.runs("pgqueuer") {
        let cpu_before = CpuSnapshot::take(&fleet);
        let commits_before = commits(&mut db, &scratch.name).await?;
        match pgqueuer_drain(settings, &libpq_url).await {
            Ok(mut figures) => {
                let jobs = figures["successful"].as_u64().unwrap_or(0);
                figures["cpu"] = CpuSnapshot::take(&fleet).since(&cpu_before, jobs, "python_and_this_program");
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let commits = commits(&mut db, &scratch.name).await? - commits_before;
                figures["database_commits_per_job"] = json!(round(commits as f64 / jobs.max(1) as f64, 2));
                figures["database_commits_note"] =
                    json!("xact_commit of the scratch database over the whole Python run (schema, enqueue, drain)");
                figures
            }
            Err(error) => {
                eprintln!("pgqueuer: {error:#}");
                json!({"error": format!("{error:#}")})
            }
        }
    } else {
        skipped()
    };
    let pgq_rate = pgqueuer["jobs_per_sec"].as_f64();
    for figures in drains.values_mut() {
        if figures.get("skipped").is_some() {
            continue;
        }
        let rate = figures["tasks_per_sec"].as_f64();
        let ratio = rate.zip(pgq_rate).map(|(ours, theirs)| round(ours / theirs, 3));
        figures["pgqueuer_jobs_per_sec"] = json!(pgq_rate);
        figures["ratio_to_pgqueuer"] = json!(ratio);
        figures["target_ratio_min"] = json!(DRAIN_TARGET_RATIO);
        figures["met"] = json!(ratio.map(|r| r >= DRAIN_TARGET_RATIO));
    }
    db.close().await?;

    let push = if settings.runs("push") {
        match push(bench_push).await {
            Ok(figures) => figures,
            Err(error) => {
                eprintln!("push: {error:#}");
                json!({"error": format!("{error:#}")})
            }
        }
    } else {
        skipped()
    };

    let (mut db, _) = scratch.connect().await?;
    let machine_after = machine(&mut db).await?;
    db.close().await?;
    let targets = targets(&post, &get, &list, &drains, &pgqueuer, &push);
    Ok(json!({
        "benchmark": "aiopslab-bench bench_scale",
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_before": machine_before["load_average"],
            "load_average_after": machine_after["load_average"],
            "postgres": machine_before["postgres"],
        },
        "settings": {
            "tasks_stored": settings.stored,
            "drain_tasks": settings.drain_tasks,
            "worker_slots": settings.slots,
            "clients": settings.clients,
            "seconds_per_load": settings.secs,
            "list_samples": settings.list_samples,
            "stats_samples": settings.stats_samples,
            "skipped": settings.skip,
            "server": "--dispatch-delay-ms 0 --workers 0, the other flags at their defaults",
        },
        "post_tasks": post,
        "get_task": get,
        "list": list,
        "drain_database": drains["drain_database"],
        "drain_http": drains["drain_http"],
        "pgqueuer": pgqueuer,
        "push": push,
        "targets": targets,
        "total_seconds": round(started.elapsed().as_secs_f64(), 1),
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// The machine

/// The load average and PostgreSQL's version and durability settings.
async fn machine(db: &mut PgConnection) -> anyhow::Result<Value> {
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let mut postgres = serde_json::Map::new();
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut *db)
            .await?;
        postgres.insert(setting.into(), json!(value));
    }
    Ok(json!({"load_average": load, "postgres": postgres}))
}

// ---------------------------------------------------------------------------------------------------------------
// Loads

/// What a closed-loop load did.
struct Load {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
    /// Latencies of the successful requests, in milliseconds, sorted.
    latencies_ms: Vec<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    fn report(&self) -> Value {
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": round(self.seconds, 2),
            "per_sec": round(self.rate(), 1),
            "latency_ms": latency_summary(&self.latencies_ms),
        })
    }
}

/// `clients` concurrent loops sending `request(random)` one after the other until `duration` has passed; the
/// rate counts the requests answered by the time the last loop stopped.
async fn closed_loop<F, Fut>(clients: usize, duration: Duration, request: F) -> Load
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let request = request.clone();
            tokio::spawn(async move {
                // xorshift64, seeded per client.
                let mut state = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
                while Instant::now() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let sent = Instant::now();
                    match request(state).await {
                        Ok(()) => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
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
    let mut load = Load {
        ok: 0,
        errors: 0,
        first_error: None,
        seconds: 0.0,
        latencies_ms: Vec::new(),
    };
    for handle in handles {
        match handle.await {
            Ok((latencies, errors, first_error)) => {
                load.latencies_ms.extend(latencies);
                load.errors += errors;
                if load.first_error.is_none() {
                    load.first_error = first_error;
                }
            }
            Err(error) => {
                load.errors += 1;
                load.first_error
                    .get_or_insert_with(|| format!("a client panicked: {error}"));
            }
        }
    }
    load.seconds = start.elapsed().as_secs_f64();
    load.ok = load.latencies_ms.len();
    load.latencies_ms.sort_by(f64::total_cmp);
    load
}

/// `pgbench -n -c clients -j threads -T secs -f script` on the scratch database; its transactions per second
/// (without the initial connection time), average latency and counts.
async fn pgbench(settings: &Settings, url: &str, name: &str, script: &str, logs: &Path) -> anyhow::Result<Value> {
    let path = logs.join(format!("{name}.sql"));
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    let args = [
        "-n".to_string(),
        "-c".into(),
        settings.clients.to_string(),
        "-j".into(),
        settings.pgbench_threads.to_string(),
        "-T".into(),
        settings.secs.to_string(),
        "-f".into(),
        path.display().to_string(),
        url.to_string(),
    ];
    eprintln!(
        "{name}: {} {} {name}.sql (the scratch database)",
        settings.pgbench,
        args[..args.len() - 2].join(" ")
    );
    let output = tokio::process::Command::new(&settings.pgbench)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} (BENCH_PGBENCH)", settings.pgbench))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench {name} failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let after = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = after("tps = ").with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    let count = |prefix: &str| after(prefix).map(|n| n as u64);
    Ok(json!({
        "per_sec": round(tps, 1),
        "latency_avg_ms": after("latency average = "),
        "transactions": count("number of transactions actually processed: "),
        "failed_transactions": count("number of failed transactions: "),
        "command": format!("pgbench {} {name}.sql SCRATCH_DATABASE", args[..args.len() - 2].join(" ")),
        "script": script,
    }))
}

fn ratio(a: f64, b: f64) -> Value {
    if b == 0.0 {
        Value::Null
    } else {
        json!(round(a / b, 3))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// POST /tasks and GET /tasks/{id}

async fn post_tasks(
    settings: &Settings,
    client: &reqwest::Client,
    base: &str,
    fleet: &mut Fleet,
    db: &mut PgConnection,
    scratch: &Scratch,
    libpq_url: &str,
) -> anyhow::Result<Value> {
    eprintln!("post_tasks: {} clients for {} s", settings.clients, settings.secs);
    let database = scratch.name.as_str();
    let body = task_body(PROBLEMS[0], None).to_string();
    let (client2, url) = (client.clone(), format!("{base}/tasks"));
    let cpu_before = CpuSnapshot::take_on(fleet, Some(database));
    let load = closed_loop(settings.clients, Duration::from_secs(settings.secs), move |_| {
        let (client, url, body) = (client2.clone(), url.clone(), body.clone());
        async move { post_task(&client, &url, body).await.map(|_| ()) }
    })
    .await;
    let cpu = CpuSnapshot::take_on(fleet, Some(database)).since(&cpu_before, load.ok as u64, "bench_clients");
    fleet.check()?;
    ensure!(
        load.ok > 0,
        "no task was created: {}",
        load.first_error.as_deref().unwrap_or("?")
    );
    eprintln!("post_tasks: {:.0}/s ({} errors)", load.rate(), load.errors);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut *db)
        .await?;

    db.execute("DROP TABLE IF EXISTS bench_insert; CREATE TABLE bench_insert (LIKE tasks INCLUDING ALL)")
        .await?;
    let script = "INSERT INTO bench_insert (problem_id, agent_config, max_steps, timeout_minutes, priority, metadata, \
                  backend_type, max_retries) VALUES ('misconfig_app_hotel_res-detection-1', \
                  '{\"model\": \"gpt-4o-mini\", \"temperature\": 0.7}', 30, 30, 5, '{}', 'default', 0);\n";
    let cpu_before = CpuSnapshot::take(fleet);
    let mut baseline = pgbench(settings, libpq_url, "insert", script, &scratch.logs).await?;
    let inserted = baseline["transactions"].as_u64().unwrap_or(0);
    baseline["cpu"] = CpuSnapshot::take(fleet).since(&cpu_before, inserted, "pgbench_and_this_program");
    baseline["table"] = json!(
        "bench_insert: CREATE TABLE bench_insert (LIKE tasks INCLUDING ALL), empty at start (the columns, defaults, \
         constraints and indexes of tasks; not its triggers, so not the maintained counts of migration 005, which the \
         server's inserts also pay for)"
    );
    db.execute("DROP TABLE bench_insert; TRUNCATE tasks CASCADE").await?;
    let db_rate = baseline["per_sec"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "what": "POST /tasks (the body of bench_fleet: problem, agent_config, 30 steps, 30 minutes) on the tasks table, \
                 empty at start (the 1,000,000 rows are seeded after; these tasks are removed first)",
        "http": load.report(),
        "tasks_created_in_table": stored,
        "cpu": cpu,
        "pgbench_insert": baseline,
        "ratio_to_pgbench": ratio(load.rate(), db_rate),
        "target_ratio_min": Value::Null,
        "met": Value::Null,
    }))
}

/// The `INSERT ... SELECT` of the seeded tasks `from..=to` (of `stored` in all, for their creation times); those from
/// `pending_from` on are pending, the others terminal.
fn seed_sql(from: u64, to: u64, stored: u64, pending_from: u64) -> String {
    let [p0, p1, p2, p3] = PROBLEMS;
    format!(
        "INSERT INTO tasks (id, problem_id, status, agent_config, max_steps, timeout_minutes, priority, metadata, \
           backend_type, max_retries, worker_id, attempt, created_at, updated_at, started_at, completed_at, result, \
           error_details) \
         SELECT md5('aiopslab-bench-' || n)::uuid, \
           CASE WHEN n % 10 < 6 THEN '{p0}' WHEN n % 10 < 8 THEN '{p1}' WHEN n % 10 = 8 THEN '{p2}' ELSE '{p3}' END, \
           s.status, '{{\"model\": \"gpt-4o-mini\", \"temperature\": 0.7}}'::jsonb, 30, 30, (n * 7 % 11)::int2, \
           '{{}}'::jsonb, 'default', 0, \
           CASE WHEN s.status = 'pending' THEN NULL ELSE 'bench-seed-worker-' || (n % 8) END, \
           CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END, \
           c.created, \
           CASE WHEN s.status = 'pending' THEN c.created ELSE c.created + interval '95 seconds' END, \
           CASE WHEN s.status = 'pending' THEN NULL ELSE c.created + interval '1 second' END, \
           CASE WHEN s.status = 'pending' THEN NULL ELSE c.created + interval '95 seconds' END, \
           CASE WHEN s.status = 'completed' THEN jsonb_build_object( \
             'logs', jsonb_build_array('episode finished after 12 steps'), \
             'metrics', jsonb_build_object('duration_seconds', 94.0, 'steps_taken', 12, \
                                           'Detection Accuracy', 'Correct', 'TTD', 41.5), \
             'output', jsonb_build_object('solution', 'Yes')) END, \
           CASE s.status \
             WHEN 'failed' THEN '{{\"code\": \"backend_error\", \"message\": \"the simulated cluster failed\"}}'::jsonb \
             WHEN 'timeout' THEN '{{\"code\": \"timeout\", \"message\": \"the task ran past its 30 minutes\"}}'::jsonb \
             WHEN 'cancelled' THEN '{{\"code\": \"cancelled\", \"message\": \"cancelled by a client\"}}'::jsonb \
           END \
         FROM generate_series({from}::bigint, {to}::bigint) AS g(n) \
         CROSS JOIN LATERAL (SELECT now() - (1 - least(n, {stored})::float8 / {stored}) * interval '30 days' AS created) c \
         CROSS JOIN LATERAL (SELECT CASE WHEN n >= {pending_from} THEN 'pending' WHEN n % 20 = 0 THEN 'failed' \
           WHEN n % 50 = 1 THEN 'cancelled' WHEN n % 100 = 3 THEN 'timeout' ELSE 'completed' END AS status) s"
    )
}

async fn seed(db: &mut PgConnection, settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let (stored, pending) = (settings.stored, settings.drain_tasks);
    eprintln!("seeding {stored} tasks ({pending} pending)");
    db.execute(seed_sql(1, stored, stored, stored - pending + 1).as_str())
        .await
        .context("seeding the tasks")?;
    let inserted = started.elapsed().as_secs_f64();
    db.execute("VACUUM ANALYZE tasks").await?;
    db.execute("CHECKPOINT").await?;
    eprintln!(
        "seeded in {inserted:.1} s, vacuumed and checkpointed in {:.1} s",
        started.elapsed().as_secs_f64() - inserted
    );
    Ok(())
}

async fn get_task(
    settings: &Settings,
    client: &reqwest::Client,
    base: &str,
    fleet: &mut Fleet,
    db: &mut PgConnection,
    scratch: &Scratch,
    libpq_url: &str,
) -> anyhow::Result<Value> {
    // 100,000 ids drawn uniformly from the seeded ones (at most all of them).
    let sample = settings.stored.min(100_000);
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT md5('aiopslab-bench-' || (1 + floor(random() * {}))::bigint)::uuid::text FROM generate_series(1, {sample})",
        settings.stored
    ))
    .fetch_all(&mut *db)
    .await?;
    let ids = Arc::new(ids);
    eprintln!("get_task: {} clients for {} s", settings.clients, settings.secs);
    let database = scratch.name.as_str();
    let (client2, base2) = (client.clone(), base.to_string());
    let cpu_before = CpuSnapshot::take_on(fleet, Some(database));
    let load = closed_loop(settings.clients, Duration::from_secs(settings.secs), move |random| {
        let url = format!("{base2}/tasks/{}", ids[(random % ids.len() as u64) as usize]);
        let client = client2.clone();
        async move { get_text(&client, &url).await.map(|_| ()) }
    })
    .await;
    let cpu = CpuSnapshot::take_on(fleet, Some(database)).since(&cpu_before, load.ok as u64, "bench_clients");
    fleet.check()?;
    ensure!(
        load.ok > 0,
        "no GET succeeded: {}",
        load.first_error.as_deref().unwrap_or("?")
    );
    eprintln!("get_task: {:.0}/s ({} errors)", load.rate(), load.errors);

    let script = format!(
        "\\set n random(1, {})\nSELECT * FROM tasks WHERE id = md5('aiopslab-bench-' || :n)::uuid;\n",
        settings.stored
    );
    let cpu_before = CpuSnapshot::take(fleet);
    let mut baseline = pgbench(settings, libpq_url, "select", &script, &scratch.logs).await?;
    let selected = baseline["transactions"].as_u64().unwrap_or(0);
    baseline["cpu"] = CpuSnapshot::take(fleet).since(&cpu_before, selected, "pgbench_and_this_program");
    let db_rate = baseline["per_sec"].as_f64().unwrap_or(0.0);
    let r = load.rate() / db_rate.max(1e-9);
    Ok(json!({
        "what": format!("GET /tasks/{{id}} of ids drawn from the {} stored tasks", settings.stored),
        "http": load.report(),
        "cpu": cpu,
        "pgbench_select": baseline,
        "ratio_to_pgbench": ratio(load.rate(), db_rate),
        "target_ratio_min": GET_TARGET_RATIO,
        "met": r >= GET_TARGET_RATIO,
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Lists

async fn list(
    settings: &Settings,
    client: &reqwest::Client,
    base: &str,
    fleet: &mut Fleet,
    database: &str,
) -> anyhow::Result<Value> {
    let popular = PROBLEMS[0];
    let queries = [
        (
            "tasks_limit_10",
            "/tasks?limit=10".to_string(),
            LIST_TARGET_P99_MS,
            settings.list_samples,
        ),
        (
            "tasks_pending_limit_10",
            "/tasks?status=pending&limit=10".to_string(),
            LIST_TARGET_P99_MS,
            settings.list_samples,
        ),
        (
            "tasks_pending_by_priority_limit_10",
            "/tasks?status=pending&sort=-priority&limit=10".to_string(),
            LIST_TARGET_P99_MS,
            settings.list_samples,
        ),
        (
            "tasks_problem_limit_10",
            format!("/tasks?problem_id={popular}&limit=10"),
            LIST_TARGET_P99_MS,
            settings.list_samples,
        ),
        (
            "stats",
            "/stats".to_string(),
            STATS_TARGET_P99_MS,
            settings.stats_samples,
        ),
        (
            "metrics",
            "/metrics".to_string(),
            STATS_TARGET_P99_MS,
            settings.stats_samples,
        ),
    ];
    let mut report = serde_json::Map::new();
    for (name, path, target, samples) in queries {
        let url = format!("{base}{path}");
        // A few unmeasured requests first (connections, the server's and PostgreSQL's caches).
        for _ in 0..3 {
            get_text(client, &url).await?;
        }
        let cpu_before = CpuSnapshot::take_on(fleet, Some(database));
        let mut latencies = Vec::with_capacity(samples);
        let mut last = String::new();
        for _ in 0..samples {
            let sent = Instant::now();
            last = get_text(client, &url).await?;
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let cpu = CpuSnapshot::take_on(fleet, Some(database)).since(&cpu_before, samples as u64, "bench_clients");
        latencies.sort_by(f64::total_cmp);
        let p99 = percentile(&latencies, 0.99);
        eprintln!("{name}: p50 {:.1} ms, p99 {p99:.1} ms", percentile(&latencies, 0.5));
        let mut figures = json!({
            "request": format!("GET {path}"),
            "samples": samples,
            "latency_ms": latency_summary(&latencies),
            "response_bytes": last.len(),
            "target_p99_ms_max": target,
            "met": p99 < target,
            "cpu_ms_per_request": cpu["ms_per_task"],
        });
        if path.starts_with("/tasks") {
            let page: Value = serde_json::from_str(&last).context("a task page is JSON")?;
            figures["total"] = page["total"].clone();
            figures["tasks_on_page"] = json!(page["tasks"].as_array().map_or(0, Vec::len));
            if let Some(estimate) = page.get("total_is_estimate") {
                figures["total_is_estimate"] = estimate.clone();
            }
        }
        report.insert(name.into(), figures);
    }
    fleet.check()?;
    Ok(json!({
        "what": format!(
            "one client, requests one after the other, on {} stored tasks ({} pending); problem_id is the popular \
             problem (60 % of the rows)",
            settings.stored, settings.drain_tasks
        ),
        "queries": report,
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Drains

/// `pg_stat_database.xact_commit` of `database`.
async fn commits(db: &mut PgConnection, database: &str) -> anyhow::Result<i64> {
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *db).await?;
    Ok(
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut *db)
            .await?,
    )
}

async fn pending_and_running(db: &mut PgConnection) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        // Two counts, each on its partial index: `status IN ('pending', 'running')` would scan the whole table
        // (in parallel), a load on the drain it watches.
        "SELECT (SELECT count(*) FROM tasks WHERE status = 'pending'), \
                (SELECT count(*) FROM tasks WHERE status = 'running')",
    )
    .fetch_one(&mut *db)
    .await?)
}

/// One worker process on `store` drains the pending tasks (the seeded ones, or as many inserted now when none is
/// left); tasks/s from the first claim to the last finish, by the table's clock.
async fn drain(
    settings: &Settings,
    section: &str,
    store: (&str, &str),
    fleet: &mut Fleet,
    db: &mut PgConnection,
    database: &str,
) -> anyhow::Result<Value> {
    let (pending, running) = pending_and_running(db).await?;
    ensure!(running == 0, "{section}: {running} tasks are running before the drain");
    let inserted_now = pending == 0;
    if inserted_now {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
            .fetch_one(&mut *db)
            .await?;
        let from = stored as u64 + 1;
        let to = stored as u64 + settings.drain_tasks;
        db.execute(seed_sql(from, to, settings.stored, from).as_str()).await?;
        db.execute("ANALYZE tasks").await?;
    }
    let (pending, _) = pending_and_running(db).await?;
    let t0: String = sqlx::query_scalar("SELECT now()::text").fetch_one(&mut *db).await?;
    let slots = settings.slots.to_string();
    let id = format!("bench-scale-{section}");
    let mut extra = vec!["--max-parallel", slots.as_str()];
    if store.0 == "--database-url" {
        extra.extend(["--dispatch-delay-ms", "0"]);
    }
    let args = simulated_worker_args(&id, store, 1, 0, &extra);
    eprintln!(
        "{section}: one worker ({} {}) draining {pending} tasks",
        store.0, settings.slots
    );
    let commits_before = commits(db, database).await?;
    let cpu_before = CpuSnapshot::take_on(fleet, Some(database));
    let spawned = Instant::now();
    fleet.spawn_worker(&id, &args)?;
    let mut last_report = Instant::now();
    loop {
        fleet.check()?;
        let (pending, running) = pending_and_running(db).await?;
        if pending == 0 && running == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {:5.1} s: pending {pending}, running {running}",
                spawned.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        ensure!(
            spawned.elapsed() < settings.drain_timeout,
            "{section}: not drained within {:?} (pending {pending}, running {running})",
            settings.drain_timeout
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = spawned.elapsed().as_secs_f64();
    let row = sqlx::query(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed'), \
           extract(epoch FROM max(completed_at) - min(started_at))::float8, \
           max(attempt), \
           extract(epoch FROM min(started_at) - $1::timestamptz)::float8 \
         FROM tasks WHERE started_at >= $1::timestamptz",
    )
    .bind(&t0)
    .fetch_one(&mut *db)
    .await?;
    let (drained, completed): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let span: Option<f64> = row.try_get(2)?;
    let max_attempt: Option<i32> = row.try_get(3)?;
    let to_first_claim: Option<f64> = row.try_get(4)?;
    let cpu = CpuSnapshot::take_on(fleet, Some(database)).since(&cpu_before, drained as u64, "this_program");
    fleet.stop_workers(Duration::from_secs(30)).await;
    // PostgreSQL publishes a backend's counters within a second or so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let commits = commits(db, database).await? - commits_before;
    let rate = span.map(|s| drained as f64 / s.max(1e-9));
    eprintln!(
        "{section}: {drained} tasks in {:.2} s: {:.0} tasks/s",
        span.unwrap_or(0.0),
        rate.unwrap_or(0.0)
    );
    Ok(json!({
        "what": format!(
            "one worker process ({} …, --max-parallel {}, --cluster simulated, 1 step of 0 ms) drains {pending} \
             pending tasks{}",
            store.0,
            settings.slots,
            if inserted_now { " inserted by SQL at once just before" } else { " (the seeded ones)" }
        ),
        "tasks": drained,
        "completed": completed,
        "max_attempt": max_attempt,
        "seconds_first_claim_to_last_finish": span.map(|s| round(s, 3)),
        "tasks_per_sec": rate.map(|r| round(r, 1)),
        "seconds_spawn_to_first_claim": to_first_claim.map(|s| round(s, 3)),
        "seconds_spawn_to_drained_wall": round(wall, 2),
        "database_commits_per_task": round(commits as f64 / drained.max(1) as f64, 2),
        "database_commits_note": "xact_commit of the scratch database from spawn to a second after the worker stopped, \
                                  this program's polling (every 250 ms) included",
        "cpu": cpu,
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// PgQueuer

/// The venv's Python, with the pinned pgqueuer and asyncpg (made and installed from PyPI when they are missing).
async fn pgqueuer_python(settings: &Settings) -> anyhow::Result<PathBuf> {
    let python = settings.venv.join("bin/python");
    let wanted = format!("{PGQUEUER_VERSION} {ASYNCPG_VERSION}");
    let probe = "import pgqueuer, asyncpg; print(pgqueuer.__version__, asyncpg.__version__)";
    let installed = async {
        let out = tokio::process::Command::new(&python)
            .args(["-c", probe])
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if installed.await.as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("pgqueuer: creating the venv {}", settings.venv.display());
        run_setup(
            &settings.python,
            &["-m".into(), "venv".into(), settings.venv.display().to_string()],
        )
        .await?;
    }
    eprintln!("pgqueuer: pip install pgqueuer=={PGQUEUER_VERSION} asyncpg=={ASYNCPG_VERSION}");
    let pip = settings.venv.join("bin/pip").display().to_string();
    run_setup(
        &pip,
        &[
            "install".into(),
            "--quiet".into(),
            format!("pgqueuer=={PGQUEUER_VERSION}"),
            format!("asyncpg=={ASYNCPG_VERSION}"),
        ],
    )
    .await?;
    Ok(python)
}

async fn run_setup(program: &str, args: &[String]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(status.success(), "{program} {} failed ({status})", args.join(" "));
    Ok(())
}

async fn pgqueuer_drain(settings: &Settings, url: &str) -> anyhow::Result<Value> {
    let python = pgqueuer_python(settings).await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pgqueuer_drain.py");
    eprintln!("pgqueuer: draining {} jobs", settings.drain_tasks);
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .args(["--dsn", url])
        .args(["--jobs", &settings.drain_tasks.to_string()])
        .args(["--batch-size", &settings.pgq_batch.to_string()])
        .args(["--max-concurrent", &settings.pgq_max_concurrent.to_string()]);
    let mut figures = json_of(command, &script.display().to_string()).await?;
    eprintln!("pgqueuer: {} jobs/s", figures["jobs_per_sec"]);
    figures["what"] = json!(
        "PgQueuer (PyPI, its schema in the scratch database), one QueueManager in one Python process, a no-op async \
         entrypoint, mode=drain; first 'picked' to last 'successful' in pgqueuer_log"
    );
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------------------------
// Push

async fn push(bench_push: &Path) -> anyhow::Result<Value> {
    let mut command = tokio::process::Command::new(bench_push);
    for (ours, theirs) in [
        ("BENCH_PUSH_SAMPLES", "BENCH_SAMPLES"),
        ("BENCH_PUSH_CANCEL_SAMPLES", "BENCH_CANCEL_SAMPLES"),
        ("BENCH_PUSH_BASELINE_SAMPLES", "BENCH_BASELINE_SAMPLES"),
    ] {
        if let Ok(value) = std::env::var(ours) {
            command.env(theirs, value);
        }
    }
    eprintln!("push: running {}", bench_push.display());
    json_of(command, "bench_push").await
}

/// Runs a child that prints one JSON document on its standard output (its progress on ours) and reads it.
async fn json_of(mut command: tokio::process::Command, name: &str) -> anyhow::Result<Value> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {name}"))?
        .wait_with_output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "{name} failed ({}): {stdout}", output.status);
    serde_json::from_str(stdout.trim()).with_context(|| format!("{name} did not print JSON: {stdout}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Targets

/// One row per figure: what was measured, beside what, the target and whether it was met (`null`: no target, or
/// the section skipped or failed).
fn targets(
    post: &Value,
    get: &Value,
    list: &Value,
    drains: &serde_json::Map<String, Value>,
    pgqueuer: &Value,
    push: &Value,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let state = |section: &Value| {
        if section.get("skipped").is_some() {
            Some("skipped")
        } else if section.get("error").is_some() {
            Some("error")
        } else {
            None
        }
    };
    let mut row = |figure: &str, section: &Value, body: &dyn Fn() -> Value| {
        rows.push(match state(section) {
            Some(s) => json!({"figure": figure, s: true}),
            None => {
                let mut value = body();
                value["figure"] = json!(figure);
                value
            }
        });
    };
    row(
        "POST /tasks at 64 clients, creates/s (÷ pgbench single-row INSERT/s)",
        post,
        &|| {
            json!({
                "measured": post["http"]["per_sec"],
                "p99_ms": post["http"]["latency_ms"]["p99"],
                "baseline": post["pgbench_insert"]["per_sec"],
                "ratio": post["ratio_to_pgbench"],
                "target": "— (none set)",
                "met": Value::Null,
            })
        },
    );
    row(
        "GET /tasks/{id} at 64 clients, reads/s (÷ pgbench primary-key SELECT/s)",
        get,
        &|| {
            json!({
                "measured": get["http"]["per_sec"],
                "p99_ms": get["http"]["latency_ms"]["p99"],
                "baseline": get["pgbench_select"]["per_sec"],
                "ratio": get["ratio_to_pgbench"],
                "target": "ratio ≥ 0.8",
                "met": get["met"],
            })
        },
    );
    let names = [
        ("tasks_limit_10", "GET /tasks?limit=10"),
        ("tasks_pending_limit_10", "GET /tasks?status=pending&limit=10"),
        (
            "tasks_pending_by_priority_limit_10",
            "GET /tasks?status=pending&sort=-priority&limit=10",
        ),
        ("tasks_problem_limit_10", "GET /tasks?problem_id=(popular)&limit=10"),
        ("stats", "GET /stats"),
        ("metrics", "GET /metrics"),
    ];
    for (key, label) in names {
        let q = &list["queries"][key];
        row(&format!("{label}, p50 / p99 ms"), list, &|| {
            json!({
                "measured": q["latency_ms"]["p50"],
                "p99_ms": q["latency_ms"]["p99"],
                "target": format!("p99 < {} ms", q["target_p99_ms_max"].as_f64().unwrap_or(f64::NAN)),
                "met": q["met"],
            })
        });
    }
    for (key, label) in [
        (
            "drain_database",
            "drain by one worker on the database (--database-url), tasks/s (÷ PgQueuer jobs/s)",
        ),
        (
            "drain_http",
            "drain by one worker over HTTP (--server), tasks/s (÷ PgQueuer jobs/s)",
        ),
    ] {
        let d = &drains[key];
        row(label, d, &|| {
            json!({
                "measured": d["tasks_per_sec"],
                "baseline": pgqueuer["jobs_per_sec"],
                "ratio": d["ratio_to_pgqueuer"],
                "target": "ratio ≥ 1",
                "met": d["met"],
            })
        });
    }
    let case = |name: &str, key: &str, q: &str| push["cases"][name]["push"][key][q].clone();
    row(
        "push: create → claim, idle worker, over HTTP on the embedded store / PostgreSQL, p50 / p99 ms",
        push,
        &|| {
            let p99s = [
                case("memory_http", "claim_ms", "p99"),
                case("postgres_http", "claim_ms", "p99"),
            ];
            json!({
                "measured": format!(
                    "{} / {}, {} / {}",
                    case("memory_http", "claim_ms", "p50"), p99s[0], case("postgres_http", "claim_ms", "p50"), p99s[1]
                ),
                "target": "p99 < 50 ms over HTTP",
                "met": p99s.iter().all(|p| p.as_f64().is_some_and(|p| p < 50.0)),
            })
        },
    );
    row(
        "push: cancel → stopped, over HTTP on the embedded store / PostgreSQL, p50 / p99 ms",
        push,
        &|| {
            let cases = [
                "memory_http",
                "memory_in_process",
                "postgres_http",
                "postgres_in_process",
            ];
            json!({
                "measured": format!(
                    "{} / {}, {} / {}",
                    case("memory_http", "cancel_ms", "p50"), case("memory_http", "cancel_ms", "p99"),
                    case("postgres_http", "cancel_ms", "p50"), case("postgres_http", "cancel_ms", "p99")
                ),
                "target": "p99 < 1000 ms (all four cases)",
                "met": cases.iter().all(|c| case(c, "cancel_ms", "p99").as_f64().is_some_and(|p| p < 1000.0)),
            })
        },
    );
    rows
}
