//! [`TaskApi`]: what a client of the task API needs from the store.

use async_trait::async_trait;

use super::StoreResult;
use crate::batch::{BatchSpec, CreatedBatch, GroupId, IdempotencyKey};
use crate::group::Group;
use crate::log::{LogEntry, LogQuery};
use crate::query::{Page, TaskFilter, TaskPage, TaskSort};
use crate::task::{CancelOutcome, Task, TaskId, TaskSpec};
use crate::trajectory::Trajectory;

/// One listing of [`TaskApi::list_tasks`]: which tasks, in which order,
/// which page. Build it with [`TaskQuery::new`] (non-exhaustive: it may gain
/// fields).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskQuery {
    /// Every given field must match.
    pub filter: TaskFilter,
    /// The order; ties break on id so pages are stable.
    pub sort: TaskSort,
    /// The window.
    pub page: Page,
}

impl TaskQuery {
    /// Tasks matching `filter`, in the default order (newest first), first page.
    pub fn new(filter: TaskFilter) -> Self {
        Self {
            filter,
            ..Self::default()
        }
    }

    /// The same query in `sort` order.
    pub fn sorted(mut self, sort: TaskSort) -> Self {
        self.sort = sort;
        self
    }

    /// The same query, this page.
    pub fn page(mut self, page: Page) -> Self {
        self.page = page;
        self
    }
}

/// The client side of the store: create tasks (one, many, a batch with an
/// idempotency key), read them, list them, cancel them, read their logs and
/// trajectories. The HTTP router serves it under
/// `/tasks`.
///
/// Rules: creations are atomic (all of a batch or none); a group member that
/// aborts for good gets its replacement, when its group asks for one, in the
/// same atomic step as the abort, whichever call made it (see
/// [`crate::group`]); what is persisted
/// is [sanitized](crate::sanitize) on the way in; a task that reaches a
/// terminal status with a `callback_url` has a delivery in the store's
/// outbox from the same atomic step (see [`WebhookOutbox`](super::WebhookOutbox)).
/// Checked by the task-API conformance suite (`testkit`,
/// `task_api_conformance_suite!`).
#[async_trait]
pub trait TaskApi: Send + Sync + 'static {
    /// Inserts a new `pending` task.
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task>;

    /// Inserts several tasks atomically: all of them or none.
    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>>;

    /// Inserts `batch.specs` as pending tasks of group `batch.group_id`, in
    /// order, atomically: all of them or none.
    ///
    /// With an `idempotency` key the key is recorded in the same atomic step
    /// as the tasks. A later call with the same key and the same fingerprint
    /// creates nothing and returns the tasks the first call created, in their
    /// current state and first order, with `replayed = true`; the same key
    /// with a different fingerprint fails with
    /// [`StoreError::IdempotencyConflict`](crate::StoreError::IdempotencyConflict). Two concurrent calls with one key
    /// create the tasks once: the other call replays (or conflicts). Keys are
    /// kept for the life of the store (they do not expire).
    /// [`create_tasks`](Self::create_tasks) is this with no group and no key.
    async fn create_batch(&self, batch: BatchSpec, idempotency: Option<IdempotencyKey>) -> StoreResult<CreatedBatch>;

    /// Reads one task; [`StoreError::NotFound`](crate::StoreError::NotFound) when unknown.
    async fn get_task(&self, id: TaskId) -> StoreResult<Task>;

    /// Lists tasks matching `query.filter`, sorted by `query.sort`, one
    /// page (`query.page`), with the total count.
    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage>;

    /// Cancels a task: pending → `cancelled` at once; running → cancel
    /// requested (the worker stops it); terminal → [`StoreError::AlreadyTerminal`](crate::StoreError::AlreadyTerminal).
    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome>;

    /// Reads a task's log in append order; [`StoreError::NotFound`](crate::StoreError::NotFound) for an unknown task.
    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>>;

    /// Reads a task's trajectory; `Ok(None)` when the task exists but has none.
    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>>;

    /// Reads what the store keeps of a batch group: its size, `min_valid`, `max_refills` and the refills used
    /// (see [`crate::group`]); `Ok(None)` when it keeps no such group (no batch made it, or a PostgreSQL batch
    /// made it before groups were recorded). Its tasks are listed with a group filter.
    async fn get_group(&self, group_id: GroupId) -> StoreResult<Option<Group>>;

    /// The [`Experiments`](super::Experiments) capability (experiments' limits and counts), when this store has
    /// it. `None`, the default: every experiment is unlimited.
    fn experiments(&self) -> Option<&dyn super::Experiments> {
        None
    }
}
