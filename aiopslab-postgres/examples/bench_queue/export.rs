//! The `export` section of the benchmark: episodes per second read by `export_episodes` from a store of many
//! realistic 30-step episodes.
//!
//! Seeding: a few episodes are run with the simulated backend (every message, and every LLM call with its whole
//! request, as AIOpsLab's driver records them) and stored through the store API (create, claim, save trajectory,
//! finish); SQL then clones them up to the requested count (fresh ids, creation times a microsecond apart, every
//! other column copied, whatever the schema holds), which is how 100,000 episodes are stored in seconds rather
//! than minutes.
//!
//! Measuring: the whole export is walked in pages of 500 with the keyset cursor, twice per variant (the first walk
//! warms the caches): `store_only` decodes the pages into episodes; `with_json_lines` also turns every episode into
//! its `ExportRecord` line, as the HTTP export does.

use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    catalog, ClaimRequest, ClusterBackend, Episode, ExportCursor, ExportFilter, ExportRecord, LogSink, NewTask,
    RunContext, SimulatedBackend, SimulatedConfig, TaskOutcome, TerminalStatus,
};
use aiopslab_postgres::PgStore;
use anyhow::Context;
use serde_json::{json, Value};
use sqlx::{Executor, Row};
use tokio_util::sync::CancellationToken;

/// Episodes stored and exported by default.
pub const EPISODES: u64 = 100_000;
/// Agent steps per episode.
const STEPS: u32 = 30;
/// Distinct simulated episodes the others are cloned from.
const TEMPLATES: usize = 16;
/// Episodes per `export_episodes` call.
const PAGE: u32 = 500;
const MODELS: [&str; 2] = ["gpt-4o-mini", "llama-3.1-70b-instruct"];

/// Seeds `episodes` episodes and measures the export; returns the section's figures.
pub async fn run(store: &PgStore, admin: &mut sqlx::PgConnection, episodes: u64) -> anyhow::Result<Value> {
    let started = Instant::now();
    let templates = TEMPLATES.min(episodes as usize);
    seed_templates(store, templates).await?;
    clone_episodes(admin, episodes.saturating_sub(templates as u64)).await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    let sizes: (f64, f64, f64) = sqlx::query_as(
        "SELECT avg(octet_length(messages::text))::float8, avg(octet_length(llm_calls::text))::float8, \
         avg(json_array_length(messages))::float8 FROM trajectories",
    )
    .fetch_one(&mut *admin)
    .await
    .unwrap_or((0.0, 0.0, 0.0));
    let on_disk: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('trajectories')")
        .fetch_one(&mut *admin)
        .await?;
    eprintln!(
        "export: stored {episodes} episodes in {seed_seconds:.1} s (messages {:.1} KiB, llm_calls {:.1} KiB per \
         episode; trajectories table {:.0} MiB)",
        sizes.0 / 1024.0,
        sizes.1 / 1024.0,
        on_disk as f64 / (1024.0 * 1024.0)
    );

    let mut variants = serde_json::Map::new();
    for (name, encode) in [("store_only", false), ("with_json_lines", true)] {
        let mut walks = Vec::new();
        for _ in 0..2 {
            let walk = walk(store, encode).await?;
            anyhow::ensure!(
                walk.episodes == episodes,
                "the export walked {} episodes, {episodes} are stored",
                walk.episodes
            );
            let rate = walk.episodes as f64 / walk.elapsed.as_secs_f64();
            eprintln!(
                "export ({name}): {} episodes in {:.2} s = {rate:.0} episodes/s",
                walk.episodes,
                walk.elapsed.as_secs_f64()
            );
            walks.push((rate, walk));
        }
        let (rate, walk) = walks.pop().context("two walks")?;
        let (cold_rate, _) = walks.pop().context("two walks")?;
        let mut figures = json!({
            "episodes_per_sec": rate.round(),
            "first_walk_episodes_per_sec": cold_rate.round(),
            "seconds": (walk.elapsed.as_secs_f64() * 100.0).round() / 100.0,
        });
        if encode {
            figures["avg_line_bytes"] = json!((walk.bytes as f64 / walk.episodes as f64).round());
        }
        variants.insert(name.into(), figures);
    }
    Ok(json!({
        "episodes": episodes,
        "steps": STEPS,
        "page_size": PAGE,
        "avg_messages": (sizes.2 * 10.0).round() / 10.0,
        "avg_messages_kib": (sizes.0 / 102.4).round() / 10.0,
        "avg_llm_calls_kib": (sizes.1 / 102.4).round() / 10.0,
        "trajectories_table_mib": (on_disk as f64 / (1024.0 * 1024.0)).round(),
        "seed_seconds": (seed_seconds * 10.0).round() / 10.0,
        "store_only": variants.remove("store_only"),
        "with_json_lines": variants.remove("with_json_lines"),
    }))
}

/// What one walk of the whole export saw.
struct Walk {
    episodes: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Walks the whole export in pages of [`PAGE`]; with `encode`, writes every episode's JSON line to a buffer
/// reused across pages.
async fn walk(store: &PgStore, encode: bool) -> anyhow::Result<Walk> {
    let filter = ExportFilter::default();
    let mut cursor: Option<ExportCursor> = None;
    let (mut episodes, mut bytes) = (0u64, 0u64);
    let mut line = Vec::with_capacity(64 * 1024);
    let started = Instant::now();
    loop {
        let page: Vec<Episode> = store
            .export_episodes(&ExportRequest::new(filter.clone(), PAGE).after(cursor))
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor());
        episodes += page.len() as u64;
        if encode {
            for episode in &page {
                line.clear();
                serde_json::to_writer(&mut line, &ExportRecord::from_episode(episode))?;
                line.push(b'\n');
                bytes += line.len() as u64;
            }
        }
    }
    Ok(Walk {
        episodes,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Runs `count` simulated episodes and stores them through the store API.
async fn seed_templates(store: &PgStore, count: usize) -> anyhow::Result<()> {
    let backend = SimulatedBackend::new(SimulatedConfig::instant(STEPS));
    for i in 0..count {
        let problem = catalog::PROBLEMS[(i * 5) % catalog::PROBLEMS.len()].id;
        let new = NewTask {
            agent_config: serde_json::from_value(json!({
                "model": MODELS[i % MODELS.len()],
                "temperature": 0.7,
                "max_tokens": 1024,
                "api_key_env": "OPENAI_API_KEY",
            }))?,
            metadata: serde_json::from_value(json!({"experiment": "grpo-bench", "policy_version": i % 4}))?,
            ..NewTask::new(problem)
        };
        let task = store.create_task(new.validate()?).await?;
        super::live_worker(store, "export-seeder").await?;
        let request = ClaimRequest::new("export-seeder", task.parameters.backend_type.clone()).for_task(Some(task.id));
        let claimed = store.claim(&request).await?.context("the seeded task is claimable")?;
        // The run's log lines are not part of the export: nobody listens to them here.
        let (logs, _) = LogSink::channel(1);
        let context = RunContext {
            worker_id: "export-seeder".into(),
            lease: claimed.lease_token(),
            logs,
            cancel: CancellationToken::new(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(600),
        };
        let report = backend.run(&claimed, context).await;
        let trajectory = report.trajectory.context("a simulated episode has a trajectory")?;
        store.save_trajectory(claimed.lease_token(), trajectory).await?;
        store
            .finish(
                claimed.lease_token(),
                TaskOutcome {
                    status: TerminalStatus::Completed,
                    result: report.result,
                    error: None,
                },
            )
            .await?;
    }
    Ok(())
}

/// Clones the stored episodes with SQL up to `count` more: fresh ids, creation times a microsecond apart, every
/// other column copied (whatever the schema holds), the trajectory's own `task_id` rewritten.
async fn clone_episodes(admin: &mut sqlx::PgConnection, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    // Cloning 100,000 episodes takes longer than the store's statement timeout.
    admin.execute("SET statement_timeout = 0").await?;
    let mut columns = Vec::new();
    for table in ["tasks", "trajectories"] {
        let names: Vec<String> = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *admin)
        .await?
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
        columns.push(names);
    }
    let (task_columns, trajectory_columns) = (&columns[0], &columns[1]);
    admin
        .execute(
            format!(
                "CREATE TEMP TABLE bench_map AS \
                 SELECT g.n, gen_random_uuid() AS new_id, t.id AS template_id \
                 FROM generate_series(0, {count} - 1) AS g(n) \
                 JOIN (SELECT id, row_number() OVER (ORDER BY created_at, id) - 1 AS k FROM tasks) AS t \
                   ON t.k = g.n % (SELECT count(*) FROM tasks)"
            )
            .as_str(),
        )
        .await?;
    let created = "(now() - interval '1 day' + m.n * interval '1 microsecond')";
    let task_select: Vec<String> = task_columns
        .iter()
        .map(|c| match c.as_str() {
            "id" => "m.new_id".to_string(),
            "created_at" => created.to_string(),
            other => format!("t.{other}"),
        })
        .collect();
    let trajectory_select: Vec<String> = trajectory_columns
        .iter()
        .map(|c| match c.as_str() {
            "task_id" => "m.new_id".to_string(),
            "trajectory" => "jsonb_set(tr.trajectory, '{task_id}', to_jsonb(m.new_id::text))".to_string(),
            other => format!("tr.{other}"),
        })
        .collect();
    admin
        .execute(
            format!(
                "INSERT INTO tasks ({}) SELECT {} FROM bench_map m JOIN tasks t ON t.id = m.template_id",
                task_columns.join(", "),
                task_select.join(", ")
            )
            .as_str(),
        )
        .await
        .context("cloning tasks")?;
    admin
        .execute(
            format!(
                "INSERT INTO trajectories ({}) SELECT {} FROM bench_map m \
                 JOIN trajectories tr ON tr.task_id = m.template_id",
                trajectory_columns.join(", "),
                trajectory_select.join(", ")
            )
            .as_str(),
        )
        .await
        .context("cloning trajectories")?;
    admin.execute("DROP TABLE bench_map").await?;
    admin.execute("VACUUM ANALYZE tasks").await?;
    admin.execute("VACUUM ANALYZE trajectories").await?;
    Ok(())
}
