//! Counts for `/stats` and `/metrics`: tasks per status, queue depth per backend type, workers per status.

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
        let result: Result<Vec<(String, i64)>, sqlx::Error> =
            sqlx::query_as(sql::TASKS_BY_STATUS).fetch_all(conn.raw()).await;
        let tasks = conn.done("stats", result)?;
        for (status, count) in tasks {
            stats.tasks_by_status.insert(task_status(&status)?, count.max(0) as u64);
        }
        let mut conn = self.conn("stats").await?;
        let result: Result<Vec<(String, i64)>, sqlx::Error> =
            sqlx::query_as(sql::QUEUE_DEPTH).fetch_all(conn.raw()).await;
        let depth = conn.done("stats", result)?;
        for (backend_type, count) in depth {
            stats.queue_depth_by_backend.insert(backend_type, count.max(0) as u64);
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
}
