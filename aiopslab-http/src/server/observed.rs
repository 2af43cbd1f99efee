//! [`ObservedStore`]: a [`TaskStore`] decorator that feeds the task duration
//! histogram (`aiopslab_task_duration_seconds`) from every `finish` that
//! moves a task to a terminal status — through the HTTP worker protocol or
//! from in-process workers given [`ApiState::store`](super::ApiState) — and
//! delegates everything else unchanged.
//!
//! A replayed finish (the store acknowledges it unchanged) is not counted
//! twice: the last few thousand observed `(task, attempt)` pairs are kept.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use aiopslab_core::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use aiopslab_core::export::{Episode, ExportCursor, ExportFilter};
use aiopslab_core::webhook::{WebhookAttemptReport, WebhookDelivery};
use aiopslab_core::{
    CancelOutcome, ClaimRequest, HeartbeatAck, LeaseState, LeaseToken, LogEntry, LogQuery, NewLogEntry, Page,
    StoreEvent, StoreResult, StoreStats, SweepReport, Task, TaskFilter, TaskId, TaskOutcome, TaskPage, TaskSort,
    TaskSpec, TaskStore, Trajectory, Worker, WorkerFilter, WorkerHeartbeat, WorkerPage, WorkerRegistration,
};
use async_trait::async_trait;

use super::metrics::Metrics;

/// How many observed finishes are remembered to ignore replays.
const REMEMBERED: usize = 4096;

/// Observes finished tasks into [`Metrics`], delegating every call to `inner`.
pub struct ObservedStore {
    inner: Arc<dyn TaskStore>,
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
    pub fn new(inner: Arc<dyn TaskStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            seen: Mutex::new(Seen::default()),
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

#[async_trait]
impl TaskStore for ObservedStore {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        self.inner.create_task(spec).await
    }

    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        self.inner.create_tasks(specs).await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        self.inner.get_task(id).await
    }

    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        self.inner.create_batch(batch, idempotency).await
    }

    async fn export_episodes(
        &self,
        filter: &ExportFilter,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Episode>> {
        self.inner.export_episodes(filter, after, limit).await
    }

    async fn claim_webhooks(&self, limit: u32, lease: std::time::Duration) -> StoreResult<Vec<WebhookDelivery>> {
        self.inner.claim_webhooks(limit, lease).await
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        self.inner.record_webhook_attempt(delivery_id, report).await
    }

    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        self.inner.list_webhooks(task_id).await
    }

    async fn list_tasks(&self, filter: &TaskFilter, sort: TaskSort, page: Page) -> StoreResult<TaskPage> {
        self.inner.list_tasks(filter, sort, page).await
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        self.inner.cancel_task(id).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.inner.claim(request).await
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        self.inner.extend_lease(lease).await
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        self.inner.append_logs(lease, entries).await
    }

    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.inner.get_logs(task_id, query).await
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        self.inner.save_trajectory(lease, trajectory).await
    }

    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        self.inner.get_trajectory(task_id).await
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let task = self.inner.finish(lease, outcome).await?;
        if task.status.is_terminal() && task.attempt == lease.attempt && self.first_time(lease) {
            self.metrics.observe_task(&task);
        }
        Ok(task)
    }

    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        self.inner.register_worker(registration).await
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        self.inner.heartbeat(heartbeat).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.inner.deregister_worker(worker_id).await
    }

    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        self.inner.get_worker(worker_id).await
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        self.inner.list_workers(filter).await
    }

    async fn sweep(&self) -> StoreResult<SweepReport> {
        self.inner.sweep().await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.inner.stats().await
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.inner.subscribe()
    }
}
