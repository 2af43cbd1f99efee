//! [`StoreParts`]: a full store assembled from one implementation per role.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    ClaimRequest, EpisodeExport, ExportRequest, FleetView, Housekeeping, LeaseState, StoreResult, TaskApi, TaskQuery,
    TaskStore, WebhookOutbox, WorkerQueue,
};
use crate::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use crate::events::StoreEvent;
use crate::export::Episode;
use crate::log::{LogEntry, LogQuery, NewLogEntry};
use crate::query::{StoreStats, SweepReport, TaskPage, WorkerFilter, WorkerPage};
use crate::task::{CancelOutcome, LeaseToken, Task, TaskId, TaskOutcome, TaskSpec};
use crate::trajectory::Trajectory;
use crate::webhook::{WebhookAttemptReport, WebhookDelivery};
use crate::worker::{HeartbeatAck, Worker, WorkerHeartbeat, WorkerRegistration};

/// A [`TaskStore`] whose every call goes to the part that owns its role.
///
/// Start from one full store ([`StoreParts::new`]) and swap the roles you
/// implement yourself: a remote worker's queue under test over the store
/// its server uses ([`with_queue`](Self::with_queue)), a cached task API
/// ([`with_task_api`](Self::with_task_api)), ... The parts must share one
/// state (the queue claims the tasks the task API created): this joins
/// implementations, it does not copy data between them.
///
/// ```
/// use std::sync::Arc;
/// use aiopslab_core::store::{StoreParts, TaskStore};
/// use aiopslab_core::MemoryStore;
///
/// let memory = Arc::new(MemoryStore::new());
/// // Here every role stays on the memory store; a test would swap the
/// // queue for the implementation it checks.
/// let store: Arc<dyn TaskStore> = Arc::new(StoreParts::new(memory.clone()).with_queue(memory));
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct StoreParts {
    queue: Arc<dyn WorkerQueue>,
    task_api: Arc<dyn TaskApi>,
    fleet: Arc<dyn FleetView>,
    housekeeping: Arc<dyn Housekeeping>,
    export: Arc<dyn EpisodeExport>,
    outbox: Arc<dyn WebhookOutbox>,
}

impl StoreParts {
    /// Every role served by `store`.
    pub fn new(store: Arc<dyn TaskStore>) -> Self {
        Self {
            queue: store.clone(),
            task_api: store.clone(),
            fleet: store.clone(),
            housekeeping: store.clone(),
            export: store.clone(),
            outbox: store,
        }
    }

    /// The same parts, with the worker side served by `queue`.
    pub fn with_queue(mut self, queue: Arc<dyn WorkerQueue>) -> Self {
        self.queue = queue;
        self
    }

    /// The same parts, with the task API served by `task_api`.
    pub fn with_task_api(mut self, task_api: Arc<dyn TaskApi>) -> Self {
        self.task_api = task_api;
        self
    }

    /// The same parts, with the operator's reads served by `fleet`.
    pub fn with_fleet(mut self, fleet: Arc<dyn FleetView>) -> Self {
        self.fleet = fleet;
        self
    }

    /// The same parts, with the export served by `export`.
    pub fn with_export(mut self, export: Arc<dyn EpisodeExport>) -> Self {
        self.export = export;
        self
    }
}

#[async_trait]
impl WorkerQueue for StoreParts {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        self.queue.register_worker(registration).await
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        self.queue.heartbeat(heartbeat).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.queue.deregister_worker(worker_id).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.queue.claim(request).await
    }

    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        self.queue.claim_many(request).await
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        self.queue.extend_lease(lease).await
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        self.queue.append_logs(lease, entries).await
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        self.queue.save_trajectory(lease, trajectory).await
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        self.queue.finish(lease, outcome).await
    }

    fn final_reports(&self) -> Option<&dyn super::FinalReports> {
        self.queue.final_reports()
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        self.queue.subscribe()
    }
}

#[async_trait]
impl TaskApi for StoreParts {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        self.task_api.create_task(spec).await
    }

    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        self.task_api.create_tasks(specs).await
    }

    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        self.task_api.create_batch(batch, idempotency).await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        self.task_api.get_task(id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        self.task_api.list_tasks(query).await
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        self.task_api.cancel_task(id).await
    }

    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.task_api.get_logs(task_id, query).await
    }

    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        self.task_api.get_trajectory(task_id).await
    }

    async fn get_group(&self, group_id: crate::batch::GroupId) -> StoreResult<Option<crate::group::Group>> {
        self.task_api.get_group(group_id).await
    }

    fn experiments(&self) -> Option<&dyn super::Experiments> {
        self.task_api.experiments()
    }
}

#[async_trait]
impl FleetView for StoreParts {
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        self.fleet.get_worker(worker_id).await
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        self.fleet.list_workers(filter).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.fleet.stats().await
    }
}

#[async_trait]
impl Housekeeping for StoreParts {
    async fn sweep(&self) -> StoreResult<SweepReport> {
        self.housekeeping.sweep().await
    }
}

#[async_trait]
impl EpisodeExport for StoreParts {
    async fn export_episodes(&self, request: &ExportRequest) -> StoreResult<Vec<Episode>> {
        self.export.export_episodes(request).await
    }
}

#[async_trait]
impl WebhookOutbox for StoreParts {
    async fn claim_webhooks(&self, limit: u32, lease: Duration) -> StoreResult<Vec<WebhookDelivery>> {
        self.outbox.claim_webhooks(limit, lease).await
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        self.outbox.record_webhook_attempt(delivery_id, report).await
    }

    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        self.outbox.list_webhooks(task_id).await
    }
}
