//! Tasks from the client's side: create (one or a batch), read, list with filters and sorts, cancel.

use aiopslab_core::{
    BatchSpec, CancelOutcome, Page, StoreError, StoreResult, Task, TaskFilter, TaskId, TaskPage, TaskSort, TaskSpec,
    TaskStatus,
};

use crate::rows::{task_status, TaskRow};
use crate::sql;
use crate::PgStore;

pub(crate) fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl PgStore {
    /// Inserts one pending task (sharing the statement with concurrent creates).
    #[tracing::instrument(skip_all, fields(problem_id = %spec.problem_id))]
    pub(crate) async fn insert_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        let task = self
            .coalesced(&self.inner.creates, spec, PgStore::flush_creates, PgStore::keep)
            .await?;
        tracing::debug!(task_id = %task.id, "task created");
        Ok(task)
    }

    /// Writes one batch of single creates: one statement for all, then one announcement. A spec the database
    /// refuses must not sink the others, so on a refusal each spec is retried alone.
    async fn flush_creates(self, specs: Vec<TaskSpec>) -> Vec<StoreResult<Task>> {
        let n = specs.len();
        let batch = BatchSpec::ungrouped(specs);
        let result = self.insert_unkeyed(&batch).await;
        match result {
            Ok(tasks) => tasks.into_iter().map(Ok).collect(),
            Err(StoreError::Invalid(_)) if n > 1 => {
                let mut results = Vec::with_capacity(n);
                for spec in batch.specs {
                    let alone = BatchSpec::ungrouped(vec![spec]);
                    results.push(self.insert_unkeyed(&alone).await.and_then(|mut tasks| {
                        tasks
                            .pop()
                            .ok_or_else(|| StoreError::Internal("a created task was not returned".into()))
                    }));
                }
                results
            }
            Err(error) => vec![Err(error); n],
        }
    }

    /// Inserts a batch of pending tasks in one statement (all or none), returned in the order given.
    #[tracing::instrument(skip_all, fields(count = specs.len()))]
    pub(crate) async fn insert_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        let created = self.insert_batch(BatchSpec::ungrouped(specs), None).await?;
        Ok(created.tasks)
    }

    /// Reads one task.
    pub(crate) async fn select_task(&self, id: TaskId) -> StoreResult<Task> {
        let mut conn = self.conn("get_task").await?;
        let result: Result<Option<TaskRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_TASK)
            .bind(id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("get_task", result)?;
        row.ok_or_else(|| StoreError::task_not_found(id))?.try_into()
    }

    /// Lists one page of tasks and the total that matched (see the `totals` module for how it is counted).
    pub(crate) async fn select_tasks(&self, filter: &TaskFilter, sort: TaskSort, page: Page) -> StoreResult<TaskPage> {
        let sql = sql::list_tasks(filter, sort);
        let values: Vec<&str> = [
            filter.problem_id.as_deref(),
            filter.worker_id.as_deref(),
            filter.backend_type.as_deref(),
            filter.experiment.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();

        let mut page_query = sqlx::query_as::<_, TaskRow>(&sql.page);
        for value in &values {
            page_query = page_query.bind(*value);
        }
        if let Some(group_id) = filter.group_id {
            page_query = page_query.bind(group_id);
        }
        let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
        let mut conn = self.conn("list_tasks").await?;
        let rows = page_query
            .bind(i64::from(page.limit))
            .bind(offset)
            .fetch_all(conn.raw())
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => return conn.done("list_tasks", Err(error)),
        };
        // Tasks on a page prove that at least offset + their number match.
        let seen = if rows.is_empty() {
            0
        } else {
            page.offset.saturating_add(rows.len() as u64)
        };
        let total = self.count_total(&mut conn, filter, &sql, &values, seen).await;
        let total = conn.done("list_tasks", total)?;
        Ok(TaskPage {
            tasks: rows.into_iter().map(Task::try_from).collect::<Result<_, _>>()?,
            total: total.n,
            total_is_estimate: total.estimate,
            limit: page.limit,
            offset: page.offset,
        })
    }

    /// Cancels a task: pending → cancelled, running → cancel requested, terminal → refused.
    #[tracing::instrument(skip(self), fields(task_id = %id))]
    pub(crate) async fn cancel(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        let mut conn = self.conn("cancel_task").await?;
        let result: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(sql::CANCEL_TASK)
            .bind(id)
            .fetch_optional(conn.raw())
            .await;
        let changed = conn.done("cancel_task", result)?;
        if let Some(status) = changed {
            return match task_status(&status)? {
                TaskStatus::Cancelled => Ok(CancelOutcome::Cancelled),
                _ => Ok(CancelOutcome::CancelRequested),
            };
        }
        // Nothing changed: the task is unknown or terminal (and terminal is final, so this read cannot race).
        let mut conn = self.conn("cancel_task").await?;
        let result: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(sql::SELECT_TASK_STATUS)
            .bind(id)
            .fetch_optional(conn.raw())
            .await;
        let status = conn.done("cancel_task", result)?;
        match status {
            None => Err(StoreError::task_not_found(id)),
            Some(status) => Err(StoreError::AlreadyTerminal {
                task_id: id,
                status: task_status(&status)?,
            }),
        }
    }

    /// Whether a task exists.
    pub(crate) async fn task_exists(&self, id: TaskId, op: &'static str) -> StoreResult<bool> {
        let mut conn = self.conn(op).await?;
        let result = sqlx::query_scalar(sql::TASK_EXISTS)
            .bind(id)
            .fetch_one(conn.raw())
            .await;
        conn.done(op, result)
    }
}
