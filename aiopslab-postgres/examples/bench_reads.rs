//! Benchmark of the store's reads at scale: `list_tasks` and `stats` over a table of 1,000,000 tasks.
//!
//! ```text
//! cargo run --release -p aiopslab-postgres --example bench_reads
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and works in a database of
//! its own, `aiopslab_bench_reads` (`BENCH_READS_DATABASE` names another), which it keeps: the first run migrates
//! it and seeds `BENCH_READS_TASKS` tasks (default 1,000,000) with one `INSERT ... SELECT generate_series`, then
//! `VACUUM ANALYZE`s; later runs reuse the rows (after migrating, so a run on a newer schema measures the newer
//! schema on the same data). `BENCH_READS_RESEED=1` drops and seeds it again.
//!
//! The seed: 10,000 pending tasks (10 % of them on backend type `gpu`), 100 running, the rest completed (80 %) and
//! failed (20 %); 20 problem ids, one of them (`misconfig_app_hotel_res-detection-1`) on half of the tasks;
//! priorities 0–10; one creation per second of the past, the pending ones the oldest.
//!
//! Each read runs `BENCH_READS_SAMPLES` times (default 200) after 20 warm-up runs, one at a time through a
//! `PgStore`, and the program prints one JSON document with each read's p50, p99 and max in milliseconds and what
//! it answered (`total`, `total_is_estimate`).

use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{LeasePolicy, Page, TaskFilter, TaskSort, TaskStatus};
use aiopslab_postgres::{PgStore, PgStoreOptions};
use anyhow::Context;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The problem id of half the seeded tasks.
const POPULAR: &str = "misconfig_app_hotel_res-detection-1";
const WARMUP: usize = 20;

/// The seed, one statement; `$1` how many tasks. Task `i` (1-based) is pending for `i <= 10,000`, running for the
/// next 100, then completed or failed; created `n - i` seconds ago, so the pending ones are the oldest (a
/// backlog under the history, the hard case for a listing by status in creation order).
const SEED: &str = "INSERT INTO tasks (problem_id, status, priority, backend_type, worker_id, attempt, created_at, \
        updated_at, started_at, completed_at, lease_expires_at, result, error_details) \
     SELECT CASE WHEN i % 2 = 0 THEN 'misconfig_app_hotel_res-detection-1' \
                 ELSE 'custom_problem-' || (i % 19) END, \
            s.status, (i % 11)::int2, CASE WHEN i % 10 = 0 THEN 'gpu' ELSE 'default' END, \
            CASE WHEN s.status = 'pending' THEN NULL ELSE 'worker-' || (i % 16) END, \
            CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END, \
            s.created, s.created, \
            CASE WHEN s.status = 'pending' THEN NULL ELSE s.created + interval '1 second' END, \
            CASE WHEN s.status IN ('pending', 'running') THEN NULL ELSE s.created + interval '5 seconds' END, \
            CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END, \
            CASE WHEN s.status = 'completed' THEN '{\"output\": {\"solution\": \"Yes\"}}'::jsonb END, \
            CASE WHEN s.status = 'failed' THEN '{\"code\": \"agent_error\", \"message\": \"x\"}'::jsonb END \
     FROM generate_series(1, $1::int) AS i, \
     LATERAL (SELECT CASE WHEN i <= 10000 THEN 'pending' WHEN i <= 10100 THEN 'running' \
                          WHEN i % 5 = 0 THEN 'failed' ELSE 'completed' END AS status, \
                     now() - ($1::int - i) * interval '1 second' AS created) AS s";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
    let name = std::env::var("BENCH_READS_DATABASE").unwrap_or_else(|_| "aiopslab_bench_reads".into());
    let tasks: i32 = env_number("BENCH_READS_TASKS", 1_000_000)?;
    let samples: usize = env_number("BENCH_READS_SAMPLES", 200)?;
    let mut conn = admin.connect().await.context("cannot connect to DATABASE_URL")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    let reseed = std::env::var_os("BENCH_READS_RESEED").is_some();
    if exists && reseed {
        conn.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await?;
    }
    if !exists || reseed {
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    }
    conn.close().await?;

    let options = admin.database(&name);
    let store = PgStore::from_options(options.clone(), LeasePolicy::default(), &PgStoreOptions::default())?;
    let migrate_started = Instant::now();
    store.migrate().await?;
    let migrate_s = migrate_started.elapsed().as_secs_f64();

    let mut db = options.connect().await?;
    let seeded: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut db)
        .await?;
    let mut seed_s = None;
    if seeded == 0 {
        let started = Instant::now();
        db.execute("SET statement_timeout = 0").await?;
        sqlx::query(SEED).bind(tasks).execute(&mut db).await?;
        db.execute("VACUUM ANALYZE tasks").await?;
        seed_s = Some(started.elapsed().as_secs_f64());
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut db)
        .await?;

    let page = Page::new(Some(10), None).map_err(anyhow::Error::msg)?;
    let reads: Vec<(&str, TaskQuery)> = vec![
        ("unfiltered", TaskQuery::new(TaskFilter::default()).page(page)),
        (
            "status_pending",
            TaskQuery::new(TaskFilter::default().with_status(Some(TaskStatus::Pending))).page(page),
        ),
        (
            "status_pending_sort_priority_desc",
            TaskQuery::new(TaskFilter::default().with_status(Some(TaskStatus::Pending)))
                .sorted(TaskSort::PriorityDesc)
                .page(page),
        ),
        (
            "status_completed",
            TaskQuery::new(TaskFilter::default().with_status(Some(TaskStatus::Completed))).page(page),
        ),
        (
            "problem_id_popular",
            TaskQuery::new(TaskFilter::default().with_problem_id(Some(POPULAR.into()))).page(page),
        ),
        (
            "problem_id_rare",
            TaskQuery::new(TaskFilter::default().with_problem_id(Some("custom_problem-7".into()))).page(page),
        ),
    ];
    let mut report = serde_json::Map::new();
    for (name, query) in &reads {
        let (timings, answer) = measure(samples, || async {
            let page = store.list_tasks(query).await?;
            Ok(json!({
                "total": page.total,
                "total_is_estimate": page.total_is_estimate,
                "first_page": page.tasks.len(),
            }))
        })
        .await?;
        report.insert(format!("list_{name}"), json!({ "ms": timings, "answer": answer }));
    }
    let (timings, stats_answer) = measure(samples, || async {
        let stats = store.stats().await?;
        Ok(json!(stats.tasks_by_status))
    })
    .await?;
    report.insert("stats".into(), json!({ "ms": timings, "answer": stats_answer }));
    store.close().await;

    let document = json!({
        "database": name,
        "tasks": rows,
        "seed_s": seed_s,
        "migrate_s": migrate_s,
        "samples": samples,
        "reads": report,
    });
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

/// Runs `read` `WARMUP` times, then `samples` times timed: p50, p99 and max in ms, and the last answer.
async fn measure<F, Fut>(samples: usize, mut read: F) -> anyhow::Result<(serde_json::Value, serde_json::Value)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<serde_json::Value>>,
{
    let mut answer = serde_json::Value::Null;
    for _ in 0..WARMUP {
        answer = read().await?;
    }
    let mut took: Vec<Duration> = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        answer = read().await?;
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
        (took[i].as_secs_f64() * 1e6).round() / 1e3
    };
    Ok((json!({ "p50": at(0.50), "p99": at(0.99), "max": at(1.0) }), answer))
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} is not a number: {value}")),
        Err(_) => Ok(default),
    }
}
