//! [`ObservedStore`]: a [`WorkerQueue`] decorator that feeds the task
//! duration histogram (`aiopslab_task_duration_seconds`) from every `finish`
//! that moves a task to a terminal status — through the HTTP worker protocol
//! or from in-process workers given [`ApiState::queue`](super::ApiState) —
//! and delegates the rest of the worker side unchanged. (It wraps the one
//! trait that has `finish`: the task API and the rest never pass through it.)
//!
//! A run's final report ([`FinalReports`]) is observed the same way.
//!
//! A replayed finish (the store acknowledges it unchanged) is not counted
//! twice: the last few thousand observed `(task, attempt)` pairs are kept.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use aiopslab_core::{
    ClaimRequest, FinalReport, FinalReports, HeartbeatAck, LeaseState, LeaseToken, NewLogEntry, StoreError, StoreEvent,
    StoreResult, Task, TaskOutcome, Trajectory, Worker, WorkerHeartbeat, WorkerQueue, WorkerRegistration,
};
use async_trait::async_trait;

use super::metrics::Metrics;

/// How many observed finishes are remembered to ignore replays.
const REMEMBERED: usize = 4096;

/// Observes finished tasks into [`Metrics`], delegating every call to `inner`.
pub struct ObservedStore {
    inner: Arc<dyn WorkerQueue>,
    metrics: Arc<Metrics>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    order: VecDeque<LeaseToken>,
    set: HashSet<LeaseToken>,
}

impl ObservedStore {
    /// Wraps `inner`, observing into `metrics`.
    pub fn new(inner: Arc<dyn WorkerQueue>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Observes a finish (or a final report) that moved the task to a terminal status, once.
    fn observe_finish(&self, lease: LeaseToken, task: &Task) {
        if task.status.is_terminal() && task.attempt == lease.attempt && self.first_time(lease) {
            self.metrics.observe_task(task);
        }
    }

    /// True the first time this finish is seen.
    fn first_time(&self, lease: LeaseToken) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.set.insert(lease) {
            return false;
        }
        seen.order.push_back(lease);
        if seen.order.len() > REMEMBERED {
            if let Some(old) = seen.order.pop_front() {
                seen.set.remove(&old);
            }
        }
        true
    }
}

/// A run's end in one write, observed like a finish.
#[async_trait]
impl FinalReports for ObservedStore {
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        let reports = self
            .inner
            .final_reports()
            .ok_or_else(|| StoreError::Internal("the store stopped offering final reports".into()))?;
        let task = reports.finish_run(lease, report).await?;
        self.observe_finish(lease, &task);
        Ok(task)
    }
}

#[async_trait]
impl WorkerQueue for ObservedStore {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        self.inner.register_worker(registration).await
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        self.inner.heartbeat(heartbeat).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.inner.deregister_worker(worker_id).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.inner.claim(request).await
    }

    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        self.inner.claim_many(request).await
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        self.inner.extend_lease(lease).await
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        self.inner.append_logs(lease, entries).await
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        self.inner.save_trajectory(lease, trajectory).await
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let task = self.inner.finish(lease, outcome).await?;
        self.observe_finish(lease, &task);
        Ok(task)
    }

    fn final_reports(&self) -> Option<&dyn FinalReports> {
        self.inner.final_reports().map(|_| self as &dyn FinalReports)
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.inner.subscribe()
    }
}
