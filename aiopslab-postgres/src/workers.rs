//! Workers: registration (refused while a live worker holds the id), heartbeats that extend the worker's leases
//! and report its cancelled tasks, deregistration, and reads.

use aiopslab_core::{
    HeartbeatAck, StoreError, StoreResult, ValidationError, Worker, WorkerFilter, WorkerHeartbeat, WorkerPage,
    WorkerRegistration, WorkerStatus,
};
use sqlx::types::Json;

use crate::error::map_sqlx;
use crate::rows::{HeartbeatRow, WorkerRow};
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// Registers a worker, or replaces an offline or silent registration under the same id.
    #[tracing::instrument(skip_all, fields(worker_id = %registration.id))]
    pub(crate) async fn upsert_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        registration.validate()?;
        let id = registration.id.clone();
        let row: Option<WorkerRow> = sqlx::query_as(sql::REGISTER_WORKER)
            .bind(registration.id)
            .bind(registration.backend_type)
            .bind(i32::try_from(registration.capabilities.max_parallel_tasks).unwrap_or(i32::MAX))
            .bind(registration.capabilities.supported_problems)
            .bind(Json(registration.metadata))
            .bind(self.intervals().worker_offline_after)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| map_sqlx("register_worker", e))?;
        match row {
            Some(row) => {
                tracing::info!("worker registered");
                row.try_into()
            }
            None => Err(StoreError::WorkerAlive(id)),
        }
    }

    /// Records a heartbeat and extends the worker's leases.
    #[tracing::instrument(skip_all, fields(worker_id = %heartbeat.worker_id))]
    pub(crate) async fn beat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        if heartbeat.status == WorkerStatus::Offline {
            return Err(StoreError::Invalid(ValidationError::new(
                "status",
                "a heartbeat reports idle or busy; deregister to go offline",
            )));
        }
        let row: HeartbeatRow = sqlx::query_as(sql::HEARTBEAT)
            .bind(&heartbeat.worker_id)
            .bind(heartbeat.status.as_str())
            .bind(heartbeat.current_task_id)
            .bind(self.intervals().lease)
            .fetch_one(self.pool())
            .await
            .map_err(|e| map_sqlx("heartbeat", e))?;
        if !row.found {
            return Err(StoreError::worker_not_found(&heartbeat.worker_id));
        }
        Ok(HeartbeatAck {
            acknowledged: true,
            cancelled_task_ids: row.cancelled,
            lease_expires_at: row.lease_expires_at,
            next_task: None,
        })
    }

    /// Marks a worker offline.
    #[tracing::instrument(skip(self))]
    pub(crate) async fn mark_offline(&self, worker_id: &str) -> StoreResult<()> {
        let row: Option<String> = sqlx::query_scalar(sql::DEREGISTER_WORKER)
            .bind(worker_id)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| map_sqlx("deregister_worker", e))?;
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::worker_not_found(worker_id)),
        }
    }

    /// Reads one worker.
    pub(crate) async fn select_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        let row: Option<WorkerRow> = sqlx::query_as(sql::SELECT_WORKER)
            .bind(worker_id)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| map_sqlx("get_worker", e))?;
        row.ok_or_else(|| StoreError::worker_not_found(worker_id))?.try_into()
    }

    /// Lists workers by id.
    pub(crate) async fn select_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        let rows: Vec<WorkerRow> = sqlx::query_as(sql::LIST_WORKERS)
            .bind(filter.status.map(WorkerStatus::as_str))
            .bind(filter.backend_type.as_deref())
            .fetch_all(self.pool())
            .await
            .map_err(|e| map_sqlx("list_workers", e))?;
        let workers: Vec<Worker> = rows.into_iter().map(Worker::try_from).collect::<Result<_, _>>()?;
        Ok(WorkerPage {
            total: workers.len() as u64,
            workers,
        })
    }
}
