//! Task logs: batches appended in one round trip under the lease, read back in append order.

use aiopslab_core::{LeaseToken, LogEntry, LogQuery, NewLogEntry, StoreError, StoreResult, TaskId};

use crate::jsonb::Jsonb;
use crate::lease::attempt;
use crate::rows::{levels_at_least, LogRow};
use crate::sql;
use crate::PgStore;

/// The statement appending `entries` to the task under `lease`; it inserts nothing unless the lease is held.
pub(crate) fn append_logs_query<'a>(lease: LeaseToken, entries: Vec<NewLogEntry>) -> PgQuery<'a> {
    let mut levels = Vec::with_capacity(entries.len());
    let mut messages = Vec::with_capacity(entries.len());
    let mut contexts = Vec::with_capacity(entries.len());
    for entry in entries {
        levels.push(entry.level.as_str());
        messages.push(entry.message);
        contexts.push(Jsonb(entry.context));
    }
    sqlx::query(sql::APPEND_LOGS)
        .bind(lease.task_id)
        .bind(attempt(lease))
        .bind(levels)
        .bind(messages)
        .bind(contexts)
}

/// A statement with its bound arguments.
pub(crate) type PgQuery<'a> = sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl PgStore {
    /// Appends a batch of entries to a running task, in order, in one statement that also checks the lease.
    #[tracing::instrument(skip(self, entries), fields(task_id = %lease.task_id, attempt = lease.attempt, count = entries.len()))]
    pub(crate) async fn insert_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        if entries.is_empty() {
            return self.check_lease(lease, "append_logs").await;
        }
        let mut conn = self.conn("append_logs").await?;
        let result = append_logs_query(lease, entries).execute(conn.raw()).await;
        let inserted = conn.done("append_logs", result)?.rows_affected();
        if inserted == 0 {
            return Err(self.why_not_held(lease, "append_logs").await);
        }
        Ok(())
    }

    /// Reads a task's log in append order with the query's filters.
    pub(crate) async fn select_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        let limit = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut conn = self.conn("get_logs").await?;
        let result: Result<Vec<LogRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_LOGS)
            .bind(task_id)
            .bind(levels_at_least(query.min_level))
            .bind(query.since)
            .bind(query.after_id.unwrap_or(0))
            .bind(limit)
            .fetch_all(conn.raw())
            .await;
        let rows = conn.done("get_logs", result)?;
        if rows.is_empty() && !self.task_exists(task_id, "get_logs").await? {
            return Err(StoreError::task_not_found(task_id));
        }
        rows.into_iter().map(LogEntry::try_from).collect()
    }
}
