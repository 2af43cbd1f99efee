//! The sweep: timeouts, expired leases (requeue or fail), silent workers; and the fold of the task counts.
//!
//! Each step is one conditional bulk `UPDATE`. Rows are locked with `FOR UPDATE SKIP LOCKED` and re-checked
//! against the condition, so when several server replicas sweep at once every row changes exactly once and each
//! sweeper reports only the ids it changed; a row a worker is finishing right now is left for the next round.

use aiopslab_core::{StoreResult, SweepReport, TaskStatus};
use uuid::Uuid;

use crate::rows::task_status;
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// One pass of housekeeping.
    #[tracing::instrument(skip(self))]
    pub(crate) async fn sweep_once(&self) -> StoreResult<SweepReport> {
        let intervals = self.intervals();
        let mut conn = self.conn("sweep").await?;
        let result: Result<Vec<Uuid>, sqlx::Error> = sqlx::query_scalar(sql::SWEEP_TIMEOUTS)
            .bind(intervals.timeout_grace)
            .fetch_all(conn.raw())
            .await;
        let mut report = SweepReport::default();
        report.timed_out = conn.done("sweep", result)?;
        let mut conn = self.conn("sweep").await?;
        let result: Result<Vec<(Uuid, String)>, sqlx::Error> =
            sqlx::query_as(sql::SWEEP_EXPIRED_LEASES).fetch_all(conn.raw()).await;
        let lost = conn.done("sweep", result)?;
        for (id, status) in lost {
            match task_status(&status)? {
                TaskStatus::Pending => report.requeued.push(id),
                TaskStatus::Failed => report.failed.push(id),
                // Cancelled: its client asked to stop it and its worker is gone.
                _ => tracing::info!(task_id = %id, "lease expired on a task with a cancel request; cancelled"),
            }
        }
        let mut conn = self.conn("sweep").await?;
        let result = sqlx::query_scalar(sql::SWEEP_WORKERS)
            .bind(intervals.worker_offline_after)
            .fetch_all(conn.raw())
            .await;
        report.workers_offline = conn.done("sweep", result)?;
        // Housekeeping of the maintained task counts; a failure here changes no task, so it is logged, not raised.
        if let Err(error) = self.fold_task_counts().await {
            tracing::warn!(%error, "folding the task counts failed; the next sweep tries again");
        }
        report.timed_out.sort();
        report.requeued.sort();
        report.failed.sort();
        report.workers_offline.sort();
        if !report.is_empty() {
            tracing::info!(
                timed_out = report.timed_out.len(),
                requeued = report.requeued.len(),
                failed = report.failed.len(),
                workers_offline = report.workers_offline.len(),
                "sweep changed state"
            );
        }
        Ok(report)
    }
}
