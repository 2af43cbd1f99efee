//! Worker writes fenced by the lease token: extending a lease and finishing a task.
//!
//! Each write is an `UPDATE ... WHERE id = $1 AND attempt = $2 AND status = 'running'`. When it changes nothing,
//! a follow-up read tells why: the task does not exist ([`StoreError::NotFound`]), the same finish already landed
//! (an idempotent replay, answered with the task), or the lease is gone ([`StoreError::LeaseLost`]).

use std::collections::HashMap;

use aiopslab_core::{
    LeaseState, LeaseToken, StoreError, StoreResult, Task, TaskId, TaskOutcome, TaskStatus, TerminalStatus,
};
use chrono::{DateTime, Utc};

use crate::final_report::write_in_rounds;
use crate::jsonb::Jsonb;
use crate::rows::TaskRow;
use crate::sql;
use crate::store::Finish;
use crate::PgStore;

/// The lease's attempt as the database stores it.
pub(crate) fn attempt(lease: LeaseToken) -> i32 {
    i32::try_from(lease.attempt).unwrap_or(i32::MAX)
}

fn lease_lost(lease: LeaseToken) -> StoreError {
    StoreError::LeaseLost {
        task_id: lease.task_id,
        attempt: lease.attempt,
    }
}

/// The statement finishing each `(lease, outcome)` (in the order given: task id order keeps concurrent statements
/// locking rows alike); it returns the tasks that changed.
pub(crate) fn finish_many_query<'a>(
    reports: impl ExactSizeIterator<Item = (LeaseToken, &'a TaskOutcome)>,
) -> sqlx::query::QueryAs<'a, sqlx::Postgres, TaskRow, sqlx::postgres::PgArguments> {
    let n = reports.len();
    let (mut ids, mut attempts, mut statuses) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut results, mut errors) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (lease, outcome) in reports {
        ids.push(lease.task_id);
        attempts.push(attempt(lease));
        statuses.push(TaskStatus::from(outcome.status).as_str());
        results.push(outcome.result.as_ref().map(Jsonb));
        errors.push(outcome.error.as_ref().map(Jsonb));
    }
    sqlx::query_as::<_, TaskRow>(sql::FINISH_MANY)
        .bind(ids)
        .bind(attempts)
        .bind(statuses)
        .bind(results)
        .bind(errors)
}

impl PgStore {
    /// Extends the lease of one running task.
    #[tracing::instrument(skip(self), fields(task_id = %lease.task_id, attempt = lease.attempt))]
    pub(crate) async fn extend(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        let mut conn = self.conn("extend_lease").await?;
        let result: Result<Option<(DateTime<Utc>, bool)>, sqlx::Error> = sqlx::query_as(sql::EXTEND_LEASE)
            .bind(lease.task_id)
            .bind(attempt(lease))
            .bind(self.intervals().lease)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("extend_lease", result)?;
        match row {
            Some((lease_expires_at, cancel_requested)) => Ok(LeaseState {
                lease_expires_at,
                cancel_requested,
            }),
            None => Err(self.why_not_held(lease, "extend_lease").await),
        }
    }

    /// Fails with `LeaseLost` unless the lease is held (`NotFound` for an unknown task).
    pub(crate) async fn check_lease(&self, lease: LeaseToken, op: &'static str) -> StoreResult<()> {
        let mut conn = self.conn(op).await?;
        let result: Result<bool, sqlx::Error> = sqlx::query_scalar(sql::LEASE_HELD)
            .bind(lease.task_id)
            .bind(attempt(lease))
            .fetch_one(conn.raw())
            .await;
        let held = conn.done(op, result)?;
        if held {
            Ok(())
        } else {
            Err(self.why_not_held(lease, op).await)
        }
    }

    /// The error for a fenced write that changed nothing: `NotFound` or `LeaseLost`.
    pub(crate) async fn why_not_held(&self, lease: LeaseToken, op: &'static str) -> StoreError {
        match self.task_exists(lease.task_id, op).await {
            Ok(true) => lease_lost(lease),
            Ok(false) => StoreError::task_not_found(lease.task_id),
            Err(e) => e,
        }
    }

    /// Finishes a running task (or requeues a failed one with retries left) and counts it for its worker, sharing
    /// the statement with concurrent finishes.
    #[tracing::instrument(skip(self, outcome), fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?outcome.status))]
    pub(crate) async fn finish_task(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let reported_status = outcome.status;
        let error = outcome.error.clone();
        let changed = self
            .coalesced(
                &self.inner.finishes,
                (lease, outcome),
                PgStore::flush_finishes,
                PgStore::keep,
            )
            .await?;
        if let Some(task) = changed {
            tracing::debug!(status = %task.status, "task finished");
            return Ok(task);
        }
        self.finish_not_applied(lease, reported_status, error.as_ref()).await
    }

    /// Why a finish changed nothing: an unknown task (`NotFound`), a replay of a finish that already landed (the
    /// task, unchanged), or a lost lease (`LeaseLost`).
    pub(crate) async fn finish_not_applied(
        &self,
        lease: LeaseToken,
        reported_status: TerminalStatus,
        error: Option<&aiopslab_core::ErrorDetails>,
    ) -> StoreResult<Task> {
        let status = TaskStatus::from(reported_status);
        let task = self.select_task(lease.task_id).await?;
        let replay = task.attempt == lease.attempt
            && (task.status == status
                || (reported_status == TerminalStatus::Failed
                    && task.status == TaskStatus::Pending
                    && task.error_details.as_ref() == error));
        if replay {
            tracing::debug!(status = %task.status, "finish replayed; already recorded");
            Ok(task)
        } else {
            Err(lease_lost(lease))
        }
    }

    /// Writes one batch of finishes: `Some(task)` for each that changed, `None` for each whose lease was not held
    /// (the caller finds out why). A task reported twice in the batch goes into a second statement, so each
    /// statement names a task once; a refusal by the database is retried report by report, so one bad report does
    /// not sink the others.
    async fn flush_finishes(self, finishes: Vec<Finish>) -> Vec<StoreResult<Option<Task>>> {
        let ids: Vec<TaskId> = finishes.iter().map(|(lease, _)| lease.task_id).collect();
        write_in_rounds(&ids, |indices| self.finish_round(&finishes, indices)).await
    }

    /// One finish statement for the reports at `indices` (no task twice), written in task id order so concurrent
    /// statements lock rows in the same order. Returns the tasks that changed.
    async fn finish_round(&self, finishes: &[Finish], mut order: Vec<usize>) -> StoreResult<HashMap<TaskId, Task>> {
        order.sort_by_key(|&i| finishes[i].0.task_id);
        let query = finish_many_query(order.iter().map(|&i| (finishes[i].0, &finishes[i].1)));
        let mut conn = self.conn_planning_per_run("finish").await?;
        let result = query.fetch_all(conn.raw()).await;
        let rows = conn.done("finish", result)?;
        rows.into_iter()
            .map(|row| Task::try_from(row).map(|task| (task.id, task)))
            .collect()
    }
}
