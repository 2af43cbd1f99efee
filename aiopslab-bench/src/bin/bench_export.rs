//! Benchmark of the RL dataset export (issue 6): episodes per second streamed
//! by `GET /trajectories/export` from PostgreSQL, and the server's memory
//! while it streams them.
//!
//! ```text
//! cargo build --release -p aiopslab-cli -p aiopslab-bench
//! target/release/bench_export            # 100 000 episodes of 30 steps
//! target/release/bench_export --episodes 20000 --steps 10
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), creates a scratch
//! database (dropped at the end), and:
//!
//! 1. runs a few episodes with the simulated backend (in memory, no delay) to get realistic trajectories of
//!    `--steps` steps — every message, and every LLM call with its full request, as AIOpsLab's driver records them;
//! 2. stores those episodes in PostgreSQL through `PgStore` (batch create, claim, save trajectory, finish), then
//!    clones them with SQL up to `--episodes` rows (fresh ids, increasing creation times), copying whatever
//!    columns the schema has;
//! 3. starts the real server binary (`--server`, default: `server` beside this program) as a child process on
//!    that database, and streams the whole export over HTTP, counting lines and validating one line in 1000
//!    (JSON, OpenAI roles, reward, problem id, task type, agent config, metadata);
//! 4. samples the child's resident memory (`VmRSS` in `/proc/<pid>/status`) every 20 ms before and during the
//!    export.
//!
//! Prints one JSON document: `episodes`, `seconds`, `episodes_per_sec`, `mib_per_sec`, `avg_episode_bytes`,
//! `server_rss_before_mib`, `server_peak_rss_mib`, `growth_mib` (peak during the export minus before), plus the
//! seeding time. Targets: at least 5 000 episodes/s and under 50 MiB of growth.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::batch::BatchSpec;
use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    catalog, ClaimRequest, DefaultScheduler, LeasePolicy, MemoryStore, NewTask, Scheduler, SimulatedBackend,
    SimulatedConfig, Task, TaskId, TaskOutcome, TaskStatus, TerminalStatus, Trajectory, WorkerRegistration,
};
use aiopslab_postgres::PgStore;
use anyhow::{bail, ensure, Context};
use clap::Parser;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio_util::sync::CancellationToken;

/// Export benchmark: episodes/s and server memory while streaming the dataset.
#[derive(Debug, Parser)]
#[command(about, long_about = None)]
struct Args {
    /// Episodes to store and export.
    #[arg(long, default_value_t = 100_000)]
    episodes: u64,

    /// Agent steps per episode.
    #[arg(long, default_value_t = 30)]
    steps: u32,

    /// Distinct simulated episodes to clone from.
    #[arg(long, default_value_t = 16)]
    templates: usize,

    /// The `aiopslab` program whose `serve` is measured (default: `aiopslab` in this program's directory).
    #[arg(long)]
    aiopslab: Option<PathBuf>,

    /// Port for the server.
    #[arg(long, default_value_t = 18_431)]
    port: u16,

    /// Keep the scratch database (its name is printed).
    #[arg(long)]
    keep_database: bool,

    /// Use (and keep) this database instead of a scratch one; when it already holds the episodes, seeding is
    /// skipped (for measuring again without seeding again).
    #[arg(long)]
    database: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.episodes >= 1 && args.steps >= 1 && args.templates >= 1,
        "counts must be at least 1"
    );
    let server = match &args.aiopslab {
        Some(path) => path.clone(),
        None => bench_support::beside_this_program("aiopslab")?,
    };
    ensure!(
        server.exists(),
        "{} not found: cargo build --release -p aiopslab-cli",
        server.display()
    );
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut conn = admin.connect().await.context("cannot connect to DATABASE_URL")?;
    let name = match &args.database {
        Some(name) => {
            ensure!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "--database takes a plain name (letters, digits, _)"
            );
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
            if !exists {
                conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
            }
            name.clone()
        }
        None => {
            let name = format!("aiopslab_bench_export_{}", std::process::id());
            conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await?;
            conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
            name
        }
    };
    let options = admin.clone().database(&name);
    let result = run(&args, &server, options).await;
    if args.keep_database || args.database.is_some() {
        eprintln!("kept database {name}");
    } else {
        conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
    }
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run(args: &Args, server: &std::path::Path, options: PgConnectOptions) -> anyhow::Result<Value> {
    let db_url = options.to_url_lossy().to_string();
    let store = PgStore::connect(&db_url, LeasePolicy::default()).await?;
    store.migrate().await?;

    let stored: i64 = {
        let mut conn = options.connect().await?;
        sqlx::query_scalar("SELECT count(*) FROM trajectories")
            .fetch_one(&mut conn)
            .await?
    };
    let seed_seconds = if stored as u64 == args.episodes {
        eprintln!("the database already holds {stored} episodes: not seeding");
        0.0
    } else {
        ensure!(
            stored == 0,
            "the database holds {stored} episodes, not {}: use another",
            args.episodes
        );
        seed(args, &store, &options).await?
    };

    let mut child = ServerProcess::start(server, args.port, &db_url)?;
    let measured = measure(&mut child, args.port, args.episodes).await;
    child.stop();
    let measured = measured?;
    Ok(json!({
        "episodes": measured.lines,
        "steps_per_episode": args.steps,
        "seconds": round(measured.seconds, 3),
        "episodes_per_sec": round(measured.lines as f64 / measured.seconds, 0),
        "mib_per_sec": round(measured.bytes as f64 / measured.seconds / MIB, 1),
        "avg_episode_bytes": measured.bytes / measured.lines.max(1),
        "validated_lines": measured.validated,
        "server_rss_before_mib": round(measured.rss_before as f64 / MIB, 1),
        "server_peak_rss_mib": round(measured.rss_peak as f64 / MIB, 1),
        "growth_mib": round(measured.rss_peak.saturating_sub(measured.rss_before) as f64 / MIB, 1),
        "seed_seconds": round(seed_seconds, 1),
        "targets": {"episodes_per_sec": 5000, "growth_mib": 50},
    }))
}

/// Stores `args.episodes` episodes; returns how long it took.
async fn seed(args: &Args, store: &PgStore, options: &PgConnectOptions) -> anyhow::Result<f64> {
    let started = Instant::now();
    let templates = simulate(args.templates, args.steps).await?;
    let template_bytes: usize = templates
        .iter()
        .map(|(_, t)| serde_json::to_vec(t).map_or(0, |v| v.len()))
        .sum::<usize>()
        / templates.len();
    eprintln!(
        "simulated {} episodes of {} steps (trajectory JSON ~{} KiB each)",
        templates.len(),
        args.steps,
        template_bytes / 1024
    );
    let seeded = seed_templates(store, &templates).await?;
    clone_episodes(options, args.episodes.saturating_sub(seeded)).await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("stored {} episodes in {seconds:.1} s", args.episodes);
    Ok(seconds)
}

const MIB: f64 = 1024.0 * 1024.0;

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// A task request as an RL client would send it, allowing `steps` agent steps.
fn new_task(problem: &str, i: usize, steps: u32) -> NewTask {
    let models = ["gpt-4o-mini", "llama-3.1-70b-instruct", "qwen2.5-72b-instruct"];
    let agent_config = json!({
        "model": models[i % models.len()],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 1024,
        "api_key_env": "OPENAI_API_KEY",
    });
    let metadata = json!({"experiment": "grpo-bench", "policy_version": i % 4, "seed": i});
    NewTask {
        agent_config: agent_config.as_object().cloned(),
        metadata: metadata.as_object().cloned(),
        max_steps: Some(steps.into()),
        ..NewTask::new(problem)
    }
}

/// Runs `count` episodes of `steps` steps with the simulated backend, in memory.
async fn simulate(count: usize, steps: u32) -> anyhow::Result<Vec<(Task, Trajectory)>> {
    let store = Arc::new(MemoryStore::new());
    let problems: Vec<&str> = catalog::PROBLEMS.iter().map(|p| p.id).collect();
    let stride = (problems.len() / count.min(problems.len())).max(1);
    let mut ids = Vec::new();
    for i in 0..count {
        let problem = problems[(i * stride) % problems.len()];
        let spec = new_task(problem, i, steps).validate()?;
        ids.push(store.create_task(spec).await?.id);
    }
    let scheduler: Arc<dyn Scheduler> = Arc::new(DefaultScheduler::new(store.clone()));
    let backend = Arc::new(SimulatedBackend::new(SimulatedConfig::instant(steps)));
    let config = WorkerConfig::new("bench-simulator", "default").with_max_parallel_tasks(4);
    let runtime = WorkerRuntime::new(store.clone(), scheduler, backend, config);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(runtime.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    for id in ids {
        loop {
            let task = store.get_task(id).await?;
            if task.status.is_terminal() {
                let trajectory = store
                    .get_trajectory(id)
                    .await?
                    .context("a simulated episode has a trajectory")?;
                ensure!(
                    task.status == TaskStatus::Completed,
                    "simulated episode ended {}",
                    task.status
                );
                out.push((task, trajectory));
                break;
            }
            if Instant::now() > deadline {
                bail!("the simulated episodes did not finish within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.cancel();
    worker.await??;
    Ok(out)
}

/// Stores the simulated episodes in PostgreSQL through the store API, as a
/// worker would. Returns how many.
async fn seed_templates(store: &PgStore, templates: &[(Task, Trajectory)]) -> anyhow::Result<u64> {
    let specs = templates
        .iter()
        .enumerate()
        .map(|(i, (task, _))| new_task(&task.problem_id, i, task.parameters.max_steps).validate())
        .collect::<Result<Vec<_>, _>>()?;
    let created = store.create_batch(BatchSpec::ungrouped(specs), None).await?;
    let registration: WorkerRegistration = serde_json::from_value(json!({"id": "bench-seeder"}))?;
    store.register_worker(registration).await?;
    for (task, (done, trajectory)) in created.tasks.iter().zip(templates) {
        let claimed = store
            .claim(&ClaimRequest::new("bench-seeder", "default").for_task(Some(task.id)))
            .await?
            .context("the seeded task is claimable")?;
        let trajectory = Trajectory {
            task_id: task.id,
            ..trajectory.clone()
        };
        store.save_trajectory(claimed.lease_token(), trajectory).await?;
        let outcome = TaskOutcome {
            status: TerminalStatus::Completed,
            result: done.result.clone(),
            error: None,
        };
        store.finish(claimed.lease_token(), outcome).await?;
    }
    Ok(created.tasks.len() as u64)
}

/// Clones the stored episodes up to `count` more rows, with SQL: fresh ids,
/// creation times a microsecond apart, every other column copied (whatever
/// the schema holds), the trajectory's own `task_id` rewritten.
async fn clone_episodes(options: &PgConnectOptions, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut conn = options.connect().await?;
    let task_columns = columns(&mut conn, "tasks").await?;
    let trajectory_columns = columns(&mut conn, "trajectories").await?;
    ensure!(
        task_columns.iter().any(|c| c == "id") && trajectory_columns.iter().any(|c| c == "task_id"),
        "unexpected schema: tasks({task_columns:?}), trajectories({trajectory_columns:?})"
    );
    conn.execute(
        format!(
            "CREATE TEMP TABLE bench_map AS \
             SELECT g.n, gen_random_uuid() AS new_id, t.id AS template_id \
             FROM generate_series(0, {} - 1) AS g(n) \
             JOIN (SELECT id, (row_number() OVER (ORDER BY created_at, id) - 1) AS k FROM tasks) AS t \
               ON t.k = g.n % (SELECT count(*) FROM tasks)",
            count
        )
        .as_str(),
    )
    .await?;
    let shifted = "(now() - interval '1 day' + m.n * interval '1 microsecond')";
    let task_select: Vec<String> = task_columns
        .iter()
        .map(|c| match c.as_str() {
            "id" => "m.new_id".to_string(),
            "created_at" => shifted.to_string(),
            "group_id" => "NULL".to_string(),
            other => format!("t.{other}"),
        })
        .collect();
    let started = Instant::now();
    conn.execute(
        format!(
            "INSERT INTO tasks ({}) SELECT {} FROM bench_map m JOIN tasks t ON t.id = m.template_id",
            task_columns.join(", "),
            task_select.join(", ")
        )
        .as_str(),
    )
    .await
    .context("cloning tasks")?;
    let trajectory_select: Vec<String> = trajectory_columns
        .iter()
        .map(|c| match c.as_str() {
            "task_id" => "m.new_id".to_string(),
            "trajectory" => "jsonb_set(tr.trajectory, '{task_id}', to_jsonb(m.new_id::text))".to_string(),
            other => format!("tr.{other}"),
        })
        .collect();
    conn.execute(
        format!(
            "INSERT INTO trajectories ({}) SELECT {} FROM bench_map m JOIN trajectories tr ON tr.task_id = m.template_id",
            trajectory_columns.join(", "),
            trajectory_select.join(", ")
        )
        .as_str(),
    )
    .await
    .context("cloning trajectories")?;
    conn.execute("VACUUM ANALYZE tasks").await?;
    conn.execute("VACUUM ANALYZE trajectories").await?;
    eprintln!("cloned {count} episodes in {:.1} s", started.elapsed().as_secs_f64());
    conn.close().await?;
    Ok(())
}

/// The columns of `table`, in order.
async fn columns(conn: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// The server under test, killed on drop.
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn start(binary: &std::path::Path, port: u16, database_url: &str) -> anyhow::Result<Self> {
        let child = Command::new(binary)
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--workers",
                "0",
                "--sweep-interval-secs",
                "60",
            ])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident memory of a process, in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

struct Measured {
    lines: u64,
    bytes: u64,
    validated: u64,
    seconds: f64,
    rss_before: u64,
    rss_peak: u64,
}

async fn measure(server: &mut ServerProcess, port: u16, expected: u64) -> anyhow::Result<Measured> {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited at start: {status}");
        }
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the server did not become healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A small warm-up request (connection pool, first query plans), then settle.
    let warm = client
        .get(format!("{base}/tasks?limit=1"))
        .send()
        .await?
        .error_for_status()?;
    warm.bytes().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid();
    let rss_before = rss_bytes(pid).context("cannot read the server's /proc status")?;

    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let started = Instant::now();
    let mut response = client
        .get(format!("{base}/trajectories/export"))
        .send()
        .await?
        .error_for_status()?;
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut validated = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.context("the export stream broke")? {
        bytes += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let line: &[u8] = if partial.is_empty() {
                &rest[..end]
            } else {
                partial.extend_from_slice(&rest[..end]);
                &partial
            };
            if lines % 1000 == 0 {
                validate(line).with_context(|| format!("line {} is not a valid record", lines + 1))?;
                validated += 1;
            }
            lines += 1;
            partial.clear();
            rest = &rest[end + 1..];
        }
        partial.extend_from_slice(rest);
    }
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    ensure!(partial.is_empty(), "the export ended in the middle of a line");
    ensure!(lines == expected, "exported {lines} episodes, expected {expected}");
    Ok(Measured {
        lines,
        bytes,
        validated,
        seconds,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
    })
}

/// Checks one export line: JSON, OpenAI roles, and the fields RL training reads.
fn validate(line: &[u8]) -> anyhow::Result<()> {
    let record: Value = serde_json::from_slice(line)?;
    let task_id: TaskId = record["task_id"].as_str().context("task_id")?.parse()?;
    let problem = record["problem_id"].as_str().context("problem_id")?;
    let known = catalog::find(problem).context("problem_id is a catalog problem")?;
    ensure!(
        record["task_type"] == known.task_type.as_str(),
        "task_type of {task_id}"
    );
    ensure!(record["reward"].is_number(), "reward of {task_id}");
    ensure!(record["agent_config"]["model"].is_string(), "agent_config of {task_id}");
    ensure!(
        record["metadata"]["experiment"] == "grpo-bench",
        "metadata of {task_id}"
    );
    let messages = record["messages"].as_array().context("messages")?;
    ensure!(messages.len() > 2, "messages of {task_id}");
    ensure!(messages[0]["role"] == "system", "first message of {task_id}");
    for message in messages {
        let role = message["role"].as_str().context("role")?;
        ensure!(
            matches!(role, "system" | "user" | "assistant"),
            "role {role:?} in {task_id}"
        );
        ensure!(message["content"].is_string(), "content in {task_id}");
    }
    Ok(())
}
