//! [`MemoryStore`]: the embedded default store, all state in memory. It
//! implements every role, so it is a full [`TaskStore`](crate::TaskStore).
//!
//! It keeps every rule of the trait (atomic conditional transitions, lease
//! tokens, retries, sweeps) so a single process can run the server and its
//! workers with no database, and so tests of everything above the store run
//! fast. Nothing survives a restart: use `PgStore` for a durable queue.
//!
//! One mutex guards the whole state; every call locks it once, reads the
//! store's clock, applies one transition from [`state`] and unlocks, never
//! holding it across an `.await`. Clones share the same state.
//!
//! Time comes from the store's clock ([`clock`]): wall-clock time at
//! construction moved along by tokio's clock, so tests with a paused tokio
//! clock (or [`MemoryStore::advance_clock`]) drive leases, timeouts and
//! worker liveness without sleeping.
//!
//! Batches, their groups, their idempotency keys and the webhook outbox
//! ([`outbox`]) live under the same lock, so a batch is created whole or not
//! at all, a key is recorded with the tasks it created, a delivery is written
//! in the same step as the terminal status it reports, and an aborted group
//! member's replacement (see [`crate::group`]) in the same step as the abort,
//! whichever transition made it (a finish, a sweep, a takeover).
//!
//! Experiments ([`Experiments`]) live under the same lock too: a claim reads an
//! experiment's limit and its running count and starts the task in one step, so
//! racing claimers can never overshoot a limit.
//!
//! Everything it keeps is [sanitized](crate::sanitize) on the way in, as
//! every store does, so it answers exactly what a durable store would.
//!
//! Memory is bounded by [`MemoryOptions::max_finished_tasks`] (10,000 by
//! default): past it, the tasks that finished first are dropped with what
//! their runs wrote; pending and running tasks are always kept.
//!
//! [`WorkerQueue::subscribe`] pushes the wake-ups of every transition (a task
//! became claimable, a client asked to cancel a running task), sent under the
//! lock right after the transition, so an idle in-process worker claims a
//! new task, and stops a cancelled run, at once rather than at its next poll
//! or heartbeat.

mod clock;
mod options;
mod outbox;
mod state;

pub use options::MemoryOptions;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use crate::events::StoreEvent;
use crate::experiment::{validate_experiment_name, Experiment, ExperimentSettings};
use crate::export::Episode;
use crate::log::{LogEntry, LogQuery, NewLogEntry};
use crate::policy::LeasePolicy;
use crate::query::{StoreStats, SweepReport, TaskPage, WorkerFilter, WorkerPage};
use crate::sanitize::{nul_free, sanitized, sanitized_ref};
use crate::store::{
    ClaimRequest, EpisodeExport, Experiments, ExportRequest, FinalReport, FinalReports, FleetView, Housekeeping,
    LeaseState, StoreResult, TaskApi, TaskQuery, WebhookOutbox, WorkerQueue,
};
use crate::task::{CancelOutcome, LeaseToken, Task, TaskId, TaskOutcome, TaskSpec};
use crate::trajectory::Trajectory;
use crate::webhook::{WebhookAttemptReport, WebhookDelivery};
use crate::worker::{HeartbeatAck, Worker, WorkerHeartbeat, WorkerRegistration};
use clock::StoreClock;
use state::State;

/// The embedded, in-memory [`TaskStore`](crate::TaskStore). Cheap to clone: clones share state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    clock: StoreClock,
    policy: LeasePolicy,
    events: broadcast::Sender<StoreEvent>,
}

/// How many wake-ups a slow subscriber may fall behind before it is told it
/// lagged (and checks the queue itself).
const EVENT_BUFFER: usize = 1024;

/// The locked state. Dropping it pushes the wake-ups its transition
/// produced, still under the lock, so subscribers see them in order.
struct Locked<'a> {
    state: MutexGuard<'a, State>,
    events: &'a broadcast::Sender<StoreEvent>,
}

impl Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for event in self.state.take_events() {
            // No subscriber is not an error: the event is simply not needed.
            let _ = self.events.send(event);
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default [`LeasePolicy`].
    pub fn new() -> Self {
        Self::with_policy(LeasePolicy::default())
    }

    /// An empty store enforcing `policy`, with the default [`MemoryOptions`].
    pub fn with_policy(policy: LeasePolicy) -> Self {
        Self::with_options(policy, MemoryOptions::default())
    }

    /// An empty store enforcing `policy`, keeping what `options` allow.
    pub fn with_options(policy: LeasePolicy, options: MemoryOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(options.max_finished_tasks)),
                clock: StoreClock::new(),
                policy,
                events: broadcast::channel(EVENT_BUFFER).0,
            }),
        }
    }

    /// The lease and liveness timings this store enforces.
    pub fn policy(&self) -> LeasePolicy {
        self.inner.policy
    }

    /// The store's current time: what it stamps on tasks, logs and workers.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Moves this store's clock forward by `by`, on top of tokio's clock.
    ///
    /// For tests and simulations on runtimes whose clock cannot be paused
    /// (multi-threaded ones); with a paused tokio clock,
    /// `tokio::time::advance` moves the store's time as well.
    pub fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    /// Locks the state and reads the clock under the lock, so timestamps
    /// follow the order in which calls take effect.
    fn lock(&self) -> (Locked<'_>, DateTime<Utc>) {
        // A panic cannot interrupt a transition half-way (they only touch
        // memory), so a poisoned lock still guards consistent state.
        let state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.inner.clock.now();
        let locked = Locked {
            state,
            events: &self.inner.events,
        };
        (locked, now)
    }
}

#[async_trait]
impl WorkerQueue for MemoryStore {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        // Refuse what validation refuses (a NUL in the id or backend type) before rewriting the rest.
        registration.validate()?;
        let registration = sanitized(registration);
        let (mut state, now) = self.lock();
        let worker = state.register_worker(registration, &self.inner.policy, now)?;
        tracing::debug!(worker_id = %worker.id, backend_type = %worker.backend_type, "worker registered");
        Ok(worker)
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let (mut state, now) = self.lock();
        state.heartbeat(heartbeat, &self.inner.policy, now)
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.lock().0.deregister_worker(&nul_free(worker_id))?;
        tracing::debug!(worker_id, "worker deregistered");
        Ok(())
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        request.validate()?;
        let request = sanitized_ref(request);
        let (mut state, now) = self.lock();
        let claimed = state.claim(&request, &self.inner.policy, now)?;
        if let Some(task) = &claimed {
            tracing::debug!(task_id = %task.id, worker_id = %request.worker_id, attempt = task.attempt, "task claimed");
        }
        Ok(claimed)
    }

    /// Up to `max_tasks` claims under one lock.
    async fn claim_many(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        request.validate()?;
        let request = sanitized_ref(request);
        let (mut state, now) = self.lock();
        let mut claimed = Vec::new();
        while claimed.len() < request.max_tasks as usize {
            let Some(task) = state.claim(&request, &self.inner.policy, now)? else {
                break;
            };
            tracing::debug!(task_id = %task.id, worker_id = %request.worker_id, attempt = task.attempt, "task claimed");
            claimed.push(task);
            if request.task_id.is_some() {
                break;
            }
        }
        Ok(claimed)
    }

    fn final_reports(&self) -> Option<&dyn FinalReports> {
        Some(self)
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let (mut state, now) = self.lock();
        state.extend_lease(lease, &self.inner.policy, now)
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        let entries = sanitized(entries);
        let (mut state, now) = self.lock();
        state.append_logs(lease, entries, now)
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        let trajectory = sanitized(trajectory);
        let (mut state, now) = self.lock();
        state.save_trajectory(lease, trajectory, now)
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let outcome = sanitized(outcome);
        let (mut state, now) = self.lock();
        let task = state.finish(lease, outcome, now)?;
        tracing::debug!(
            task_id = %task.id,
            worker_id = task.worker_id.as_deref().unwrap_or(""),
            attempt = lease.attempt,
            status = %task.status,
            "task finished"
        );
        Ok(task)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.inner.events.subscribe())
    }
}

/// Logs, trajectory and finish under one lock: nothing else sees a state in between.
#[async_trait]
impl FinalReports for MemoryStore {
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        let FinalReport {
            logs,
            trajectory,
            outcome,
        } = sanitized(report);
        let (mut state, now) = self.lock();
        // Not held: `finish` tells a replay (acknowledged again, nothing appended) from a lost lease.
        if state.holds(lease) {
            state.append_logs(lease, logs, now)?;
            if let Some(trajectory) = trajectory {
                state.save_trajectory(lease, trajectory, now)?;
            }
        }
        let task = state.finish(lease, outcome, now)?;
        tracing::debug!(task_id = %task.id, attempt = lease.attempt, status = %task.status, "run reported");
        Ok(task)
    }
}

#[async_trait]
impl TaskApi for MemoryStore {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        let mut created = self.create_tasks(vec![spec]).await?;
        created
            .pop()
            .ok_or_else(|| crate::error::StoreError::Internal("creating one task returned none".into()))
    }

    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        let specs = sanitized(specs);
        let (mut state, now) = self.lock();
        let created = state.create(specs, None, now);
        for task in &created {
            tracing::debug!(task_id = %task.id, problem_id = %task.problem_id, "task created");
        }
        Ok(created)
    }

    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        let (batch, idempotency) = (sanitized(batch), sanitized(idempotency));
        let (mut state, now) = self.lock();
        let created = state.create_batch(batch, idempotency, now)?;
        tracing::debug!(
            group_id = ?created.group_id,
            count = created.tasks.len(),
            replayed = created.replayed,
            "batch created"
        );
        Ok(created)
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        self.lock().0.get(id)
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        Ok(self
            .lock()
            .0
            .list(&sanitized_ref(&query.filter), query.sort, query.page))
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        let (mut state, now) = self.lock();
        let outcome = state.cancel(id, now)?;
        tracing::debug!(task_id = %id, ?outcome, "task cancel");
        Ok(outcome)
    }

    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.lock().0.get_logs(task_id, query)
    }

    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        self.lock().0.get_trajectory(task_id)
    }

    async fn get_group(&self, group_id: crate::batch::GroupId) -> StoreResult<Option<crate::group::Group>> {
        Ok(self.lock().0.get_group(group_id))
    }

    fn experiments(&self) -> Option<&dyn Experiments> {
        Some(self)
    }
}

/// Limits and counts under the store's one lock, read by every claim in the same step as it starts a task.
#[async_trait]
impl Experiments for MemoryStore {
    async fn set_experiment(&self, name: &str, settings: ExperimentSettings) -> StoreResult<Experiment> {
        validate_experiment_name("name", name)?;
        settings.validate()?;
        let experiment = self.lock().0.set_experiment(name, settings);
        tracing::debug!(experiment = name, max_running = ?settings.max_running, "experiment set");
        Ok(experiment)
    }

    async fn get_experiment(&self, name: &str) -> StoreResult<Experiment> {
        validate_experiment_name("name", name)?;
        self.lock().0.get_experiment(name)
    }

    async fn list_experiments(&self) -> StoreResult<Vec<Experiment>> {
        Ok(self.lock().0.list_experiments())
    }
}

#[async_trait]
impl FleetView for MemoryStore {
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        self.lock().0.get_worker(&nul_free(worker_id))
    }

    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        Ok(self.lock().0.list_workers(&sanitized_ref(filter)))
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        Ok(self.lock().0.stats())
    }
}

#[async_trait]
impl Housekeeping for MemoryStore {
    async fn sweep(&self) -> StoreResult<SweepReport> {
        let (mut state, now) = self.lock();
        Ok(state.sweep(&self.inner.policy, now))
    }
}

#[async_trait]
impl EpisodeExport for MemoryStore {
    async fn export_episodes(&self, request: &ExportRequest) -> StoreResult<Vec<Episode>> {
        Ok(self
            .lock()
            .0
            .export(&sanitized_ref(&request.filter), request.after, request.limit))
    }
}

#[async_trait]
impl WebhookOutbox for MemoryStore {
    async fn claim_webhooks(&self, limit: u32, lease: Duration) -> StoreResult<Vec<WebhookDelivery>> {
        let (mut state, now) = self.lock();
        Ok(state.outbox.claim(limit, lease, now))
    }

    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        let report = sanitized(report);
        let (mut state, now) = self.lock();
        let delivery = state.outbox.record(delivery_id, report, now)?;
        tracing::debug!(
            task_id = %delivery.task_id,
            delivery_id,
            status = ?delivery.status,
            attempts = delivery.attempts.len(),
            "webhook attempt recorded"
        );
        Ok(delivery)
    }

    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        let state = self.lock().0;
        state.get(task_id)?;
        Ok(state.outbox.list(task_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_clock_drives_the_store() {
        let store = MemoryStore::new();
        store
            .register_worker(WorkerRegistration::new("w", "default"))
            .await
            .unwrap();
        let created = store.create_task(NewTask::new("p").validate().unwrap()).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        let claimed = store.claim(&ClaimRequest::new("w", "default")).await.unwrap().unwrap();
        assert_eq!(
            claimed.started_at.unwrap() - created.created_at,
            chrono::TimeDelta::seconds(30)
        );
    }

    #[test]
    fn clones_share_state() {
        let store = MemoryStore::new();
        assert_eq!(store.policy(), LeasePolicy::default());
        let clone = store.clone();
        assert!(Arc::ptr_eq(&store.inner, &clone.inner));
    }

    #[tokio::test]
    async fn pushes_new_work_requeues_and_cancels_of_running_tasks() {
        let store = MemoryStore::new();
        let mut events = store.subscribe().expect("the memory store pushes events");
        let available = |backend: &str| StoreEvent::TaskAvailable {
            backend_type: backend.to_string(),
        };
        let spec = |backend: &str| {
            NewTask {
                backend_type: Some(backend.into()),
                max_retries: Some(1),
                ..NewTask::new("p")
            }
            .validate()
            .unwrap()
        };
        // A batch of two backend types: one event per type, not per task.
        store
            .create_tasks(vec![spec("default"), spec("default"), spec("gpu")])
            .await
            .unwrap();
        assert_eq!(events.try_recv().unwrap(), available("default"));
        assert_eq!(events.try_recv().unwrap(), available("gpu"));
        assert!(events.try_recv().is_err(), "one event per backend type");

        store
            .register_worker(WorkerRegistration::new("w", "default"))
            .await
            .unwrap();
        let claimed = store.claim(&ClaimRequest::new("w", "default")).await.unwrap().unwrap();
        assert!(events.try_recv().is_err(), "a claim announces nothing");
        store.cancel_task(claimed.id).await.unwrap();
        assert_eq!(
            events.try_recv().unwrap(),
            StoreEvent::CancelRequested { task_id: claimed.id }
        );

        // A failed run with a retry left is claimable again.
        let retried = store.claim(&ClaimRequest::new("w", "default")).await.unwrap().unwrap();
        let failed = crate::task::TaskOutcome {
            status: crate::task::TerminalStatus::Failed,
            result: None,
            error: None,
        };
        assert_eq!(
            store.finish(retried.lease_token(), failed).await.unwrap().status,
            crate::task::TaskStatus::Pending
        );
        assert_eq!(events.try_recv().unwrap(), available("default"));
    }
}
