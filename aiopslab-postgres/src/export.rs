//! The dataset export: tasks that have a trajectory, in `(created_at, id)` order, one keyset page per call.
//!
//! A page is read window by window ([`sql::export_window`]): each statement takes the next few thousand tasks
//! after the cursor on `tasks_created_idx` and keeps those with a trajectory that pass the filters, so one
//! statement's work is bounded however selective the filters are, and a whole walk reads each task once. Without
//! filters a page is one statement. When a window yields fewer episodes than the page still needs, the walk goes
//! on from the window's last task (found by [`sql::EXPORT_WINDOW_END`]) until the page is full or the tasks run out.
//!
//! Each episode comes with its trajectory's messages (a `json` column, sent back as the text it was saved as) and
//! its small rest (reward, evaluation, metadata), never the LLM calls (a column of their own, most of a
//! trajectory's bytes): `llm_calls` is empty, as the trait documents.

use aiopslab_core::{Episode, ExportCursor, ExportFilter, StoreResult, Task, TaskId, TaskStatus};
use chrono::{DateTime, Utc};

use crate::rows::EpisodeRow;
use crate::sql::{self, ExportFilters};
use crate::PgStore;

/// Tasks one window scans, at least.
const MIN_WINDOW: u32 = 2_000;
/// Tasks one window scans, at most.
const MAX_WINDOW: u32 = 20_000;

/// Where a walk starts: strictly after the cursor, and no earlier than `created_after` (a start at
/// `(created_after, nil id)` excludes only a task with the nil id, which the store never creates).
fn start(filter: &ExportFilter, after: Option<ExportCursor>) -> (DateTime<Utc>, TaskId) {
    let floor = filter.created_after.map(|at| (at, TaskId::nil()));
    match (after.map(|c| (c.created_at, c.id)), floor) {
        (Some(cursor), Some(floor)) => cursor.max(floor),
        (Some(cursor), None) => cursor,
        (None, Some(floor)) => floor,
        // Before any time the database holds (it starts at 4713 BC).
        (None, None) => (
            DateTime::<Utc>::UNIX_EPOCH - chrono::TimeDelta::days(365 * 6000),
            TaskId::nil(),
        ),
    }
}

impl PgStore {
    /// One page of episodes strictly after `after` (see the module docs).
    #[tracing::instrument(skip(self, filter))]
    pub(crate) async fn export_page(
        &self,
        filter: &ExportFilter,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> StoreResult<Vec<Episode>> {
        let mut episodes = Vec::new();
        if limit == 0 {
            return Ok(episodes);
        }
        let filters = ExportFilters {
            status: filter.status.is_some(),
            problem_ids: filter.problem_ids.is_some(),
            model: filter.model.is_some(),
            metadata: filter.metadata.is_some(),
            created_before: filter.created_before.is_some(),
            statuses: filter.outcomes.is_some(),
            model_version: filter.model_version.is_some(),
            min_model_version: filter.min_model_version.is_some(),
        };
        let statement = sql::export_window(filters);
        let window = limit.saturating_mul(4).clamp(MIN_WINDOW, MAX_WINDOW);
        let mut cursor = start(filter, after);
        loop {
            let wanted = limit - episodes.len() as u32;
            let rows = self.export_window(&statement, filter, cursor, window, wanted).await?;
            for row in rows {
                let task = Task::try_from(row.task)?;
                let trajectory = row
                    .trajectory_rest
                    .0
                    .into_trajectory(task.id, row.trajectory_messages.0, Vec::new());
                episodes.push(Episode { task, trajectory });
            }
            if episodes.len() as u32 >= limit {
                return Ok(episodes);
            }
            // The window is used up: go on after its last task, unless the tasks ran out.
            match self.export_window_end(cursor, window, filter.created_before).await? {
                Some(end) => cursor = end,
                None => return Ok(episodes),
            }
        }
    }

    /// The episodes of one window after `cursor`, at most `limit`.
    async fn export_window(
        &self,
        statement: &str,
        filter: &ExportFilter,
        cursor: (DateTime<Utc>, TaskId),
        window: u32,
        limit: u32,
    ) -> StoreResult<Vec<EpisodeRow>> {
        let mut query = sqlx::query_as::<_, EpisodeRow>(statement)
            .bind(cursor.0)
            .bind(cursor.1)
            .bind(i64::from(window))
            .bind(i64::from(limit));
        if let Some(status) = filter.status {
            query = query.bind(TaskStatus::as_str(status));
        }
        if let Some(problem_ids) = &filter.problem_ids {
            query = query.bind(problem_ids);
        }
        if let Some(model) = &filter.model {
            query = query.bind(model);
        }
        if let Some((key, value)) = &filter.metadata {
            query = query.bind(key).bind(value);
        }
        if let Some(before) = filter.created_before {
            query = query.bind(before);
        }
        if let Some(outcomes) = &filter.outcomes {
            let statuses: Vec<&str> = outcomes.iter().map(|o| o.status().as_str()).collect();
            query = query.bind(statuses);
        }
        if let Some(version) = filter.model_version {
            query = query.bind(i64::try_from(version).unwrap_or(i64::MAX));
        }
        if let Some(floor) = filter.min_model_version {
            query = query.bind(i64::try_from(floor).unwrap_or(i64::MAX));
        }
        let mut conn = self.conn("export_episodes").await?;
        let result = query.fetch_all(conn.raw()).await;
        conn.done("export_episodes", result)
    }

    /// The last task of the window after `cursor`; `None` when fewer than `window` tasks remain.
    async fn export_window_end(
        &self,
        cursor: (DateTime<Utc>, TaskId),
        window: u32,
        created_before: Option<DateTime<Utc>>,
    ) -> StoreResult<Option<(DateTime<Utc>, TaskId)>> {
        let mut conn = self.conn("export_episodes").await?;
        let result = sqlx::query_as(sql::EXPORT_WINDOW_END)
            .bind(cursor.0)
            .bind(cursor.1)
            .bind(i64::from(window))
            .bind(created_before)
            .fetch_optional(conn.raw())
            .await;
        conn.done("export_episodes", result)
    }
}
