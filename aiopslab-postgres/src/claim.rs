//! The claim: pending → running for one worker, in one statement.
//!
//! A CTE picks the best matching pending task (priority desc, then oldest, then id) with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other and never get the same row; the
//! `UPDATE` then sets the worker, a new attempt and the lease, and returns the row.

use aiopslab_core::{ClaimRequest, StoreResult, Task};

use crate::rows::TaskRow;
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// Claims the best matching pending task for `request.worker_id`, or `None`.
    #[tracing::instrument(skip_all, fields(worker_id = %request.worker_id, backend_type = %request.backend_type))]
    pub(crate) async fn claim_task(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        let intervals = self.intervals();
        let statement = if request.task_id.is_some() {
            sql::CLAIM_BY_ID
        } else {
            sql::CLAIM_NEXT
        };
        let mut query = sqlx::query_as::<_, TaskRow>(statement)
            .bind(&request.backend_type)
            .bind(&request.supported_problems)
            .bind(intervals.dispatch_delay)
            .bind(&request.worker_id)
            .bind(intervals.lease);
        if let Some(task_id) = request.task_id {
            query = query.bind(task_id);
        }
        let mut conn = self.conn("claim").await?;
        let result = query.fetch_optional(conn.raw()).await;
        let row = conn.done("claim", result)?;
        let task = row.map(Task::try_from).transpose()?;
        if let Some(task) = &task {
            tracing::debug!(task_id = %task.id, attempt = task.attempt, "task claimed");
        }
        Ok(task)
    }
}
