//! Benchmark of how fast the queue recovers from worker faults, with real processes and real sockets: a worker
//! killed with SIGKILL, a worker restarted under the same id at once, and a claim whose HTTP reply never reached
//! its worker.
//!
//! ```text
//! cargo build --release -p aiopslab-cli -p aiopslab-bench
//! target/release/bench_faults                      # 3 runs of each fault (about 2 minutes)
//! BENCH_REPEATS=1 target/release/bench_faults      # a quick run
//! ```
//!
//! Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), creates a scratch
//! database of its own (dropped at the end unless `BENCH_KEEP_DATABASE=1`), and starts, from this program's own
//! directory, `aiopslab serve` (`--database-url` on the scratch database, no in-process workers, `--lease-secs
//! 6`, `--dispatch-delay-ms 0`, a free port) and `aiopslab worker`s (`--server URL --cluster simulated --lease-secs
//! 6`, so they heartbeat every 2 s; simulated runs of `BENCH_SIM_STEPS` × `BENCH_SIM_STEP_MS`, 4 × 1000 ms, long
//! enough to be killed mid-run). Each fault runs `BENCH_REPEATS` times (3) with fresh worker ids; the task is
//! polled (`GET /tasks/{id}`, every 25 ms) and every change of its status, worker, attempt or error code is kept
//! in a timeline. Every child is stopped at the end, also on error or interrupt; their output goes to files in a
//! temporary directory (kept, and named, with `BENCH_KEEP_LOGS=1` or on error).
//!
//! Prints one JSON document (progress goes to stderr):
//!
//! - `kill9_requeue_completed_s`: a task (`max_retries: 1`) running on worker A, A killed with SIGKILL
//!   `BENCH_KILL_AFTER_MS` (1000) into the run, worker B idle beside it: seconds from the kill until the task is
//!   `completed` by B, each run and the median, minus the simulated run duration (the requeue delay: lease expiry,
//!   the server's sweep every 5 s, B's next claim), with the kill → requeued and kill → running-on-B split;
//! - `restart_first_claim_s`: worker A mid-run, SIGKILL, and a worker with the same id spawned at once: seconds from
//!   the spawn until it is registered (its log line "worker registered", and `GET /workers/{id}` showing a new
//!   `instance_id`) and until its first claim (the requeued task running under the id with attempt 2), and how the
//!   killed instance's task ended up;
//! - `phantom_task_s`: a worker (`--heartbeat-secs 2`) behind a TCP proxy of this program that drops (closes both
//!   sockets without forwarding) the first response carrying a task (`task":{"id"`: a claim reply, or a heartbeat
//!   reply's `next_task`): seconds from the drop until the task (`max_retries: 0`) runs for real (attempt 2, or
//!   `completed`), the `not_held` handback seen on the task, the worker's log line "the store handed back a task"
//!   and the final status and attempt. Two modes, `BENCH_REPEATS` runs each: `first_task_reply` (whatever reply
//!   carries the task first: for an idle worker, in practice its heartbeat's `next_task`) and `claim_reply` (the
//!   proxy holds the worker's next claim request until the task is created, a few milliseconds, so the claim
//!   takes it and the claim reply is the one lost);
//! - each with `previous_report` (the figure before worker instances and `running_task_ids`, labelled as such), the
//!   ratio of this run's median to it, and the target.
//!
//! Knobs (environment): `BENCH_REPEATS` (3), `BENCH_SIM_STEPS` (4), `BENCH_SIM_STEP_MS` (1000),
//! `BENCH_KILL_AFTER_MS` (1000).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use bench_support::{env_or, get_json, post_task, task_body, until_interrupted, Binaries, Fleet, Scratch};

/// The server's and the workers' lease; the workers heartbeat every third of it.
const LEASE_SECS: u64 = 6;
const HEARTBEAT_SECS: u64 = 2;
/// The server's default `--sweep-interval-secs` (not changed here): expired leases are found this often.
const SWEEP_INTERVAL_SECS: u64 = 5;
/// The operator's figures before worker instances and heartbeat task lists.
const PREVIOUS_KILL9_REQUEUE_S: (f64, f64) = (6.7, 7.0);
const PREVIOUS_RESTART_FIRST_CLAIM_S: f64 = 90.0;
const PREVIOUS_PHANTOM_S: f64 = 31.0 * 60.0;
const POLL: Duration = Duration::from_millis(25);
const WAIT: Duration = Duration::from_secs(120);
/// What the proxy looks for in the server's replies: a claim's `"task":{"id"` or a heartbeat's `"next_task":{"id"`.
const TASK_PATTERN: &[u8] = b"task\":{\"id\"";
const REGISTERED_LINE: &str = "worker registered";
const HANDBACK_LINE: &str = "the store handed back a task";
const SERVER_HANDBACK_LINE: &str = "heartbeat handed back tasks";

#[derive(Debug, Clone)]
struct Settings {
    repeats: usize,
    sim_steps: u32,
    sim_step_ms: u64,
    kill_after: Duration,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let settings = Self {
            repeats: env_or("BENCH_REPEATS", 3)?,
            sim_steps: env_or("BENCH_SIM_STEPS", 4)?,
            sim_step_ms: env_or("BENCH_SIM_STEP_MS", 1000)?,
            kill_after: Duration::from_millis(env_or("BENCH_KILL_AFTER_MS", 1000)?),
        };
        ensure!(
            settings.repeats >= 1 && settings.sim_steps >= 1,
            "BENCH_REPEATS and BENCH_SIM_STEPS must be at least 1"
        );
        ensure!(
            settings.kill_after < settings.sim_run(),
            "BENCH_KILL_AFTER_MS must be shorter than the simulated run (BENCH_SIM_STEPS × BENCH_SIM_STEP_MS)"
        );
        Ok(settings)
    }

    fn sim_run(&self) -> Duration {
        Duration::from_millis(self.sim_step_ms * u64::from(self.sim_steps))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let binaries = Binaries::beside_this_program()?;
    let scratch = Scratch::create("aiopslab_bench_faults").await?;
    // Every child lives in the `Fleet` inside `run`: returned, failed or dropped on a signal, they are stopped.
    let result = until_interrupted(run(&settings, binaries, &scratch)).await;
    scratch.finish(result).await
}

/// What every measurement needs: the server's address, an HTTP client and the processes.
struct Bench<'a> {
    settings: &'a Settings,
    base: String,
    server_port: u16,
    client: reqwest::Client,
    fleet: Fleet,
}

async fn run(settings: &Settings, binaries: Binaries, scratch: &Scratch) -> anyhow::Result<Value> {
    let started = Instant::now();
    let (db, postgres_version) = scratch.connect().await?;
    db.close().await?;

    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut fleet = Fleet::new(binaries, &scratch.logs);
    let lease = LEASE_SECS.to_string();
    let server_extra = ["--lease-secs", &lease, "--dispatch-delay-ms", "0"];
    let (server_port, base) = fleet
        .start_server(&client, &scratch.database_url(), &server_extra)
        .await?;
    let mut bench = Bench {
        settings,
        base,
        server_port,
        client,
        fleet,
    };
    eprintln!("server up on {} (lease {LEASE_SECS} s, dispatch delay 0)", bench.base);

    let mut kill9 = Vec::new();
    for rep in 1..=settings.repeats {
        let run = bench.kill9(rep).await.with_context(|| format!("kill -9 run {rep}"))?;
        eprintln!(
            "kill -9 run {rep}: completed by B {:.2} s after the kill",
            run["kill_to_completed_s"].as_f64().unwrap_or(f64::NAN)
        );
        kill9.push(run);
    }
    let mut restart = Vec::new();
    for rep in 1..=settings.repeats {
        let run = bench.restart(rep).await.with_context(|| format!("restart run {rep}"))?;
        eprintln!(
            "restart run {rep}: registered {:.3} s, first claim {:.3} s after the spawn",
            run["spawn_to_registered_log_s"].as_f64().unwrap_or(f64::NAN),
            run["spawn_to_first_claim_s"].as_f64().unwrap_or(f64::NAN)
        );
        restart.push(run);
    }
    let mut phantom = Vec::new();
    for mode in [PhantomMode::FirstTaskReply, PhantomMode::ClaimReply] {
        for rep in 1..=settings.repeats {
            let run = bench
                .phantom(rep, mode)
                .await
                .with_context(|| format!("phantom run {rep} ({})", mode.name()))?;
            eprintln!(
                "phantom run {rep} ({}): dropped the reply to {}, running again {:.2} s after the drop",
                mode.name(),
                run["dropped_reply_to"].as_str().unwrap_or("?"),
                run["drop_to_running_again_s"].as_f64().unwrap_or(f64::NAN)
            );
            phantom.push(run);
        }
    }

    bench.fleet.stop_workers(Duration::from_secs(15)).await;
    bench.fleet.stop_server(Duration::from_secs(15)).await;
    let leftovers = still_running(&mut bench.fleet);
    ensure!(leftovers.is_empty(), "children still running: {leftovers:?}");

    let sim_run_s = settings.sim_run().as_secs_f64();
    let kill9_total = median(&figures(&kill9, "kill_to_completed_s"));
    let kill9_requeue = median(&figures(&kill9, "minus_sim_run_s"));
    let previous_kill9 = (PREVIOUS_KILL9_REQUEUE_S.0 + PREVIOUS_KILL9_REQUEUE_S.1) / 2.0;
    let restart_claim = median(&figures(&restart, "spawn_to_first_claim_s"));
    let restart_registered = median(&figures(&restart, "spawn_to_registered_log_s"));
    let phantom_again = median(&figures(&phantom, "drop_to_running_again_s"));
    Ok(json!({
        "benchmark": "bench_faults",
        "settings": {
            "lease_secs": LEASE_SECS,
            "heartbeat_secs": HEARTBEAT_SECS,
            "server_sweep_interval_secs": SWEEP_INTERVAL_SECS,
            "dispatch_delay_ms": 0,
            "worker_poll_interval_secs": 2,
            "sim_steps": settings.sim_steps,
            "sim_step_ms": settings.sim_step_ms,
            "sim_run_s": sim_run_s,
            "kill_after_run_start_s": settings.kill_after.as_secs_f64(),
            "repeats": settings.repeats,
            "postgres_version": postgres_version,
        },
        "kill9_requeue_completed_s": {
            "what": "task (max_retries 1) running on worker A, A killed with SIGKILL, worker B idle: kill -> completed by B",
            "runs": kill9,
            "median_kill_to_completed_s": kill9_total,
            "sim_run_s": sim_run_s,
            "median_minus_sim_run_s": kill9_requeue,
            "median_kill_to_running_on_b_s": median(&figures(&kill9, "kill_to_running_on_b_s")),
            "previous_report": {
                "figure_s": [PREVIOUS_KILL9_REQUEUE_S.0, PREVIOUS_KILL9_REQUEUE_S.1],
                "label": "earlier report, 6 s lease: the requeue delay, compared here with median_minus_sim_run_s",
            },
            "ratio_to_previous": ratio(kill9_requeue, previous_kill9),
            "bound_s": {
                "lease_plus_sweep_plus_claim_poll": LEASE_SECS + SWEEP_INTERVAL_SECS + 2,
                "note": "a killed worker's task waits for its lease to expire (6 s after its last heartbeat), \
                         then for the server's sweep (every 5 s), then for B's next claim or heartbeat (2 s)",
            },
        },
        "restart_first_claim_s": {
            "what": "worker A mid-run, SIGKILL, a worker with the same id spawned at once: spawn -> registered, spawn -> first claim (attempt 2)",
            "runs": restart,
            "median_spawn_to_registered_log_s": restart_registered,
            "median_spawn_to_registered_api_s": median(&figures(&restart, "spawn_to_registered_api_s")),
            "median_spawn_to_first_claim_s": restart_claim,
            "previous_report": {
                "figure_s": PREVIOUS_RESTART_FIRST_CLAIM_S,
                "label": "earlier report: the restarted worker waited for the old registration to go offline (90 s of silence)",
            },
            "ratio_to_previous": ratio(restart_claim, PREVIOUS_RESTART_FIRST_CLAIM_S),
            "target_s": LEASE_SECS,
            "target_met": restart_claim.is_some_and(|s| s < LEASE_SECS as f64),
        },
        "phantom_task_s": {
            "what": "the first reply carrying a task (first_task_reply: whichever; claim_reply: a claim's) dropped by a TCP proxy before it reached the worker: drop -> the task running for real (attempt 2) or completed",
            "heartbeat_secs": HEARTBEAT_SECS,
            "runs": phantom,
            "median_drop_to_running_again_s": phantom_again,
            "median_drop_to_running_again_s_by_mode": {
                "first_task_reply": median(&figures_of(&phantom, "first_task_reply", "drop_to_running_again_s")),
                "claim_reply": median(&figures_of(&phantom, "claim_reply", "drop_to_running_again_s")),
            },
            "median_drop_to_completed_s": median(&figures(&phantom, "drop_to_completed_s")),
            "previous_report": {
                "figure_s": PREVIOUS_PHANTOM_S,
                "label": "earlier report: the task sat running under the worker until its 30-minute timeout (31 min)",
            },
            "ratio_to_previous": ratio(phantom_again, PREVIOUS_PHANTOM_S),
            "target_s": HEARTBEAT_SECS,
            "target_note": "about one heartbeat interval",
        },
        "total_seconds": started.elapsed().as_secs_f64(),
    }))
}

impl Bench<'_> {
    /// Starts a worker against the server (or `server`, the proxy) and returns its index in the fleet.
    fn spawn_worker(
        &mut self,
        id: &str,
        log_name: &str,
        server: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        let server = server.unwrap_or(&self.base).to_string();
        let lease = LEASE_SECS.to_string();
        let mut rest = vec!["--lease-secs", &lease, "--shutdown-grace-secs", "5"];
        rest.extend_from_slice(extra);
        let settings = self.settings;
        let args = bench_support::worker_args(id, &server, settings.sim_steps, settings.sim_step_ms, &rest);
        self.fleet.spawn_worker(log_name, &args)
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        get_json(&self.client, &format!("{}{path}", self.base)).await
    }

    async fn worker(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}/workers/{id}", self.base);
        let response = self.client.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "GET /workers/{id}: {status}: {text}");
        Ok(Some(serde_json::from_str(&text)?))
    }

    /// Waits until the worker is registered and live; returns its registration.
    async fn wait_registered(&mut self, id: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.fleet.check()?;
            if let Some(worker) = self.worker(id).await? {
                if worker["status"] != "offline" {
                    return Ok(worker);
                }
            }
            ensure!(Instant::now() < deadline, "worker {id} did not register within 60 s");
            tokio::time::sleep(POLL).await;
        }
    }

    async fn create_task(&self, max_retries: u32) -> anyhow::Result<String> {
        let body = task_body("misconfig_app_hotel_res-detection-1", Some(max_retries)).to_string();
        let text = post_task(&self.client, &format!("{}/tasks", self.base), body).await?;
        let task: Value = serde_json::from_str(&text)?;
        task["id"]
            .as_str()
            .map(String::from)
            .context("POST /tasks answered no id")
    }

    /// Polls the task until `done` holds, recording every change in `timeline` (seconds since `since`).
    async fn watch_task(
        &mut self,
        id: &str,
        since: Instant,
        timeline: &mut Timeline,
        mut done: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<(Value, Instant)> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.fleet.check()?;
            let task = self.get_json(&format!("/tasks/{id}")).await?;
            let now = Instant::now();
            timeline.see(&task, now - since);
            if done(&task) {
                return Ok((task, now));
            }
            ensure!(
                now < deadline,
                "task {id} did not reach the expected state within {WAIT:?}; last seen {}",
                TaskView::of(&task)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    // -----------------------------------------------------------------------------------------------------------
    // 1. kill -9, requeue, another worker completes it

    async fn kill9(&mut self, rep: usize) -> anyhow::Result<Value> {
        let (a_id, b_id) = (format!("faults-kill9-{rep}-a"), format!("faults-kill9-{rep}-b"));
        let a = self.spawn_worker(&a_id, &a_id, None, &[])?;
        self.wait_registered(&a_id).await?;
        let task_id = self.create_task(1).await?;
        let mut timeline = Timeline::default();
        let created = Instant::now();
        let (_, running_on_a) = self
            .watch_task(&task_id, created, &mut timeline, |t| is_running_on(t, &a_id, 1))
            .await?;
        // B registers only now, so A is the one that claimed the task; it is idle when A dies.
        self.spawn_worker(&b_id, &b_id, None, &[])?;
        self.wait_registered(&b_id).await?;
        let mid_run = running_on_a + self.settings.kill_after;
        tokio::time::sleep_until(mid_run.into()).await;
        let task = self.get_json(&format!("/tasks/{task_id}")).await?;
        ensure!(
            is_running_on(&task, &a_id, 1),
            "the task is no longer running on A before the kill: {}",
            TaskView::of(&task)
        );
        let killed = Instant::now();
        self.fleet.workers[a].kill();
        let into_run = killed - running_on_a;
        let mut after = Timeline::default();
        let mut requeued = None;
        let mut running_on_b = None;
        let (task, completed) = self
            .watch_task(&task_id, killed, &mut after, |t| {
                let now = Instant::now();
                if requeued.is_none() && (t["status"] == "pending" || t["worker_id"] == b_id.as_str()) {
                    requeued = Some(now);
                }
                if running_on_b.is_none() && t["worker_id"] == b_id.as_str() {
                    running_on_b = Some(now);
                }
                is_terminal(t)
            })
            .await?;
        // B: A was killed.
        self.fleet.stop_workers(Duration::from_secs(15)).await;
        ensure!(
            task["status"] == "completed" && task["worker_id"] == b_id.as_str(),
            "the task did not end completed by B: {}",
            TaskView::of(&task)
        );
        let total = (completed - killed).as_secs_f64();
        let secs = |at: Option<Instant>| at.map(|at| (at - killed).as_secs_f64());
        Ok(json!({
            "kill_to_completed_s": total,
            "minus_sim_run_s": total - self.settings.sim_run().as_secs_f64(),
            "kill_to_requeued_s": secs(requeued),
            "kill_to_running_on_b_s": secs(running_on_b),
            "running_on_b_to_completed_s": running_on_b.map(|at| (completed - at).as_secs_f64()),
            "killed_into_run_s": into_run.as_secs_f64(),
            "final": TaskView::of(&task).json(),
            "timeline_before_kill": timeline.json(),
            "timeline_after_kill": after.json(),
        }))
    }

    // -----------------------------------------------------------------------------------------------------------
    // 2. kill -9 and restart under the same id

    async fn restart(&mut self, rep: usize) -> anyhow::Result<Value> {
        let id = format!("faults-restart-{rep}");
        let first = self.spawn_worker(&id, &format!("{id}-first"), None, &[])?;
        let registration = self.wait_registered(&id).await?;
        let old_instance = registration["instance_id"].clone();
        let old_registered_at = registration["registered_at"].clone();
        let task_id = self.create_task(1).await?;
        let mut timeline = Timeline::default();
        let created = Instant::now();
        let (_, running) = self
            .watch_task(&task_id, created, &mut timeline, |t| is_running_on(t, &id, 1))
            .await?;
        tokio::time::sleep_until((running + self.settings.kill_after).into()).await;
        let killed = Instant::now();
        self.fleet.workers[first].kill();
        let second_log_name = format!("{id}-restarted");
        let second = self.spawn_worker(&id, &second_log_name, None, &[])?;
        let spawned = Instant::now();
        let second_log = self.fleet.workers[second].log.clone();

        let mut after = Timeline::default();
        let mut registered_log = None;
        let mut registered_api = None;
        let mut new_registration = Value::Null;
        let mut first_claim = None;
        let mut requeue_error = Value::Null;
        let deadline = Instant::now() + WAIT;
        let task = loop {
            self.fleet.check()?;
            let now = Instant::now();
            if registered_log.is_none() && !log_lines(&second_log, REGISTERED_LINE, 1).is_empty() {
                registered_log = Some(now);
            }
            if registered_api.is_none() {
                if let Some(worker) = self.worker(&id).await? {
                    if worker["status"] != "offline"
                        && (worker["instance_id"] != old_instance || worker["registered_at"] != old_registered_at)
                    {
                        registered_api = Some(Instant::now());
                        new_registration = json!({
                            "instance_id": worker["instance_id"],
                            "previous_instance_id": old_instance,
                            "registered_at": worker["registered_at"],
                            "previous_registered_at": old_registered_at,
                        });
                    }
                }
            }
            let task = self.get_json(&format!("/tasks/{task_id}")).await?;
            let seen = Instant::now();
            after.see(&task, seen - spawned);
            // The requeue's error details, while pending or on the next attempt (which keeps them until it ends).
            if requeue_error.is_null()
                && (task["status"] == "pending" || task["attempt"].as_u64() >= Some(2))
                && !task["error_details"].is_null()
            {
                requeue_error = task["error_details"].clone();
            }
            if first_claim.is_none() && task["worker_id"] == id.as_str() && task["attempt"].as_u64() >= Some(2) {
                first_claim = Some(seen);
            }
            if is_terminal(&task) && registered_log.is_some() && registered_api.is_some() {
                break task;
            }
            ensure!(
                seen < deadline,
                "restart: not done within {WAIT:?} (registered: log {}, api {}); task {}",
                registered_log.is_some(),
                registered_api.is_some(),
                TaskView::of(&task)
            );
            tokio::time::sleep(POLL).await;
        };
        let completed = Instant::now();
        // The restarted worker: the first instance was killed.
        self.fleet.stop_workers(Duration::from_secs(15)).await;
        let by_restarted =
            task["status"] == "completed" && task["worker_id"] == id.as_str() && task["attempt"].as_u64() == Some(2);
        let secs = |at: Option<Instant>| at.map(|at| (at - spawned).as_secs_f64());
        let server_log = self.fleet.server.as_ref().map(|s| s.log.clone()).unwrap_or_default();
        Ok(json!({
            "spawn_to_registered_log_s": secs(registered_log),
            "spawn_to_registered_api_s": secs(registered_api),
            "spawn_to_first_claim_s": secs(first_claim),
            "spawn_to_completed_s": (completed - spawned).as_secs_f64(),
            "kill_to_spawn_s": (spawned - killed).as_secs_f64(),
            "registration": new_registration,
            "killed_instance_task": {
                "requeue_error_details": requeue_error,
                "completed_by_restarted_worker_on_attempt_2": by_restarted,
                "final": TaskView::of(&task).json(),
            },
            "restarted_worker_log": log_lines(&second_log, REGISTERED_LINE, 2),
            "server_log": log_lines(&server_log, &format!("worker_id={id}"), 6),
            "timeline_before_kill": timeline.json(),
            "timeline_after_spawn": after.json(),
        }))
    }

    // -----------------------------------------------------------------------------------------------------------
    // 3. a claim reply lost on the way: the phantom task

    async fn phantom(&mut self, rep: usize, mode: PhantomMode) -> anyhow::Result<Value> {
        let id = format!("faults-phantom-{}-{rep}", mode.name());
        let upstream = SocketAddr::from(([127, 0, 0, 1], self.server_port));
        let proxy = Proxy::start(upstream).await?;
        let via = format!("http://{}", proxy.addr);
        let heartbeat = HEARTBEAT_SECS.to_string();
        let worker = self.spawn_worker(&id, &id, Some(&via), &["--heartbeat-secs", &heartbeat])?;
        self.wait_registered(&id).await?;
        ensure!(
            proxy.dropped().is_none(),
            "the proxy dropped a reply before any task existed"
        );
        let (task_id, created, held_for) = match mode {
            PhantomMode::FirstTaskReply => (self.create_task(0).await?, Instant::now(), None),
            PhantomMode::ClaimReply => {
                // The worker's next claim request is held at the proxy (its claim gate keeps its heartbeats back
                // meanwhile) until the task exists, then forwarded: that claim takes the task, and its reply is the
                // one dropped.
                proxy.state.hold.store(HOLD_ARMED, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while proxy.state.hold.load(Ordering::SeqCst) != HOLD_HOLDING {
                    self.fleet.check()?;
                    ensure!(Instant::now() < deadline, "the worker sent no claim within 30 s");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let holding = Instant::now();
                let task_id = self.create_task(0).await;
                let created = Instant::now();
                proxy.state.hold.store(HOLD_RELEASED, Ordering::SeqCst);
                (task_id?, created, Some(holding.elapsed().as_secs_f64()))
            }
        };

        let deadline = created + WAIT;
        let dropped = loop {
            self.fleet.check()?;
            if let Some(dropped) = proxy.dropped() {
                break dropped;
            }
            ensure!(
                Instant::now() < deadline,
                "the proxy saw no reply carrying a task within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut timeline = Timeline::default();
        let mut not_held = Value::Null;
        let mut handed_back = None;
        let mut running_again = None;
        let (task, completed) = self
            .watch_task(&task_id, dropped.at, &mut timeline, |t| {
                let now = Instant::now();
                // Handed back: pending again, or already running its next attempt (the handback and the next claim
                // can come in one heartbeat); the next attempt keeps the handback's error details until it ends.
                if handed_back.is_none() && (t["status"] == "pending" || t["attempt"].as_u64() >= Some(2)) {
                    handed_back = Some(now);
                }
                if not_held.is_null() && handed_back.is_some() && !t["error_details"].is_null() {
                    not_held = t["error_details"].clone();
                }
                if running_again.is_none()
                    && ((t["status"] == "running" && t["attempt"].as_u64() >= Some(2)) || t["status"] == "completed")
                {
                    running_again = Some(now);
                }
                is_terminal(t)
            })
            .await?;
        let worker_log = self.fleet.workers[worker].log.clone();
        // This run's worker: the earlier ones are all stopped.
        self.fleet.stop_workers(Duration::from_secs(15)).await;
        proxy.stop();
        let secs = |at: Option<Instant>| at.map(|at| (at - dropped.at).as_secs_f64());
        let server_log = self.fleet.server.as_ref().map(|s| s.log.clone()).unwrap_or_default();
        let mut worker_lines = log_lines(&worker_log, HANDBACK_LINE, 3);
        worker_lines.extend(log_lines(&worker_log, "claim failed", 2));
        worker_lines.extend(log_lines(&worker_log, "store call failed", 2));
        worker_lines.extend(log_lines(&worker_log, "heartbeat failed", 2));
        worker_lines.extend(log_lines(&worker_log, "heartbeat handed us a task", 2));
        Ok(json!({
            "mode": mode.name(),
            "dropped_reply_to": dropped.request,
            "claim_request_held_s": held_for,
            "drop_after_create_s": (dropped.at.saturating_duration_since(created)).as_secs_f64(),
            "drop_to_handed_back_s": secs(handed_back),
            "drop_to_running_again_s": secs(running_again),
            "drop_to_completed_s": (completed - dropped.at).as_secs_f64(),
            "handback_error_details": not_held,
            "worker_logged_handback": !log_lines(&worker_log, HANDBACK_LINE, 1).is_empty(),
            "worker_log": worker_lines,
            "server_log": log_lines(&server_log, SERVER_HANDBACK_LINE, 2),
            "max_retries": 0,
            "final": TaskView::of(&task).json(),
            "timeline_after_drop": timeline.json(),
        }))
    }
}

fn is_running_on(task: &Value, worker: &str, attempt: u64) -> bool {
    task["status"] == "running" && task["worker_id"] == worker && task["attempt"].as_u64() == Some(attempt)
}

fn is_terminal(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("completed" | "failed" | "timeout" | "cancelled")
    )
}

/// The fields of a task this benchmark follows.
#[derive(Debug, Clone, PartialEq)]
struct TaskView {
    status: String,
    worker_id: Option<String>,
    attempt: u64,
    error_code: Option<String>,
}

impl TaskView {
    fn of(task: &Value) -> Self {
        Self {
            status: task["status"].as_str().unwrap_or("?").to_string(),
            worker_id: task["worker_id"].as_str().map(String::from),
            attempt: task["attempt"].as_u64().unwrap_or(0),
            error_code: task["error_details"]["code"].as_str().map(String::from),
        }
    }

    fn json(&self) -> Value {
        json!({"status": self.status, "worker_id": self.worker_id, "attempt": self.attempt, "error_code": self.error_code})
    }
}

impl std::fmt::Display for TaskView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json())
    }
}

/// Every change of a task's view: `[seconds, status, worker, attempt, error code]`.
#[derive(Default)]
struct Timeline {
    last: Option<TaskView>,
    points: Vec<Value>,
}

impl Timeline {
    fn see(&mut self, task: &Value, at: Duration) {
        let view = TaskView::of(task);
        if self.last.as_ref() != Some(&view) {
            self.points.push(json!([
                (at.as_secs_f64() * 1000.0).round() / 1000.0,
                view.status,
                view.worker_id,
                view.attempt,
                view.error_code
            ]));
            self.last = Some(view);
        }
    }

    fn json(&self) -> Value {
        Value::Array(self.points.clone())
    }
}

fn figures(runs: &[Value], key: &str) -> Vec<f64> {
    runs.iter().filter_map(|run| run[key].as_f64()).collect()
}

fn figures_of(runs: &[Value], mode: &str, key: &str) -> Vec<f64> {
    runs.iter()
        .filter(|run| run["mode"] == mode)
        .filter_map(|run| run[key].as_f64())
        .collect()
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

fn ratio(value: Option<f64>, previous: f64) -> Option<f64> {
    value.map(|v| v / previous)
}

/// The first `limit` lines of a log file containing `needle`, trimmed.
fn log_lines(path: &Path, needle: &str, limit: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains(needle))
        .take(limit)
        .map(|line| line.chars().take(400).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy that loses a reply

/// The reply the proxy dropped.
#[derive(Debug, Clone)]
struct Dropped {
    at: Instant,
    /// The request line the dropped reply answered, e.g. `POST /workers/claim`.
    request: String,
}

/// Which reply the phantom run loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhantomMode {
    /// The first reply carrying the task, whichever request it answers (in practice an idle worker's heartbeat,
    /// which is handed the task in `next_task`).
    FirstTaskReply,
    /// A claim reply: the worker's next claim request is held at the proxy until the task exists.
    ClaimReply,
}

impl PhantomMode {
    fn name(self) -> &'static str {
        match self {
            Self::FirstTaskReply => "first_task_reply",
            Self::ClaimReply => "claim_reply",
        }
    }
}

/// The proxy's claim hold: off, armed (hold the next `POST /workers/claim`), holding it, released.
const HOLD_OFF: u8 = 0;
const HOLD_ARMED: u8 = 1;
const HOLD_HOLDING: u8 = 2;
const HOLD_RELEASED: u8 = 3;
/// A held claim is forwarded after this long at the latest.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct ProxyState {
    dropped: Mutex<Option<Dropped>>,
    hold: AtomicU8,
}

/// A TCP proxy in front of the server that forwards everything, except that it closes both sockets of the first
/// connection whose server → client bytes carry a task (`task":{"id"`, matched across reads), without forwarding
/// the read that completed the match; and, when armed, holds the next claim request until released.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            hold: AtomicU8::new(HOLD_OFF),
            ..ProxyState::default()
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Err(error) = proxy_connection(client, upstream, state).await {
                        eprintln!("proxy connection: {error}");
                    }
                });
            }
        });
        Ok(Self { addr, state, accept })
    }

    fn dropped(&self) -> Option<Dropped> {
        self.state.dropped.lock().ok().and_then(|d| d.clone())
    }

    fn stop(&self) {
        self.accept.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_connection(client: TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let last_request = Arc::new(Mutex::new(String::new()));

    let requests = last_request.clone();
    let up_state = state.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                let _ = server_write.shutdown().await;
                return Ok::<(), std::io::Error>(());
            }
            // The request line of the last request sent on this connection (a request starts a read here: the
            // worker waits for each reply before its next request on a connection).
            let line = {
                let text = String::from_utf8_lossy(&buf[..n]);
                text.lines()
                    .next()
                    .filter(|l| l.starts_with("POST ") || l.starts_with("GET "))
                    .map(|l| l.rsplit_once(' ').map_or(l, |(head, _)| head).to_string())
            };
            if let Some(line) = line {
                let is_claim = line == "POST /workers/claim";
                if let Ok(mut last) = requests.lock() {
                    *last = line;
                }
                let held = is_claim
                    && up_state
                        .hold
                        .compare_exchange(HOLD_ARMED, HOLD_HOLDING, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok();
                if held {
                    let deadline = Instant::now() + HOLD_LIMIT;
                    while up_state.hold.load(Ordering::SeqCst) == HOLD_HOLDING && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut window: Vec<u8> = Vec::new();
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                let _ = client_write.shutdown().await;
                return Ok::<(), std::io::Error>(());
            }
            let armed = state.dropped.lock().map(|d| d.is_none()).unwrap_or(false);
            if armed {
                window.extend_from_slice(&buf[..n]);
                if contains(&window, TASK_PATTERN) {
                    let request = last_request.lock().map(|r| r.clone()).unwrap_or_default();
                    if let Ok(mut slot) = state.dropped.lock() {
                        if slot.is_none() {
                            *slot = Some(Dropped {
                                at: Instant::now(),
                                request,
                            });
                            // Returning drops both halves of both sockets: the connection is closed both ways.
                            return Ok(());
                        }
                    }
                }
                let keep = TASK_PATTERN.len() - 1;
                if window.len() > keep {
                    window.drain(..window.len() - keep);
                }
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    let mut up = pin!(up);
    let mut down = pin!(down);
    tokio::select! {
        result = &mut down => result,
        result = &mut up => {
            result?;
            down.await
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/// The names of the fleet's processes that still run.
fn still_running(fleet: &mut Fleet) -> Vec<String> {
    let mut names = Vec::new();
    for proc in fleet.workers.iter_mut().chain(fleet.server.iter_mut()) {
        if proc.running() {
            names.push(proc.name.clone());
        }
    }
    names
}
