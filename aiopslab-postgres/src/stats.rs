//! Counts for `/stats` and `/metrics`: tasks per status, queue depth per backend type, workers per status.
//!
//! Task counts come from the counts migration 005 maintains (a few rows, whatever the table's size); the fold that
//! keeps their ledger short runs with each sweep ([`PgStore::fold_task_counts`]). Workers are counted from their
//! table, which holds one row per worker.

use aiopslab_core::{StoreResult, StoreStats, TaskStatus, WorkerStatus};

use crate::rows::{task_status, worker_status};
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// Reads the counts; every status is present, zero when none.
    pub(crate) async fn count_stats(&self) -> StoreResult<StoreStats> {
        let mut stats = StoreStats::default();
        for status in TaskStatus::ALL {
            stats.tasks_by_status.insert(status, 0);
        }
        for status in WorkerStatus::ALL {
            stats.workers_by_status.insert(status, 0);
        }
        let mut conn = self.conn("stats").await?;
        let result: Result<Vec<(String, String, i64)>, sqlx::Error> =
            sqlx::query_as(sql::TASK_COUNTS).fetch_all(conn.raw()).await;
        let counts = conn.done("stats", result)?;
        for (status, backend_type, count) in counts {
            let status = task_status(&status)?;
            let count = count.max(0) as u64;
            *stats.tasks_by_status.entry(status).or_default() += count;
            if status == TaskStatus::Pending && count > 0 {
                stats.queue_depth_by_backend.insert(backend_type, count);
            }
        }
        let mut conn = self.conn("stats").await?;
        let result: Result<Vec<(String, i64)>, sqlx::Error> =
            sqlx::query_as(sql::WORKERS_BY_STATUS).fetch_all(conn.raw()).await;
        let workers = conn.done("stats", result)?;
        for (status, count) in workers {
            stats
                .workers_by_status
                .insert(worker_status(&status)?, count.max(0) as u64);
        }
        Ok(stats)
    }

    /// Folds the task-count deltas appended since the last fold into the counts (at most `FOLD_BATCH` per call),
    /// so reading the counts stays a read of a few rows; returns how many deltas it folded. Each sweep runs it;
    /// counts read the same before and after.
    pub async fn fold_task_counts(&self) -> StoreResult<u64> {
        let mut conn = self.conn("fold_task_counts").await?;
        let result: Result<i64, sqlx::Error> = sqlx::query_scalar(sql::FOLD_TASK_COUNTS)
            .bind(FOLD_BATCH)
            .fetch_one(conn.raw())
            .await;
        let folded = conn.done("fold_task_counts", result)?;
        Ok(u64::try_from(folded).unwrap_or(0))
    }
}

/// Most deltas one fold moves: a bound on the statement's work (a backlog is folded over several sweeps).
const FOLD_BATCH: i64 = 100_000;
