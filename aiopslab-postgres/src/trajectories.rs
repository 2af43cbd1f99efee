//! Trajectories: one JSON document per task, replaced on each save under the lease.

use aiopslab_core::{LeaseToken, StoreError, StoreResult, TaskId, Trajectory};
use sqlx::types::Json;

use crate::sql;
use crate::PgStore;

impl PgStore {
    /// Saves (replaces) the trajectory of a running task.
    #[tracing::instrument(skip(self, trajectory), fields(task_id = %lease.task_id, attempt = lease.attempt))]
    pub(crate) async fn upsert_trajectory(&self, lease: LeaseToken, mut trajectory: Trajectory) -> StoreResult<()> {
        trajectory.task_id = lease.task_id;
        let reward = trajectory.reward;
        let mut conn = self.conn("save_trajectory").await?;
        let result = sqlx::query(sql::SAVE_TRAJECTORY)
            .bind(lease.task_id)
            .bind(i32::try_from(lease.attempt).unwrap_or(i32::MAX))
            .bind(Json(&trajectory))
            .bind(reward)
            .execute(conn.raw())
            .await;
        let saved = conn.done("save_trajectory", result)?.rows_affected();
        if saved == 0 {
            return Err(self.why_not_held(lease, "save_trajectory").await);
        }
        Ok(())
    }

    /// Reads a task's trajectory; `None` when the task has none.
    pub(crate) async fn select_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        let mut conn = self.conn("get_trajectory").await?;
        let result: Result<Option<(Option<Json<Trajectory>>,)>, sqlx::Error> = sqlx::query_as(sql::SELECT_TRAJECTORY)
            .bind(task_id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("get_trajectory", result)?;
        match row {
            None => Err(StoreError::task_not_found(task_id)),
            Some((trajectory,)) => Ok(trajectory.map(|t| t.0)),
        }
    }
}
