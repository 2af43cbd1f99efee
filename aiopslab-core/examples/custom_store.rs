//! Bring your own store, for a narrow need: your jobs already live in a table
//! of your own, and you want aiopslab's worker to run them. The worker
//! runtime asks for one trait only, `WorkerQueue` (claim, leases, logs,
//! trajectory, finish, worker registration), so that is all you implement —
//! not the task API, the sweep, the export or the webhook outbox.
//!
//! `JobTable` stands for your table (a `Vec` under a mutex here; rows in your
//! database in real life). It serves one worker, so it needs no lease expiry
//! of its own. Run it with `cargo run -p aiopslab-core --example custom_store`: it exits
//! non-zero unless every job completes with its trajectory and logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    ClaimRequest, DefaultScheduler, HeartbeatAck, LeaseState, LeaseToken, NewLogEntry, NewTask, SimulatedBackend,
    SimulatedConfig, StoreError, StoreResult, Task, TaskId, TaskOutcome, TaskStatus, Trajectory, Worker,
    WorkerHeartbeat, WorkerQueue, WorkerRegistration,
};
use anyhow::{ensure, Context};
use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// How long a claim holds before the worker must extend it.
const LEASE: Duration = Duration::from_secs(60);

/// Your job table: the jobs, and what the worker wrote for each.
#[derive(Default)]
struct JobTable {
    rows: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    jobs: Vec<Task>,
    logs: HashMap<TaskId, Vec<String>>,
    trajectories: HashMap<TaskId, Trajectory>,
}

impl JobTable {
    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rows {
    /// The job a lease proves the caller holds: running under that attempt.
    fn held(&mut self, lease: LeaseToken) -> StoreResult<&mut Task> {
        self.jobs
            .iter_mut()
            .find(|job| job.id == lease.task_id && job.attempt == lease.attempt && job.status == TaskStatus::Running)
            .ok_or(StoreError::LeaseLost {
                task_id: lease.task_id,
                attempt: lease.attempt,
            })
    }
}

fn lease_end() -> chrono::DateTime<Utc> {
    Utc::now() + LEASE
}

#[async_trait]
impl WorkerQueue for JobTable {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        registration.validate()?;
        Ok(Worker::registered(registration, (0, 0), Utc::now()))
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let (mut rows, end) = (self.rows(), lease_end());
        let mut ack = HeartbeatAck::default();
        ack.acknowledged = true;
        let worker = Some(heartbeat.worker_id.as_str());
        for job in rows.jobs.iter_mut().filter(|job| job.status == TaskStatus::Running) {
            if job.worker_id.as_deref() == worker {
                job.lease_expires_at = Some(end);
                ack.lease_expires_at = Some(end);
            }
        }
        Ok(ack)
    }

    async fn deregister_worker(&self, _worker_id: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        let mut rows = self.rows();
        let next = rows
            .jobs
            .iter_mut()
            .find(|job| job.status == TaskStatus::Pending && job.parameters.backend_type == request.backend_type);
        Ok(next.map(|job| {
            job.start(&request.worker_id, Utc::now(), lease_end());
            job.clone()
        }))
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let mut rows = self.rows();
        let job = rows.held(lease)?;
        job.lease_expires_at = Some(lease_end());
        Ok(LeaseState {
            lease_expires_at: lease_end(),
            cancel_requested: job.cancel_requested,
        })
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        let mut rows = self.rows();
        rows.held(lease)?;
        let lines = rows.logs.entry(lease.task_id).or_default();
        lines.extend(entries.into_iter().map(|entry| entry.message));
        Ok(())
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        let mut rows = self.rows();
        rows.held(lease)?;
        rows.trajectories.insert(lease.task_id, trajectory);
        Ok(())
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let mut rows = self.rows();
        let job = rows.held(lease)?;
        job.status = outcome.status.into();
        job.result = outcome.result;
        job.error_details = outcome.error;
        job.completed_at = Some(Utc::now());
        job.lease_expires_at = None;
        Ok(job.clone())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let table = Arc::new(JobTable::default());
    for problem_id in [
        "misconfig_app_hotel_res-detection-1",
        "k8s_target_port-misconfig-mitigation-1",
    ] {
        let job = Task::pending(NewTask::new(problem_id).validate()?, None, Utc::now());
        table.rows().jobs.push(job);
    }

    let queue: Arc<dyn WorkerQueue> = table.clone();
    let scheduler = Arc::new(DefaultScheduler::new(queue.clone()));
    let backend = Arc::new(SimulatedBackend::new(SimulatedConfig::instant(3)));
    let mut config = WorkerConfig::new("job-table-worker", "default");
    config.poll_interval = Duration::from_millis(50);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(WorkerRuntime::new(queue, scheduler, backend, config).run(shutdown.clone()));

    let all_done = || table.rows().jobs.iter().all(|job| job.status.is_terminal());
    tokio::time::timeout(Duration::from_secs(30), async {
        while !all_done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("the jobs did not finish within 30 s")?;
    shutdown.cancel();
    worker.await??;

    let rows = table.rows();
    for job in &rows.jobs {
        let reward = rows.trajectories.get(&job.id).and_then(|t| t.reward);
        let lines = rows.logs.get(&job.id).map_or(0, Vec::len);
        println!(
            "{} {}: {}, reward {reward:?}, {lines} log lines",
            job.id, job.problem_id, job.status
        );
        ensure!(
            job.status == TaskStatus::Completed,
            "job {} ended {}",
            job.id,
            job.status
        );
        ensure!(
            reward.is_some() && lines > 0,
            "job {} left no trajectory or log",
            job.id
        );
    }
    Ok(())
}
