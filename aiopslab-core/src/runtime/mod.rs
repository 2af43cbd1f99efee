//! The worker runtime: the loop every worker runs, whatever its store and backend.
//!
//! [`WorkerRuntime::run`] prepares the backend, registers the worker, then
//! heartbeats, claims, runs, streams logs, reports and resets until told to
//! stop. It works over the three traits only, so the same loop drives a
//! Kind cluster against PostgreSQL, a simulator against the embedded store,
//! or a remote worker through the HTTP client.
//!
//! - **Slots**: at most `max_parallel_tasks` runs at once (`slots.rs`).
//! - **Claims**: a free slot asks the scheduler at once and again after each
//!   task it got, one claim loop per slot (at most four in flight); only an empty queue waits, for the poll interval or a store
//!   event (`claim.rs`, `events.rs`).
//! - **Heartbeats** keep leases alive, carry cancellations and may hand over
//!   a task (`heartbeat.rs`).
//! - **Each run** streams its log in batches, honours its deadline and
//!   cancellation, and its outcome is reported with retries that never drop
//!   a result while the lease holds (`task_run.rs`). Log entries the store
//!   cannot take are held (up to `log_buffer_entries` / `log_buffer_bytes`
//!   per run, the oldest dropped beyond) and delivered in order when it
//!   can again, before the outcome (`log_forwarder.rs`).
//! - **Heartbeats** must come at least three times per lease:
//!   [`WorkerConfig::with_lease_duration`] derives the interval from the
//!   store's lease, and [`WorkerConfig::validate`] refuses one too long for it.
//! - **Store calls** are retried with backoff and jitter on transient errors
//!   ([`crate::retry`]).
//! - **Shutdown**: stop claiming, let runs finish within `shutdown_grace`,
//!   then stop them and report them `failed` with code `worker_shutdown`
//!   (the store requeues them if their retries allow), deregister, and shut
//!   the backend down.

mod claim;
mod config;
mod error;
mod events;
mod heartbeat;
mod log_forwarder;
mod pool;
mod slots;
mod task_run;

pub use crate::retry::RetryPolicy;
pub use config::WorkerConfig;
pub use error::RuntimeError;
pub use pool::WorkerPool;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::ClusterBackend;
use crate::error::StoreError;
use crate::retry::{retry_transient, retry_with};
use crate::scheduler::Scheduler;
use crate::store::WorkerQueue;
use slots::{Slots, StopReason};

/// What every part of a running worker shares.
pub(crate) struct Shared {
    store: Arc<dyn WorkerQueue>,
    scheduler: Arc<dyn Scheduler>,
    backend: Arc<dyn ClusterBackend>,
    config: WorkerConfig,
    slots: Slots,
    /// Wakes the claim loop early (a store event said work arrived).
    wake: Notify,
    /// The store pushes events to us now: the claim loop polls at `pushed_poll_interval`.
    pushed: std::sync::atomic::AtomicBool,
    /// Asks for a heartbeat soon: a run started or ended, so `GET /workers`
    /// shows the change within a second rather than up to a heartbeat
    /// interval later (`heartbeat::STATUS_BEAT_SPACING`).
    beat_now: Notify,
    /// Shutdown was requested: claim nothing more.
    stopping: CancellationToken,
    /// Shutdown's grace ran out: running tasks are stopped, none may start.
    grace_over: CancellationToken,
    /// Shutdown's report grace ran out: stop retrying reports.
    hard_stop: CancellationToken,
    /// Claims hold it for reading from their request until the task is
    /// tracked; a heartbeat holds it for writing. A heartbeat lists every
    /// task we hold and the store hands back the others, so a beat sent
    /// while a claim is in flight would hand back the task being claimed.
    claim_gate: tokio::sync::RwLock<()>,
    /// Set when another instance took our worker id over: we stop at once,
    /// write nothing more, and do not deregister (the id is theirs now).
    superseded: std::sync::OnceLock<StoreError>,
}

/// A worker: the loop that takes tasks from a store and runs them on a backend.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
/// use aiopslab_core::{DefaultScheduler, MemoryStore, SimulatedBackend, TaskStore};
/// use tokio_util::sync::CancellationToken;
///
/// let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
/// let scheduler = Arc::new(DefaultScheduler::new(store.clone()));
/// let backend = Arc::new(SimulatedBackend::default());
/// let runtime = WorkerRuntime::new(store, scheduler, backend, WorkerConfig::new("worker-001", "default"));
/// let shutdown = CancellationToken::new();
/// runtime.run(shutdown).await?; // returns once `shutdown` fires and the worker has stopped
/// # Ok(()) }
/// ```
pub struct WorkerRuntime {
    shared: Arc<Shared>,
}

impl WorkerRuntime {
    /// A worker over `store` (the worker side of a store: any
    /// [`WorkerQueue`], e.g. an `Arc<dyn TaskStore>` or a remote worker's
    /// `HttpStore`), claiming through `scheduler`, running on `backend`.
    pub fn new(
        store: Arc<dyn WorkerQueue>,
        scheduler: Arc<dyn Scheduler>,
        backend: Arc<dyn ClusterBackend>,
        config: WorkerConfig,
    ) -> Self {
        let slots = Slots::new(config.capabilities.max_parallel_tasks);
        Self {
            shared: Arc::new(Shared {
                store,
                scheduler,
                backend,
                config,
                slots,
                wake: Notify::new(),
                pushed: std::sync::atomic::AtomicBool::new(false),
                beat_now: Notify::new(),
                stopping: CancellationToken::new(),
                grace_over: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                claim_gate: tokio::sync::RwLock::new(()),
                superseded: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.shared.config
    }

    /// Runs the worker until `shutdown` fires, then stops gracefully (see
    /// the module docs). Errors: an invalid configuration, a backend that
    /// cannot be prepared, a registration the store refuses for good (a
    /// live worker holding our id is waited out, not an error), or a backend
    /// that fails to shut down.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let shared = self.shared;
        shared.config.validate()?;
        let span = tracing::info_span!("worker", worker_id = %shared.config.worker_id);
        async move {
            let backend_name = shared.backend.name().to_string();
            shared.backend.prepare().await.map_err(|source| RuntimeError::Prepare {
                backend: backend_name.clone(),
                source,
            })?;
            // Subscribe before registering, so no wake-up is missed.
            let events = if shared.config.store_events {
                shared.store.subscribe()
            } else {
                None
            };
            let registered = tokio::select! {
                biased;
                _ = shutdown.cancelled() => None,
                result = register(&shared) => Some(result),
            };
            match registered {
                None => {
                    tracing::info!("shutdown requested before registration completed");
                    let _ = shared.store.deregister_worker(&shared.config.worker_id).await;
                    return shutdown_backend(&shared, backend_name).await;
                }
                Some(Err(error)) => {
                    let _ = shared.backend.shutdown().await;
                    return Err(error);
                }
                Some(Ok(())) => {}
            }
            tracing::info!(
                backend = %backend_name,
                backend_type = %shared.config.backend_type,
                slots = shared.config.capabilities.max_parallel_tasks,
                "worker registered; taking tasks"
            );

            let background = CancellationToken::new();
            let heartbeat =
                tokio::spawn(heartbeat::heartbeat_loop(Arc::clone(&shared), background.clone()).in_current_span());
            let listener = events.map(|events| {
                tokio::spawn(events::listen(Arc::clone(&shared), events, background.clone()).in_current_span())
            });
            let stopping = shared.stopping.clone();
            let linked = background.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => stopping.cancel(),
                    _ = linked.cancelled() => {}
                }
            });
            claim::claim_loops(Arc::clone(&shared)).await;

            drain(&shared).await;
            background.cancel();
            let _ = heartbeat.await;
            if let Some(listener) = listener {
                let _ = listener.await;
            }
            if let Some(error) = shared.superseded.get() {
                let _ = shared.backend.shutdown().await;
                return Err(RuntimeError::Superseded(error.clone()));
            }
            let deregister_policy = shared.config.retry.with_max_attempts(5);
            match retry_transient(&deregister_policy, "deregister_worker", || {
                shared.store.deregister_worker(&shared.config.worker_id)
            })
            .await
            {
                Ok(()) => tracing::info!("worker deregistered"),
                Err(error) => tracing::warn!(%error, "could not deregister; the store will mark the worker offline"),
            }
            shutdown_backend(&shared, backend_name).await
        }
        .instrument(span)
        .await
    }
}

/// Registers the worker, waiting out a live previous holder of the id and
/// transient store errors.
async fn register(shared: &Shared) -> Result<(), RuntimeError> {
    let registration = shared.config.registration(shared.backend.name());
    let policy = shared.config.retry.unbounded();
    let classify = |error: &StoreError| match error {
        StoreError::WorkerAlive(id) => {
            tracing::warn!(
                worker_id = %id,
                "a live worker already holds this id; most likely a previous run of this worker that \
                 has not been marked offline yet (the store does so once it has been silent for its \
                 worker_offline_after). Waiting and retrying; stop the other worker or pick another id \
                 if it is really running"
            );
            true
        }
        other => other.is_transient(),
    };
    retry_with(&policy, "register_worker", classify, || {
        shared.store.register_worker(registration.clone())
    })
    .await
    .map(|_| ())
    .map_err(|source| RuntimeError::Register {
        worker_id: shared.config.worker_id.clone(),
        source,
    })
}

/// Lets running tasks finish within the grace, then stops them and waits
/// (boundedly) for their reports.
async fn drain(shared: &Shared) {
    let config = &shared.config;
    let running = shared.slots.active();
    if running > 0 {
        tracing::info!(
            running,
            grace_secs = config.shutdown_grace.as_secs_f64(),
            "shutting down: no new claims; letting running tasks finish"
        );
    }
    if tokio::time::timeout(config.shutdown_grace, shared.slots.wait_idle())
        .await
        .is_ok()
    {
        return;
    }
    shared.grace_over.cancel();
    let stopped = shared.slots.stop_all(StopReason::Shutdown);
    tracing::warn!(
        stopped,
        "shutdown grace exceeded; stopping runs and reporting them as worker_shutdown"
    );
    let report_window = config.cancel_grace + config.report_grace;
    if tokio::time::timeout(report_window, shared.slots.wait_idle())
        .await
        .is_ok()
    {
        return;
    }
    tracing::error!("runs could not be reported in time; giving up on their reports");
    shared.hard_stop.cancel();
    let _ = tokio::time::timeout(config.cancel_grace, shared.slots.wait_idle()).await;
}

async fn shutdown_backend(shared: &Shared, backend: String) -> Result<(), RuntimeError> {
    match shared.backend.shutdown().await {
        Ok(()) => {
            tracing::info!("worker stopped");
            Ok(())
        }
        Err(source) => Err(RuntimeError::Shutdown { backend, source }),
    }
}
