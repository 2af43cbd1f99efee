//! Worker writes fenced by the lease token: extending a lease and finishing a task.
//!
//! Each write is an `UPDATE ... WHERE id = $1 AND attempt = $2 AND status = 'running'`. When it changes nothing,
//! a follow-up read tells why: the task does not exist ([`StoreError::NotFound`]), the same finish already landed
//! (an idempotent replay, answered with the task), or the lease is gone ([`StoreError::LeaseLost`]).

use aiopslab_core::{LeaseState, LeaseToken, StoreError, StoreResult, Task, TaskOutcome, TaskStatus, TerminalStatus};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use crate::rows::TaskRow;
use crate::sql;
use crate::PgStore;

fn attempt(lease: LeaseToken) -> i32 {
    i32::try_from(lease.attempt).unwrap_or(i32::MAX)
}

fn lease_lost(lease: LeaseToken) -> StoreError {
    StoreError::LeaseLost {
        task_id: lease.task_id,
        attempt: lease.attempt,
    }
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

    /// Finishes a running task (or requeues a failed one with retries left) and counts it for its worker.
    #[tracing::instrument(skip(self, outcome), fields(task_id = %lease.task_id, attempt = lease.attempt, status = ?outcome.status))]
    pub(crate) async fn finish_task(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        let status = TaskStatus::from(outcome.status);
        let error = outcome.error.clone();
        let mut conn = self.conn("finish").await?;
        let result: Result<Option<TaskRow>, sqlx::Error> = sqlx::query_as(sql::FINISH_TASK)
            .bind(lease.task_id)
            .bind(attempt(lease))
            .bind(status.as_str())
            .bind(outcome.result.map(Json))
            .bind(outcome.error.map(Json))
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("finish", result)?;
        if let Some(row) = row {
            let task = Task::try_from(row)?;
            tracing::debug!(status = %task.status, "task finished");
            return Ok(task);
        }
        // Nothing changed: unknown task, a replay of a finish that already landed, or a lost lease.
        let task = self.select_task(lease.task_id).await?;
        let replay = task.attempt == lease.attempt
            && (task.status == status
                || (outcome.status == TerminalStatus::Failed
                    && task.status == TaskStatus::Pending
                    && task.error_details == error));
        if replay {
            tracing::debug!(status = %task.status, "finish replayed; already recorded");
            Ok(task)
        } else {
            Err(lease_lost(lease))
        }
    }
}
