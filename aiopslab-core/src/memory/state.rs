//! The data a [`MemoryStore`](super::MemoryStore) holds and every transition on it.
//!
//! Everything here is synchronous and takes the current time as an argument:
//! the store locks the state, reads its clock once, and calls one method, so
//! each [`TaskStore`](crate::TaskStore) call is a single atomic step. Pending
//! tasks are also kept in an ordered index per backend type and experiment
//! (priority desc, then created_at, then id), so a claim reads the head of each
//! experiment's queue instead of scanning every task, and picks among those
//! heads by priority, then by whose turn it is (see [`Rotation`](crate::rotation::Rotation)).

use chrono::{DateTime, Utc};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::clock::{earlier, later};
use super::outbox::Outbox;
use crate::batch::{BatchSpec, CreatedBatch, GroupId, IdempotencyKey};
use crate::error::StoreError;
use crate::events::StoreEvent;
use crate::experiment::{Experiment, ExperimentSettings};
use crate::export::{model_of, Episode, ExportCursor, ExportFilter};
use crate::group::Group;
use crate::log::{LogEntry, LogQuery, NewLogEntry};
use crate::policy::LeasePolicy;
use crate::query::{Page, StoreStats, SweepReport, TaskFilter, TaskPage, TaskSort, WorkerFilter, WorkerPage};
use crate::rotation::Rotation;
use crate::store::{ClaimRequest, LeaseState, StoreResult};
use crate::task::{
    CancelOutcome, ErrorDetails, LeaseToken, Task, TaskId, TaskOutcome, TaskSpec, TaskStatus, TerminalStatus,
};
use crate::trajectory::Trajectory;
use crate::worker::{HeartbeatAck, Worker, WorkerHeartbeat, WorkerRegistration, WorkerStatus};

/// One task with what its runs wrote.
#[derive(Debug)]
struct TaskRecord {
    task: Task,
    logs: Vec<LogEntry>,
    trajectory: Option<Trajectory>,
}

/// Position of a pending task in its backend type's queue: the claim order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PendingKey {
    priority: Reverse<u8>,
    created_at: DateTime<Utc>,
    id: TaskId,
}

impl PendingKey {
    fn of(task: &Task) -> Self {
        Self {
            priority: Reverse(task.parameters.priority),
            created_at: task.created_at,
            id: task.id,
        }
    }
}

/// The pending tasks of one backend type: one queue per experiment (`None`: the tasks without one), each in
/// claim order.
type Classes = HashMap<Option<String>, BTreeSet<PendingKey>>;

/// Every task, log, trajectory and worker of one store.
#[derive(Debug, Default)]
pub(crate) struct State {
    tasks: HashMap<TaskId, TaskRecord>,
    /// Pending tasks per backend type and experiment, in claim order.
    pending: HashMap<String, Classes>,
    /// Ids of running tasks (for heartbeats and sweeps).
    running: BTreeSet<TaskId>,
    /// Running tasks per experiment (those without one are not counted).
    running_by_experiment: HashMap<String, u64>,
    /// The experiments an operator configured, and their limits.
    experiments: BTreeMap<String, ExperimentSettings>,
    /// Whose turn it is among the experiments.
    rotation: Rotation,
    workers: BTreeMap<String, Worker>,
    last_log_id: i64,
    /// Tasks that have a trajectory, in export order.
    exportable: BTreeSet<(DateTime<Utc>, TaskId)>,
    /// Idempotency keys of batch creations, kept for the life of the store.
    idempotency: HashMap<String, IdempotentBatch>,
    /// Batch groups (policy, refills used, members in creation order), kept for the life of the store.
    groups: HashMap<GroupId, GroupRecord>,
    /// Webhook deliveries of terminal tasks.
    pub(crate) outbox: Outbox,
    /// Wake-ups the last transition produced, for the store to push once it
    /// has applied it (see [`State::take_events`]).
    events: Vec<StoreEvent>,
    /// Terminal tasks in the order they ended, the first to be dropped first.
    finished: VecDeque<TaskId>,
    /// Most terminal tasks kept (`None`: all), see
    /// [`MemoryOptions::max_finished_tasks`](super::MemoryOptions::max_finished_tasks).
    max_finished: Option<usize>,
}

/// A batch group: what it asks and has used, and its members (replacements included), oldest first.
#[derive(Debug)]
struct GroupRecord {
    group: Group,
    members: Vec<TaskId>,
}

/// What a batch created under an idempotency key.
#[derive(Debug)]
struct IdempotentBatch {
    fingerprint: String,
    group_id: Option<GroupId>,
    task_ids: Vec<TaskId>,
}

impl State {
    /// An empty state keeping at most `max_finished` terminal tasks.
    pub(crate) fn new(max_finished: Option<usize>) -> Self {
        Self {
            max_finished,
            ..Self::default()
        }
    }

    /// What every transition to a terminal status does once the task is
    /// updated: its webhook delivery, and the retention bound.
    fn ended(&mut self, task: &Task, now: DateTime<Utc>) {
        self.outbox.enqueue(task, now);
        // A client that asked to cancel a run wants no replacement of it.
        if task.status == TaskStatus::Failed && !task.cancel_requested {
            self.refill(task, now);
        }
        self.finished.push_back(task.id);
        let Some(max) = self.max_finished else {
            return;
        };
        while self.finished.len() > max {
            let Some(id) = self.finished.pop_front() else {
                break;
            };
            self.evict(id);
        }
    }

    /// A group member that has just aborted for good: its replacement, when its group still needs one and has
    /// refills left (the rule of [`Group::needs_refill`]). Members the retention bound dropped count as gone.
    fn refill(&mut self, aborted: &Task, now: DateTime<Utc>) {
        let Some(record) = aborted.group_id.and_then(|id| self.groups.get(&id)) else {
            return;
        };
        let members = record
            .members
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .map(|r| &r.task);
        if !record.group.needs_refill(members) {
            return;
        }
        let replacement = Task::replacement(aborted, now);
        if let Some(record) = aborted.group_id.and_then(|id| self.groups.get_mut(&id)) {
            record.group.refills += 1;
            record.members.push(replacement.id);
        }
        tracing::debug!(task_id = %replacement.id, replaces = %aborted.id, "aborted group member refilled");
        self.insert_pending(replacement);
    }

    /// What the store keeps of a group.
    pub(crate) fn get_group(&self, group_id: GroupId) -> Option<Group> {
        self.groups.get(&group_id).map(|record| record.group)
    }

    /// Drops a terminal task and everything its runs wrote.
    fn evict(&mut self, id: TaskId) {
        let Some(record) = self.tasks.remove(&id) else {
            return;
        };
        self.exportable.remove(&(record.task.created_at, id));
        self.outbox.forget(id);
        tracing::debug!(task_id = %id, "finished task dropped (memory store retention)");
    }

    fn index_pending(&mut self, task: &Task) {
        self.announce(StoreEvent::TaskAvailable {
            backend_type: task.parameters.backend_type.clone(),
        });
        self.pending
            .entry(task.parameters.backend_type.clone())
            .or_default()
            .entry(task.experiment.clone())
            .or_default()
            .insert(PendingKey::of(task));
    }

    fn unindex_pending(&mut self, task: &Task) {
        let Some(classes) = self.pending.get_mut(&task.parameters.backend_type) else {
            return;
        };
        if let Some(queue) = classes.get_mut(&task.experiment) {
            queue.remove(&PendingKey::of(task));
            if queue.is_empty() {
                classes.remove(&task.experiment);
            }
        }
        if classes.is_empty() {
            self.pending.remove(&task.parameters.backend_type);
        }
    }

    /// Whether a task of `experiment` may start now: it has no experiment, or its experiment runs fewer tasks
    /// than its limit (an experiment no one configured is unlimited).
    fn has_room(&self, experiment: &Option<String>) -> bool {
        let Some(name) = experiment else {
            return true;
        };
        match self.experiments.get(name).and_then(|settings| settings.max_running) {
            None => true,
            Some(max) => self.running_by_experiment.get(name).copied().unwrap_or(0) < u64::from(max),
        }
    }

    /// Marks a task running (it was pending and unindexed).
    fn start_running(&mut self, id: TaskId, experiment: &Option<String>) {
        self.running.insert(id);
        if let Some(name) = experiment {
            *self.running_by_experiment.entry(name.clone()).or_default() += 1;
        }
        self.rotation.serve(experiment);
    }

    /// Forgets a task as running (it finished, was requeued or timed out).
    fn stop_running(&mut self, id: TaskId) {
        if !self.running.remove(&id) {
            return;
        }
        let Some(name) = self.tasks.get(&id).and_then(|record| record.task.experiment.clone()) else {
            return;
        };
        if let Some(count) = self.running_by_experiment.get_mut(&name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running_by_experiment.remove(&name);
            }
        }
    }

    /// Inserts a batch under an optional idempotency key: a known key with the same fingerprint replays what it
    /// created, with a different one it is refused; a new key is recorded with the tasks.
    pub(crate) fn create_batch(
        &mut self,
        batch: BatchSpec,
        idempotency: Option<IdempotencyKey>,
        now: DateTime<Utc>,
    ) -> StoreResult<CreatedBatch> {
        if let Some(key) = &idempotency {
            if let Some(earlier) = self.idempotency.get(&key.key) {
                if earlier.fingerprint != key.fingerprint {
                    return Err(StoreError::IdempotencyConflict { key: key.key.clone() });
                }
                // Tasks dropped by the retention bound since are gone from the replay too.
                let tasks = earlier.task_ids.iter().filter_map(|id| self.get(*id).ok()).collect();
                return Ok(CreatedBatch {
                    group_id: earlier.group_id,
                    tasks,
                    replayed: true,
                });
            }
        }
        let tasks = self.create(batch.specs, batch.group_id, now);
        if let Some(group_id) = batch.group_id {
            let size = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
            self.groups.insert(
                group_id,
                GroupRecord {
                    group: batch.policy.group(group_id, size),
                    members: tasks.iter().map(|task| task.id).collect(),
                },
            );
        }
        if let Some(key) = idempotency {
            self.idempotency.insert(
                key.key,
                IdempotentBatch {
                    fingerprint: key.fingerprint,
                    group_id: batch.group_id,
                    task_ids: tasks.iter().map(|task| task.id).collect(),
                },
            );
        }
        Ok(CreatedBatch {
            group_id: batch.group_id,
            tasks,
            replayed: false,
        })
    }

    /// Inserts every spec as a new pending task of `group_id`, in order.
    pub(crate) fn create(&mut self, specs: Vec<TaskSpec>, group_id: Option<GroupId>, now: DateTime<Utc>) -> Vec<Task> {
        let mut created = Vec::with_capacity(specs.len());
        for spec in specs {
            let task = Task::pending(spec, group_id, now);
            self.insert_pending(task.clone());
            created.push(task);
        }
        created
    }

    /// Inserts a new pending task into the queue.
    fn insert_pending(&mut self, task: Task) {
        self.index_pending(&task);
        self.tasks.insert(
            task.id,
            TaskRecord {
                task,
                logs: Vec::new(),
                trajectory: None,
            },
        );
    }

    fn record(&self, id: TaskId) -> StoreResult<&TaskRecord> {
        self.tasks.get(&id).ok_or_else(|| StoreError::task_not_found(id))
    }

    /// Reads one task.
    pub(crate) fn get(&self, id: TaskId) -> StoreResult<Task> {
        self.record(id).map(|record| record.task.clone())
    }

    /// One sorted, filtered page of tasks and the total that matched.
    pub(crate) fn list(&self, filter: &TaskFilter, sort: TaskSort, page: Page) -> TaskPage {
        let mut matched: Vec<&Task> = self
            .tasks
            .values()
            .map(|record| &record.task)
            .filter(|task| {
                filter.status.is_none_or(|status| task.status == status)
                    && filter.problem_id.as_ref().is_none_or(|p| &task.problem_id == p)
                    && filter
                        .worker_id
                        .as_ref()
                        .is_none_or(|w| task.worker_id.as_ref() == Some(w))
                    && filter
                        .backend_type
                        .as_ref()
                        .is_none_or(|b| &task.parameters.backend_type == b)
                    && filter.group_id.is_none_or(|g| task.group_id == Some(g))
                    && filter
                        .experiment
                        .as_ref()
                        .is_none_or(|e| task.experiment.as_ref() == Some(e))
            })
            .collect();
        let total = matched.len() as u64;
        let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
        // Only the first `offset + limit` in order matter: partition them out
        // in linear time and sort just those, so a page of a large queue does
        // not cost a full sort.
        let wanted = offset.saturating_add(page.limit as usize);
        if wanted < matched.len() {
            matched.select_nth_unstable_by(wanted, |a, b| compare(sort, a, b));
            matched.truncate(wanted);
        }
        matched.sort_unstable_by(|a, b| compare(sort, a, b));
        let tasks = matched.into_iter().skip(offset).cloned().collect();
        TaskPage {
            tasks,
            total,
            // Every match was counted.
            total_is_estimate: false,
            limit: page.limit,
            offset: page.offset,
        }
    }

    /// Cancels a pending task at once, or asks the worker of a running one to stop.
    pub(crate) fn cancel(&mut self, id: TaskId, now: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        let task = self.record(id)?.task.clone();
        match task.status {
            TaskStatus::Pending => {
                self.unindex_pending(&task);
                let task = &mut self.record_mut(id)?.task;
                task.status = TaskStatus::Cancelled;
                task.completed_at = Some(now);
                task.updated_at = now;
                let task = task.clone();
                self.ended(&task, now);
                Ok(CancelOutcome::Cancelled)
            }
            TaskStatus::Running => {
                let task = &mut self.record_mut(id)?.task;
                task.cancel_requested = true;
                task.updated_at = now;
                self.announce(StoreEvent::CancelRequested { task_id: id });
                Ok(CancelOutcome::CancelRequested)
            }
            status => Err(StoreError::AlreadyTerminal { task_id: id, status }),
        }
    }

    /// Records a wake-up once per transition (a batch of 1,000 tasks of one
    /// backend type is one `TaskAvailable`).
    fn announce(&mut self, event: StoreEvent) {
        if !self.events.contains(&event) {
            self.events.push(event);
        }
    }

    /// The wake-ups of the transitions applied since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<StoreEvent> {
        std::mem::take(&mut self.events)
    }

    fn record_mut(&mut self, id: TaskId) -> StoreResult<&mut TaskRecord> {
        self.tasks.get_mut(&id).ok_or_else(|| StoreError::task_not_found(id))
    }

    /// Moves the best matching claimable pending task to running for this worker, which must be registered and
    /// live.
    pub(crate) fn claim(
        &mut self,
        request: &ClaimRequest,
        policy: &LeasePolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Task>> {
        request.validate()?;
        let worker = self
            .workers
            .get(&request.worker_id)
            .ok_or_else(|| StoreError::worker_not_found(&request.worker_id))?;
        if worker.status == WorkerStatus::Offline || worker.last_heartbeat < earlier(now, policy.worker_offline_after) {
            return Err(StoreError::worker_offline(
                &request.worker_id,
                policy.worker_offline_after,
            ));
        }
        Ok(self.claim_for(request, policy, now))
    }

    /// [`claim`](Self::claim) once the worker is known to be live.
    fn claim_for(&mut self, request: &ClaimRequest, policy: &LeasePolicy, now: DateTime<Utc>) -> Option<Task> {
        let cutoff = earlier(now, policy.dispatch_delay);
        let fits = |task: &Task| {
            task.status == TaskStatus::Pending
                && task.parameters.backend_type == request.backend_type
                && task.created_at <= cutoff
                && request
                    .supported_problems
                    .as_ref()
                    .is_none_or(|problems| problems.iter().any(|p| p == &task.problem_id))
        };
        let id = match request.task_id {
            Some(id) => self
                .tasks
                .get(&id)
                .filter(|record| fits(&record.task) && self.has_room(&record.task.experiment))
                .map(|_| id)?,
            None => {
                // The head of each experiment's queue that may start, then the best of those heads: highest
                // priority, then the class served least recently, then the oldest.
                self.pending
                    .get(&request.backend_type)?
                    .iter()
                    .filter(|(class, _)| self.has_room(class))
                    .filter_map(|(class, queue)| {
                        let head = queue
                            .iter()
                            .find(|key| self.tasks.get(&key.id).is_some_and(|record| fits(&record.task)))?;
                        Some((head.priority, self.rotation.turn(class), head.created_at, head.id))
                    })
                    .min()?
                    .3
            }
        };
        let snapshot = self.tasks.get(&id)?.task.clone();
        self.unindex_pending(&snapshot);
        self.start_running(id, &snapshot.experiment);
        let task = &mut self.tasks.get_mut(&id)?.task;
        task.start(&request.worker_id, now, later(now, policy.lease_duration));
        Some(task.clone())
    }

    /// The record a lease token proves the caller holds: running under that attempt.
    /// True while the task runs under this lease.
    pub(crate) fn holds(&mut self, lease: LeaseToken) -> bool {
        self.leased(lease).is_ok()
    }

    fn leased(&mut self, lease: LeaseToken) -> StoreResult<&mut TaskRecord> {
        let record = self.record_mut(lease.task_id)?;
        if record.task.status == TaskStatus::Running && record.task.attempt == lease.attempt {
            Ok(record)
        } else {
            Err(StoreError::LeaseLost {
                task_id: lease.task_id,
                attempt: lease.attempt,
            })
        }
    }

    /// Extends the lease of one running task.
    pub(crate) fn extend_lease(
        &mut self,
        lease: LeaseToken,
        policy: &LeasePolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<LeaseState> {
        let task = &mut self.leased(lease)?.task;
        let expiry = later(now, policy.lease_duration);
        task.lease_expires_at = Some(expiry);
        task.updated_at = now;
        Ok(LeaseState {
            lease_expires_at: expiry,
            cancel_requested: task.cancel_requested,
        })
    }

    /// Appends log entries to a running task, assigning increasing ids.
    pub(crate) fn append_logs(
        &mut self,
        lease: LeaseToken,
        entries: Vec<NewLogEntry>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut next_id = self.last_log_id;
        let record = self.leased(lease)?;
        record.logs.reserve(entries.len());
        for entry in entries {
            next_id += 1;
            record.logs.push(LogEntry {
                id: next_id,
                task_id: lease.task_id,
                timestamp: now,
                level: entry.level,
                message: entry.message,
                context: entry.context,
            });
        }
        self.last_log_id = next_id;
        Ok(())
    }

    /// Reads a task's log through the query's filters, in append order.
    pub(crate) fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        let record = self.record(task_id)?;
        Ok(record
            .logs
            .iter()
            .filter(|entry| {
                query.min_level.is_none_or(|level| entry.level >= level)
                    && query.since.is_none_or(|since| entry.timestamp >= since)
                    && query.after_id.is_none_or(|after| entry.id > after)
            })
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    /// Replaces the trajectory of a running task.
    pub(crate) fn save_trajectory(
        &mut self,
        lease: LeaseToken,
        mut trajectory: Trajectory,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let record = self.leased(lease)?;
        trajectory.task_id = lease.task_id;
        record.trajectory = Some(trajectory);
        record.task.updated_at = now;
        let key = (record.task.created_at, record.task.id);
        self.exportable.insert(key);
        Ok(())
    }

    /// Reads a task's trajectory.
    pub(crate) fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        Ok(self.record(task_id)?.trajectory.clone())
    }

    /// One export page: tasks with a trajectory matching `filter`, in `(created_at, id)` order after `after`.
    /// The trajectories come without their `llm_calls`, as the trait documents.
    pub(crate) fn export(&self, filter: &ExportFilter, after: Option<ExportCursor>, limit: u32) -> Vec<Episode> {
        use std::ops::Bound;
        let start = match (after, filter.created_after) {
            (Some(cursor), Some(from)) if from > cursor.created_at => Bound::Included((from, TaskId::nil())),
            (Some(cursor), _) => Bound::Excluded((cursor.created_at, cursor.id)),
            (None, Some(from)) => Bound::Included((from, TaskId::nil())),
            (None, None) => Bound::Unbounded,
        };
        self.exportable
            .range((start, Bound::Unbounded))
            .take_while(|(created_at, _)| filter.created_before.is_none_or(|before| *created_at < before))
            .filter_map(|(_, id)| self.tasks.get(id))
            .filter(|record| exportable(&record.task, filter))
            .filter_map(|record| {
                let trajectory = record.trajectory.as_ref()?;
                Some(Episode {
                    task: record.task.clone(),
                    trajectory: Trajectory {
                        task_id: trajectory.task_id,
                        messages: trajectory.messages.clone(),
                        llm_calls: Vec::new(),
                        reward: trajectory.reward,
                        evaluation: trajectory.evaluation.clone(),
                        metadata: trajectory.metadata.clone(),
                        outcome: None,
                        model_version: None,
                    },
                })
            })
            .take(limit as usize)
            .collect()
    }

    /// Records a worker's report: terminal status, or a requeue for a failure with retries left.
    pub(crate) fn finish(&mut self, lease: LeaseToken, outcome: TaskOutcome, now: DateTime<Utc>) -> StoreResult<Task> {
        let record = self.record(lease.task_id)?;
        let reported = TaskStatus::from(outcome.status);
        let current = &record.task;
        if current.status != TaskStatus::Running || current.attempt != lease.attempt {
            // A replay of a finish that already landed is acknowledged again, unchanged: the same
            // terminal status, or the requeue of the same failure (as PgStore tells it).
            let requeued_by_it = outcome.status == TerminalStatus::Failed
                && current.status == TaskStatus::Pending
                && current.error_details == outcome.error;
            if current.attempt == lease.attempt && (current.status == reported || requeued_by_it) {
                return Ok(current.clone());
            }
            return Err(StoreError::LeaseLost {
                task_id: lease.task_id,
                attempt: lease.attempt,
            });
        }
        let worker_id = current.worker_id.clone();
        let requeue = outcome.status == TerminalStatus::Failed
            && current.attempt <= current.parameters.max_retries
            && !current.cancel_requested;
        self.stop_running(lease.task_id);
        let task = &mut self.record_mut(lease.task_id)?.task;
        task.lease_expires_at = None;
        task.updated_at = now;
        task.error_details = outcome.error;
        if requeue {
            task.status = TaskStatus::Pending;
            task.worker_id = None;
            task.started_at = None;
            task.cancel_requested = false;
        } else {
            task.status = reported;
            task.result = outcome.result;
            task.completed_at = Some(now);
        }
        let task = task.clone();
        if requeue {
            self.index_pending(&task);
        } else {
            self.ended(&task, now);
        }
        if let Some(worker) = worker_id.and_then(|id| self.workers.get_mut(&id)) {
            match outcome.status {
                TerminalStatus::Completed => worker.tasks_completed += 1,
                TerminalStatus::Failed | TerminalStatus::Timeout => worker.tasks_failed += 1,
                TerminalStatus::Cancelled => {}
            }
        }
        Ok(task)
    }

    /// Registers a worker, or replaces one that is offline or silent past the threshold.
    pub(crate) fn register_worker(
        &mut self,
        registration: WorkerRegistration,
        policy: &LeasePolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<Worker> {
        registration.validate()?;
        let alive_since = earlier(now, policy.worker_offline_after);
        let (tasks_completed, tasks_failed) = match self.workers.get(&registration.id) {
            Some(existing) if existing.status != WorkerStatus::Offline && existing.last_heartbeat >= alive_since => {
                match takeover(existing, &registration) {
                    Takeover::Refused => return Err(StoreError::WorkerAlive(registration.id)),
                    Takeover::SameInstance => {}
                    Takeover::From(previous) => {
                        for id in self.running_under(&registration.id) {
                            let attempt = self.tasks.get(&id).map_or(0, |record| record.task.attempt);
                            let details = restarted(&registration, &previous, attempt);
                            self.release(id, Release::Lost(details), now);
                        }
                    }
                }
                let existing = &self.workers[&registration.id];
                (existing.tasks_completed, existing.tasks_failed)
            }
            Some(existing) => (existing.tasks_completed, existing.tasks_failed),
            None => (0, 0),
        };
        let worker = Worker::registered(registration, (tasks_completed, tasks_failed), now);
        self.workers.insert(worker.id.clone(), worker.clone());
        Ok(worker)
    }

    /// Records a sign of life and extends the leases of the worker's running tasks.
    pub(crate) fn heartbeat(
        &mut self,
        heartbeat: &WorkerHeartbeat,
        policy: &LeasePolicy,
        now: DateTime<Utc>,
    ) -> StoreResult<HeartbeatAck> {
        heartbeat.validate()?;
        let worker = self
            .workers
            .get_mut(&heartbeat.worker_id)
            .ok_or_else(|| StoreError::worker_not_found(&heartbeat.worker_id))?;
        if let (Some(ours), Some(current)) = (&heartbeat.instance_id, &worker.instance_id) {
            if ours != current {
                return Err(StoreError::WorkerSuperseded {
                    worker_id: heartbeat.worker_id.clone(),
                    current_instance: current.clone(),
                });
            }
        }
        worker.status = heartbeat.status;
        worker.current_task_id = heartbeat.current_task_id;
        worker.last_heartbeat = now;
        let expiry = later(now, policy.lease_duration);
        let mut leased_any = false;
        let mut cancelled_task_ids = Vec::new();
        let mut requeued_task_ids = Vec::new();
        let under = self.running_under(&heartbeat.worker_id);
        let lost_task_ids: Vec<TaskId> = heartbeat
            .running_task_ids
            .iter()
            .flatten()
            .filter(|id| !under.contains(id))
            .copied()
            .collect();
        for id in under {
            if let Some(held) = &heartbeat.running_task_ids {
                if !held.contains(&id) {
                    let details = not_held(&heartbeat.worker_id);
                    if self.release(id, Release::NotHeld(details), now).is_some() {
                        requeued_task_ids.push(id);
                    }
                    continue;
                }
            }
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            let task = &mut record.task;
            task.lease_expires_at = Some(expiry);
            task.updated_at = now;
            leased_any = true;
            if task.cancel_requested {
                cancelled_task_ids.push(task.id);
            }
        }
        Ok(HeartbeatAck {
            acknowledged: true,
            cancelled_task_ids,
            lease_expires_at: leased_any.then_some(expiry),
            next_task: None,
            requeued_task_ids,
            lost_task_ids,
        })
    }

    /// Takes a running task away from its worker: `Release::NotHeld` puts it
    /// back in the queue whatever its retries (it never ran), `Release::Lost`
    /// requeues it while retries remain and fails it otherwise. Either way a
    /// task a client asked to cancel becomes `cancelled` instead. Returns the
    /// status it ended in; `None` if it was not running.
    fn release(&mut self, id: TaskId, release: Release, now: DateTime<Utc>) -> Option<TaskStatus> {
        let task = &mut self.tasks.get_mut(&id)?.task;
        if task.status != TaskStatus::Running {
            return None;
        }
        let (details, retry) = match release {
            Release::NotHeld(details) => (details, true),
            Release::Lost(details) => (details, task.attempt <= task.parameters.max_retries),
        };
        if task.cancel_requested {
            task.status = TaskStatus::Cancelled;
            task.completed_at = Some(now);
        } else {
            task.error_details = Some(details);
            if retry {
                task.status = TaskStatus::Pending;
                task.worker_id = None;
                task.started_at = None;
            } else {
                task.status = TaskStatus::Failed;
                task.completed_at = Some(now);
            }
        }
        task.lease_expires_at = None;
        task.updated_at = now;
        let task = task.clone();
        self.stop_running(id);
        if task.status == TaskStatus::Pending {
            self.index_pending(&task);
        } else {
            self.ended(&task, now);
        }
        Some(task.status)
    }

    /// The running tasks held under a worker id.
    fn running_under(&self, worker_id: &str) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .running
            .iter()
            .copied()
            .filter(|id| {
                self.tasks
                    .get(id)
                    .is_some_and(|record| record.task.worker_id.as_deref() == Some(worker_id))
            })
            .collect();
        ids.sort();
        ids
    }

    /// Marks a worker offline.
    pub(crate) fn deregister_worker(&mut self, worker_id: &str) -> StoreResult<()> {
        let worker = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| StoreError::worker_not_found(worker_id))?;
        worker.status = WorkerStatus::Offline;
        worker.current_task_id = None;
        Ok(())
    }

    /// Reads one worker.
    pub(crate) fn get_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        self.workers
            .get(worker_id)
            .cloned()
            .ok_or_else(|| StoreError::worker_not_found(worker_id))
    }

    /// The workers matching `filter`, by id.
    pub(crate) fn list_workers(&self, filter: &WorkerFilter) -> WorkerPage {
        let workers: Vec<Worker> = self
            .workers
            .values()
            .filter(|worker| {
                filter.status.is_none_or(|status| worker.status == status)
                    && filter.backend_type.as_ref().is_none_or(|b| &worker.backend_type == b)
            })
            .cloned()
            .collect();
        WorkerPage {
            total: workers.len() as u64,
            workers,
        }
    }

    /// Times out overdue tasks, requeues or fails expired leases, marks silent workers offline.
    pub(crate) fn sweep(&mut self, policy: &LeasePolicy, now: DateTime<Utc>) -> SweepReport {
        let mut report = SweepReport::default();
        let running: Vec<TaskId> = self.running.iter().copied().collect();
        for id in running {
            let Some(record) = self.tasks.get_mut(&id) else {
                continue;
            };
            let task = &mut record.task;
            let limit = std::time::Duration::from_secs(u64::from(task.parameters.timeout_minutes) * 60);
            let started_at = task.started_at.unwrap_or(task.updated_at);
            let deadline = later(later(started_at, limit), policy.timeout_grace);
            let lease_expired = task.lease_expires_at.is_some_and(|expiry| expiry < now);
            if now > deadline {
                task.status = TaskStatus::Timeout;
                task.error_details = Some(ErrorDetails::new(
                    "timeout",
                    format!(
                        "the run exceeded its {}-minute limit and no worker reported an outcome",
                        task.parameters.timeout_minutes
                    ),
                ));
                task.completed_at = Some(now);
                report.timed_out.push(id);
            } else if lease_expired {
                let details = ErrorDetails::new(
                    "worker_lost",
                    format!(
                        "worker {} stopped renewing its lease on attempt {}",
                        task.worker_id.as_deref().unwrap_or("unknown"),
                        task.attempt
                    ),
                );
                match self.release(id, Release::Lost(details), now) {
                    Some(TaskStatus::Pending) => report.requeued.push(id),
                    Some(TaskStatus::Failed) => report.failed.push(id),
                    _ => {}
                }
                continue;
            } else {
                continue;
            }
            task.lease_expires_at = None;
            task.updated_at = now;
            let task = task.clone();
            self.stop_running(id);
            self.ended(&task, now);
        }
        let silent_since = earlier(now, policy.worker_offline_after);
        for worker in self.workers.values_mut() {
            if worker.status != WorkerStatus::Offline && worker.last_heartbeat < silent_since {
                worker.status = WorkerStatus::Offline;
                report.workers_offline.push(worker.id.clone());
            }
        }
        report
    }

    /// Counts per status (every status present) and queue depth per backend type.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            tasks_by_status: TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect(),
            workers_by_status: WorkerStatus::ALL.into_iter().map(|s| (s, 0)).collect(),
            ..StoreStats::default()
        };
        for record in self.tasks.values() {
            *stats.tasks_by_status.entry(record.task.status).or_default() += 1;
        }
        for (backend_type, classes) in &self.pending {
            stats.queue_depth_by_backend.insert(
                backend_type.clone(),
                classes.values().map(|queue| queue.len() as u64).sum(),
            );
        }
        for worker in self.workers.values() {
            *stats.workers_by_status.entry(worker.status).or_default() += 1;
        }
        stats
    }
}

/// Experiments: their limits and counts.
impl State {
    /// Sets an experiment's limit (it takes effect at the next claim).
    pub(crate) fn set_experiment(&mut self, name: &str, settings: ExperimentSettings) -> Experiment {
        self.experiments.insert(name.to_string(), settings);
        self.experiment(name)
    }

    /// One experiment: configured, or with pending or running tasks.
    pub(crate) fn get_experiment(&self, name: &str) -> StoreResult<Experiment> {
        let experiment = self.experiment(name);
        if self.experiments.contains_key(name) || experiment.running > 0 || experiment.pending > 0 {
            Ok(experiment)
        } else {
            Err(StoreError::NotFound {
                entity: "experiment",
                id: name.to_string(),
            })
        }
    }

    /// Every experiment configured or with pending or running tasks, by name.
    pub(crate) fn list_experiments(&self) -> Vec<Experiment> {
        let mut names: BTreeSet<&str> = self.experiments.keys().map(String::as_str).collect();
        names.extend(self.running_by_experiment.keys().map(String::as_str));
        for classes in self.pending.values() {
            names.extend(classes.keys().flatten().map(String::as_str));
        }
        names.into_iter().map(|name| self.experiment(name)).collect()
    }

    /// An experiment's limit and counts now.
    fn experiment(&self, name: &str) -> Experiment {
        let class = Some(name.to_string());
        Experiment {
            name: name.to_string(),
            max_running: self.experiments.get(name).and_then(|settings| settings.max_running),
            running: self.running_by_experiment.get(name).copied().unwrap_or(0),
            pending: self
                .pending
                .values()
                .filter_map(|classes| classes.get(&class))
                .map(|queue| queue.len() as u64)
                .sum(),
        }
    }
}

/// Whether a task passes an export filter (the creation range is applied by the caller's walk).
fn exportable(task: &Task, filter: &ExportFilter) -> bool {
    filter.status.is_none_or(|status| task.status == status)
        && filter
            .problem_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == &task.problem_id))
        && filter
            .model
            .as_deref()
            .is_none_or(|model| model_of(task) == Some(model))
        && filter.metadata.as_ref().is_none_or(|(key, value)| {
            task.parameters.metadata.get(key).and_then(serde_json::Value::as_str) == Some(value.as_str())
        })
        && filter.admits_labels(task)
}

/// The order of `GET /tasks`; ties break on id so pages are stable: `-created_at`
/// is the exact reverse of `created_at` (id descending), the others end on id ascending.
fn compare(sort: TaskSort, a: &Task, b: &Task) -> Ordering {
    let by_priority = a.parameters.priority.cmp(&b.parameters.priority);
    let by_age = a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id));
    match sort {
        TaskSort::CreatedAsc => by_age,
        TaskSort::CreatedDesc => by_age.reverse(),
        TaskSort::PriorityAsc => by_priority.then(by_age),
        TaskSort::PriorityDesc => by_priority.reverse().then(by_age),
    }
}

/// How [`State::release`] treats the task's retries.
enum Release {
    /// The worker does not hold it (its claim reply never arrived): it never
    /// ran, so it goes back to the queue whatever its retries.
    NotHeld(ErrorDetails),
    /// Its run was lost (lease expired, worker restarted): requeued while
    /// retries remain.
    Lost(ErrorDetails),
}

/// What a registration of a live worker id does.
enum Takeover {
    /// Refused: no instance ids to tell the registrations apart.
    Refused,
    /// The same instance registering again: nothing changes hands.
    SameInstance,
    /// Another instance takes the id over from this one.
    From(String),
}

/// Decides what a registration does to the live registration `existing`.
fn takeover(existing: &Worker, registration: &WorkerRegistration) -> Takeover {
    match (&existing.instance_id, &registration.instance_id) {
        (Some(previous), Some(new)) if previous == new => Takeover::SameInstance,
        (Some(previous), Some(_)) => Takeover::From(previous.clone()),
        _ => Takeover::Refused,
    }
}

/// The error a task gets when a restarted worker took its id over.
fn restarted(registration: &WorkerRegistration, previous: &str, attempt: u32) -> ErrorDetails {
    ErrorDetails::new(
        "worker_lost",
        format!(
            "worker {} restarted (instance {} replaced {previous}) during attempt {attempt}",
            registration.id,
            registration.instance_id.as_deref().unwrap_or("unknown"),
        ),
    )
}

/// The error a task gets when its worker's heartbeat did not list it.
fn not_held(worker_id: &str) -> ErrorDetails {
    ErrorDetails::new(
        "not_held",
        format!(
            "worker {worker_id}'s heartbeat did not list this task (its claim never reached the worker): \
             handed back to the queue"
        ),
    )
}
