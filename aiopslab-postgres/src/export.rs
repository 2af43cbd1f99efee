//! The dataset export: tasks that have a trajectory, walked in `(created_at, id)` order with a keyset cursor, one
//! page per statement, filters applied in the database. It reads each trajectory's messages (a `json` column, sent
//! back as the text it was saved as) and its small rest, never its LLM calls (a column of their own, most of a
//! trajectory's bytes), so the episodes come with `llm_calls` empty, as the trait documents.

use aiopslab_core::{Episode, ExportCursor, ExportFilter, StoreResult, Task, TaskStatus};

use crate::rows::EpisodeRow;
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// One page of episodes strictly after `after`.
    #[tracing::instrument(skip(self, filter))]
    pub(crate) async fn export_page(
        &self,
        filter: &ExportFilter,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Episode>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (metadata_key, metadata_value) = match &filter.metadata {
            Some((key, value)) => (Some(key.as_str()), Some(value.as_str())),
            None => (None, None),
        };
        let mut conn = self.conn("export_episodes").await?;
        let result: Result<Vec<EpisodeRow>, sqlx::Error> = sqlx::query_as(sql::EXPORT_EPISODES)
            .bind(filter.status.map(TaskStatus::as_str))
            .bind(&filter.problem_ids)
            .bind(filter.model.as_deref())
            .bind(metadata_key)
            .bind(metadata_value)
            .bind(filter.created_after)
            .bind(filter.created_before)
            .bind(after.map(|c| c.created_at))
            .bind(after.map(|c| c.id))
            .bind(i64::from(limit))
            .fetch_all(conn.raw())
            .await;
        let rows = conn.done("export_episodes", result)?;
        rows.into_iter()
            .map(|row| {
                let task = Task::try_from(row.task)?;
                let trajectory = row
                    .trajectory_rest
                    .0
                    .into_trajectory(task.id, row.trajectory_messages.0, Vec::new());
                Ok(Episode { task, trajectory })
            })
            .collect()
    }
}
