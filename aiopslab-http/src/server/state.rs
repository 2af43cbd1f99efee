//! [`ApiState`]: what every handler shares — the store's roles the router
//! serves, the scheduler, the configuration and the metrics registry — and
//! the roles the server runs beside the router (the sweep, the outbox).

use std::sync::Arc;

use aiopslab_core::{
    DefaultScheduler, EpisodeExport, FleetView, Housekeeping, Scheduler, TaskApi, TaskStore, WebhookOutbox, WorkerQueue,
};
use tokio_util::sync::CancellationToken;

use super::config::ApiConfig;
use super::metrics::Metrics;
use super::observed::ObservedStore;
use super::wakeups::Wakeups;
use crate::webhooks::WebhookDeliverer;

/// Shared state of the router. Cheap to clone. Every handle is a role of
/// the one store given to [`ApiState::new`].
#[derive(Clone)]
pub struct ApiState {
    /// The task API (`/tasks`, `/groups`).
    pub tasks: Arc<dyn TaskApi>,
    /// The worker side (the worker protocol), wrapped in an
    /// [`ObservedStore`] that feeds the task duration histogram. Give
    /// in-process workers this one (`state.queue.clone()`) so their finishes
    /// are measured too.
    pub queue: Arc<dyn WorkerQueue>,
    /// The operator's reads (`/workers`, `/stats`, `/metrics`).
    pub fleet: Arc<dyn FleetView>,
    /// The dataset export (`/trajectories/export`).
    pub export: Arc<dyn EpisodeExport>,
    /// The webhook outbox: a task's deliveries (`/tasks/{id}/webhooks`),
    /// and what the deliverer of [`serve_with`](crate::app::serve_with) drains.
    pub outbox: Arc<dyn WebhookOutbox>,
    /// The sweep [`serve_with`](crate::app::serve_with) runs beside the router.
    pub housekeeping: Arc<dyn Housekeeping>,
    /// Who gets which task (used by claim and by idle heartbeats).
    pub scheduler: Arc<dyn Scheduler>,
    /// Tokens, limits, follow polling.
    pub config: Arc<ApiConfig>,
    /// Counters and histograms served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Fired when the server stops: open log streams (`?follow=true`) end
    /// at once, so a graceful shutdown does not wait for running tasks.
    pub shutdown: CancellationToken,
    /// Deals the store's wake-ups to the workers' event streams (`GET /workers/{id}/events`): a new task wakes a
    /// few workers, not the fleet.
    pub wakeups: Arc<Wakeups>,
    /// The deliverer that `POST /tasks/{id}/webhooks/{delivery_id}/redeliver`
    /// tries a failed delivery with (its secret, timeout and destination
    /// rules). [`serve_with`](crate::app::serve_with) sets the one it runs;
    /// `None`: that route answers 501 `webhooks_disabled`.
    pub webhooks: Option<WebhookDeliverer>,
}

impl ApiState {
    /// State over a full store and a scheduler.
    pub fn new(store: Arc<dyn TaskStore>, scheduler: Arc<dyn Scheduler>, config: ApiConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let queue: Arc<dyn WorkerQueue> = Arc::new(ObservedStore::new(store.clone(), metrics.clone()));
        Self {
            wakeups: Arc::new(Wakeups::new(queue.clone())),
            queue,
            tasks: store.clone(),
            fleet: store.clone(),
            export: store.clone(),
            outbox: store.clone(),
            housekeeping: store,
            scheduler,
            config: Arc::new(config),
            metrics,
            shutdown: CancellationToken::new(),
            webhooks: None,
        }
    }

    /// The same state, redelivering failed webhooks with `deliverer`.
    pub fn with_webhooks(mut self, deliverer: WebhookDeliverer) -> Self {
        self.webhooks = Some(deliverer);
        self
    }

    /// The same state, ending its log streams when `shutdown` fires (pass
    /// the token that stops the server).
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// State over a store with the [`DefaultScheduler`].
    pub fn with_default_scheduler(store: Arc<dyn TaskStore>, config: ApiConfig) -> Self {
        let scheduler: Arc<dyn Scheduler> = Arc::new(DefaultScheduler::new(store.clone()));
        Self::new(store, scheduler, config)
    }
}
