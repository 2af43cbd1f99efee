//! The [`Scheduler`] trait: which pending task a worker gets next.
//! [`DefaultScheduler`] works over any [`WorkerQueue`]. [`run_sweeper`] runs
//! the periodic sweep of a store's [`Housekeeping`].

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::store::{ClaimRequest, Housekeeping, StoreResult, WorkerQueue};
use crate::task::Task;

/// Scheduling policy. A user may swap in a fairer one (for instance one that
/// lists pending tasks itself and claims a chosen one with
/// [`ClaimRequest::task_id`]).
#[async_trait]
pub trait Scheduler: Send + Sync + 'static {
    /// Claims the next task for this worker, or `Ok(None)` when none fits.
    async fn next_task(&self, request: &ClaimRequest) -> StoreResult<Option<Task>>;

    /// Claims up to [`request.max_tasks`](ClaimRequest::max_tasks) tasks for this worker (a worker with several
    /// free slots asks for them at once). The default asks [`next_task`](Self::next_task) once, so a scheduler
    /// that picks tasks itself keeps working, one task per call.
    async fn next_tasks(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        Ok(self.next_task(&request.clone().up_to(1)).await?.into_iter().collect())
    }
}

/// Priority high-to-low; among tasks of one priority the experiments in turn
/// (least recently served first, within each the oldest task), never beyond an
/// experiment's `max_running`; `backend_type` must match; a worker's
/// `supported_problems`, when given, must contain the problem. The store's
/// atomic claim implements exactly this order (see
/// [`WorkerQueue::claim`]), so the default scheduler delegates to it.
#[derive(Clone)]
pub struct DefaultScheduler {
    queue: Arc<dyn WorkerQueue>,
}

impl DefaultScheduler {
    /// A scheduler claiming from `queue` (any store's worker side).
    pub fn new(queue: Arc<dyn WorkerQueue>) -> Self {
        Self { queue }
    }
}

#[async_trait]
impl Scheduler for DefaultScheduler {
    async fn next_task(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.queue.claim(request).await
    }

    async fn next_tasks(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        self.queue.claim_many(request).await
    }
}

/// Runs `store.sweep()` (timeouts, expired leases, retries, offline workers)
/// every `interval` until `shutdown` fires, logging what each pass changed.
/// Servers run one of these; several replicas may.
pub async fn run_sweeper(store: Arc<dyn Housekeeping>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.sweep().await {
            Ok(report) if !report.is_empty() => tracing::info!(
                timed_out = report.timed_out.len(),
                requeued = report.requeued.len(),
                failed = report.failed.len(),
                workers_offline = report.workers_offline.len(),
                "sweep changed state"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "sweep failed; will retry on the next tick"),
        }
    }
}
