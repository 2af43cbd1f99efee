//! [`PgStore`]: the handle, its construction, and its implementation of every store role, which delegates each
//! operation to the module of its concept (tasks, claim, lease, logs, workers, sweep, stats, listener).
//!
//! Every value is [sanitized](aiopslab_core::sanitize) here, on its way in, exactly as the other stores do it:
//! PostgreSQL's `text` and `jsonb` cannot hold a NUL, and would otherwise refuse the whole write.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopslab_core::sanitize::{nul_free, sanitized, sanitized_ref};
use aiopslab_core::store::prelude::*;
use aiopslab_core::{
    BatchSpec, CancelOutcome, ClaimRequest, CreatedBatch, Episode, HeartbeatAck, IdempotencyKey, LeasePolicy,
    LeaseState, LeaseToken, LogEntry, LogQuery, NewLogEntry, StoreError, StoreEvent, StoreResult, StoreStats,
    SweepReport, Task, TaskId, TaskOutcome, TaskPage, TaskSpec, Trajectory, ValidationError, WebhookAttemptReport,
    WebhookDelivery, Worker, WorkerFilter, WorkerHeartbeat, WorkerPage, WorkerRegistration,
};
use async_trait::async_trait;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::PgPool;

use crate::announce::Announcer;
use crate::coalesce::{BatchCounts, Coalescer};
use crate::config::{PgStoreOptions, MIGRATOR};
use crate::connections::{Conn, Connections, Plans};
use crate::error::map_sqlx;
use crate::listener::Listener;

/// A full [`TaskStore`] on PostgreSQL (every role: worker queue, task API, fleet view, housekeeping, export,
/// webhook outbox): a durable queue with leases and LISTEN/NOTIFY wake-ups.
///
/// Cheap to clone (clones share the connections and the listener). Every method is one conditional statement (or,
/// for reads, a couple of plain queries), so several server replicas can share one database.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use aiopslab_core::{LeasePolicy, NewTask, TaskApi};
/// use aiopslab_postgres::PgStore;
///
/// let store = PgStore::connect("postgres://postgres@127.0.0.1/aiopslab_tasks", LeasePolicy::default()).await?;
/// store.migrate().await?;
/// let task = store.create_task(NewTask::new("misconfig_app_hotel_res-detection-1").validate()?).await?;
/// # let _ = task;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    connections: Arc<Connections>,
    policy: LeasePolicy,
    intervals: Intervals,
    listener: Mutex<Option<Listener>>,
    announcer: Announcer,
    coalesce_writes: bool,
    pub(crate) exact_count_limit: u64,
    pub(crate) creates: Arc<Coalescer<TaskSpec, Task>>,
    pub(crate) claims: Arc<Coalescer<ClaimRequest, Vec<Task>>>,
    pub(crate) finishes: Arc<Coalescer<Finish, Option<Task>>>,
    pub(crate) final_reports: Arc<Coalescer<(LeaseToken, aiopslab_core::FinalReport), Option<Task>>>,
    /// Whose turn it is among the experiments, for this store's claims (see the `claim` module).
    pub(crate) rotation: Mutex<aiopslab_core::rotation::Rotation>,
    /// Claim statements of this store running now (see the `claim` module).
    pub(crate) claims_in_flight: std::sync::atomic::AtomicUsize,
}

/// One finish report: the lease it is fenced by and the outcome.
pub(crate) type Finish = (LeaseToken, TaskOutcome);

/// How many statements the store's coalesced writes ran and how many calls they carried, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBatches {
    /// `create_task` calls.
    pub creates: BatchCounts,
    /// `claim` calls without a task id.
    pub claims: BatchCounts,
    /// `finish` calls.
    pub finishes: BatchCounts,
    /// `finish_run` calls (final reports: logs, trajectory and finish of a run).
    pub final_reports: BatchCounts,
}

/// The policy's durations as SQL intervals, converted once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Intervals {
    pub(crate) lease: PgInterval,
    pub(crate) worker_offline_after: PgInterval,
    pub(crate) timeout_grace: PgInterval,
    pub(crate) dispatch_delay: PgInterval,
}

fn interval(field: &str, duration: Duration) -> Result<PgInterval, StoreError> {
    PgInterval::try_from(duration)
        .map_err(|_| StoreError::Invalid(ValidationError::new(field, "duration too large for the database")))
}

impl Intervals {
    fn new(policy: &LeasePolicy) -> Result<Self, StoreError> {
        Ok(Self {
            lease: interval("lease_duration", policy.lease_duration)?,
            worker_offline_after: interval("worker_offline_after", policy.worker_offline_after)?,
            timeout_grace: interval("timeout_grace", policy.timeout_grace)?,
            dispatch_delay: interval("dispatch_delay", policy.dispatch_delay)?,
        })
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("policy", &self.inner.policy)
            .field("database", &self.inner.connections.options().get_database())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` with default [`PgStoreOptions`] and checks that the database answers.
    pub async fn connect(url: &str, policy: LeasePolicy) -> StoreResult<Self> {
        Self::connect_with(url, policy, &PgStoreOptions::default()).await
    }

    /// Connects to `url` with `options` and checks that the database answers.
    pub async fn connect_with(url: &str, policy: LeasePolicy, options: &PgStoreOptions) -> StoreResult<Self> {
        let connect = options.connect_options(url).map_err(|e| map_sqlx("connect", e))?;
        let store = Self::from_options(connect, policy, options)?;
        let conn = store.conn("connect").await?;
        drop(conn);
        Ok(store)
    }

    /// A store for the database `connect` points at; connections open on first use.
    pub fn from_options(connect: PgConnectOptions, policy: LeasePolicy, options: &PgStoreOptions) -> StoreResult<Self> {
        let connections = Connections::new(
            connect,
            options.max_connections,
            options.acquire_timeout,
            options.ping_idle_after,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                connections: Arc::new(connections),
                intervals: Intervals::new(&policy)?,
                policy,
                listener: Mutex::new(None),
                announcer: Announcer::new(),
                coalesce_writes: options.coalesce_writes,
                exact_count_limit: options.exact_count_limit,
                creates: Coalescer::new(options.max_batch),
                claims: Coalescer::new(options.max_batch),
                finishes: Coalescer::new(options.max_batch),
                final_reports: Coalescer::new(options.max_batch),
                rotation: Mutex::default(),
                claims_in_flight: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// A store for the database an existing sqlx pool points at, with as many connections as the pool allows.
    /// (The store manages its own connections; see the `connections` module docs for why.)
    pub fn from_pool(pool: &PgPool, policy: LeasePolicy) -> StoreResult<Self> {
        let options = PgStoreOptions {
            max_connections: pool.options().get_max_connections(),
            acquire_timeout: pool.options().get_acquire_timeout(),
            ..PgStoreOptions::default()
        };
        Self::from_options(pool.connect_options().as_ref().clone(), policy, &options)
    }

    /// Runs the embedded migrations (`migrations/*.sql`). Safe on a database where
    /// `001_create_tables.sql` was already applied by hand with `psql`, and safe to run from several replicas.
    pub async fn migrate(&self) -> StoreResult<()> {
        // A one-connection pool just for the migrator (its API takes a pool or an owned connection guard), without
        // the store's statement timeout: a migration that rewrites existing rows (003 splits every stored
        // trajectory) may take minutes on a large database.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "SET statement_timeout = 0").await?;
                    Ok(())
                })
            })
            .connect_with(self.connect_options().clone())
            .await
            .map_err(|e| map_sqlx("migrate", e))?;
        let result = MIGRATOR.run(&pool).await;
        pool.close().await;
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => map_sqlx("migrate", e),
            other => {
                tracing::error!(error = %other, "migration failed");
                StoreError::Internal("database migration failed; see the server log".into())
            }
        })
    }

    /// A dedicated new connection to the store's database, outside its pool (for administration and tests).
    pub async fn connection(&self) -> StoreResult<PgConnection> {
        self.inner.connections.open("connection").await
    }

    /// The connect options of the store's database.
    pub fn connect_options(&self) -> &PgConnectOptions {
        self.inner.connections.options()
    }

    /// The lease policy this store enforces.
    pub fn policy(&self) -> &LeasePolicy {
        &self.inner.policy
    }

    pub(crate) fn intervals(&self) -> &Intervals {
        &self.inner.intervals
    }

    /// A pooled connection for one statement of operation `op`.
    pub(crate) async fn conn(&self, op: &'static str) -> StoreResult<Conn<'_>> {
        self.inner.connections.get(op).await
    }

    /// A pooled connection whose session plans each statement for its actual parameters (see the `connections`
    /// module docs for which statements need it, and why).
    pub(crate) async fn conn_planning_per_run(&self, op: &'static str) -> StoreResult<Conn<'_>> {
        self.inner.connections.get_planning(op, Plans::PerRun).await
    }

    /// A pooled connection whose session plans each statement once, generically, on indexes only (see the
    /// `connections` module docs: the claim's).
    pub(crate) async fn conn_planning_once(&self, op: &'static str) -> StoreResult<Conn<'_>> {
        self.inner.connections.get_planning(op, Plans::Generic).await
    }

    /// Statements run by the coalesced writes so far, and the calls they carried (all zero when
    /// [`PgStoreOptions::coalesce_writes`] is off).
    pub fn write_batches(&self) -> WriteBatches {
        WriteBatches {
            creates: self.inner.creates.counts(),
            claims: self.inner.claims.counts(),
            finishes: self.inner.finishes.counts(),
            final_reports: self.inner.final_reports.counts(),
        }
    }

    /// Runs one call of a coalesced kind: queued on `queue` to share a statement with concurrent calls, or alone
    /// when coalescing is off. `flush` writes a batch and returns one result per item, in order; `orphaned` gets a
    /// successful result whose caller gave up while its shared statement ran.
    pub(crate) async fn coalesced<I, O, F, Fut>(
        &self,
        queue: &Arc<Coalescer<I, O>>,
        item: I,
        flush: F,
        orphaned: fn(&PgStore, O),
    ) -> StoreResult<O>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(PgStore, Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<StoreResult<O>>> + Send + 'static,
    {
        if self.inner.coalesce_writes {
            let (store, owner) = (self.clone(), self.clone());
            queue
                .submit(
                    item,
                    move |items| flush(store.clone(), items),
                    move |value| orphaned(&owner, value),
                )
                .await
        } else {
            flush(self.clone(), vec![item])
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal("a write returned no result".into())))
        }
    }

    /// For writes whose effect stands when their caller gave up (a created task, a recorded finish: a retry is
    /// answered as a replay).
    pub(crate) fn keep<O>(&self, _: O) {}

    /// Wakes listening workers for newly created tasks of these backend types (in the background).
    pub(crate) fn announce<'a>(&self, backend_types: impl IntoIterator<Item = &'a str>) {
        self.inner.announcer.announce(&self.inner.connections, backend_types);
    }

    /// Closes the connections and stops the listener.
    pub async fn close(&self) {
        if let Ok(mut listener) = self.inner.listener.lock() {
            listener.take();
        }
        self.inner.connections.close().await;
    }
}

#[async_trait]
impl WorkerQueue for PgStore {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        // Refuse what validation refuses (a NUL in the id or backend type) before rewriting the rest.
        registration.validate()?;
        self.upsert_worker(sanitized(registration)).await
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        self.beat(heartbeat).await
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.mark_offline(&nul_free(worker_id)).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        Ok(self.claim_tasks(&request.clone().up_to(1)).await?.pop())
    }

    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        self.claim_tasks(request).await
    }

    fn final_reports(&self) -> Option<&dyn aiopslab_core::FinalReports> {
        Some(self)
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        self.extend(lease).await
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        self.insert_logs(lease, sanitized(entries)).await
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        self.upsert_trajectory(lease, sanitized(trajectory)).await
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        self.finish_task(lease, sanitized(outcome)).await
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        let mut guard = self.inner.listener.lock().ok()?;
        if guard.is_none() {
            *guard = Some(Listener::start(self.inner.connections.options())?);
        }
        guard.as_ref().map(Listener::subscribe)
    }
}

#[async_trait]
impl TaskApi for PgStore {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        self.insert_task(sanitized(spec)).await
    }

    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        self.insert_tasks(sanitized(specs)).await
    }

    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        self.insert_batch(sanitized(batch), sanitized(idempotency)).await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        self.select_task(id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        self.select_tasks(&sanitized_ref(&query.filter), query.sort, query.page)
            .await
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        self.cancel(id).await
    }

    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.select_logs(task_id, query).await
    }

    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        self.select_trajectory(task_id).await
    }

    async fn get_group(&self, group_id: aiopslab_core::GroupId) -> StoreResult<Option<aiopslab_core::Group>> {
        self.select_group(group_id).await
    }

    fn experiments(&self) -> Option<&dyn aiopslab_core::Experiments> {
        Some(self)
    }
}

#[async_trait]
impl FleetView for PgStore {
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        self.select_worker(&nul_free(worker_id)).await
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        self.select_workers(&sanitized_ref(filter)).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.count_stats().await
    }
}

#[async_trait]
impl Housekeeping for PgStore {
    async fn sweep(&self) -> StoreResult<SweepReport> {
        self.sweep_once().await
    }
}

#[async_trait]
impl EpisodeExport for PgStore {
    async fn export_episodes(&self, request: &ExportRequest) -> StoreResult<Vec<Episode>> {
        self.export_page(&sanitized_ref(&request.filter), request.after, request.limit)
            .await
    }
}

#[async_trait]
impl WebhookOutbox for PgStore {
    async fn claim_webhooks(&self, limit: u32, lease: Duration) -> StoreResult<Vec<WebhookDelivery>> {
        self.lease_webhooks(limit, lease).await
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        self.record_attempt(delivery_id, sanitized(report)).await
    }

    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        self.task_webhooks(task_id).await
    }
}
