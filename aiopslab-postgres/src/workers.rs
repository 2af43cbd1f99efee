//! Workers: registration (refused while a live worker holds the id, unless a new instance takes it over),
//! heartbeats that extend the leases the worker holds, hand back the tasks it does not and report its cancelled
//! ones, deregistration, and reads.

use aiopslab_core::{
    HeartbeatAck, StoreError, StoreResult, Worker, WorkerFilter, WorkerHeartbeat, WorkerPage, WorkerRegistration,
    WorkerStatus,
};

use crate::jsonb::Jsonb;
use crate::rows::{HeartbeatRow, WorkerRow};
use crate::sql;
use crate::PgStore;

impl PgStore {
    /// Registers a worker, or replaces an offline or silent registration under the same id.
    #[tracing::instrument(skip_all, fields(worker_id = %registration.id))]
    pub(crate) async fn upsert_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        registration.validate()?;
        let id = registration.id.clone();
        let mut conn = self.conn("register_worker").await?;
        let result: Result<Option<WorkerRow>, sqlx::Error> = sqlx::query_as(sql::REGISTER_WORKER)
            .bind(registration.id)
            .bind(registration.backend_type)
            .bind(i32::try_from(registration.capabilities.max_parallel_tasks).unwrap_or(i32::MAX))
            .bind(registration.capabilities.supported_problems)
            .bind(Jsonb(registration.metadata))
            .bind(self.intervals().worker_offline_after)
            .bind(registration.instance_id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("register_worker", result)?;
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
        heartbeat.validate()?;
        let mut conn = self.conn("heartbeat").await?;
        let result: Result<HeartbeatRow, sqlx::Error> = sqlx::query_as(sql::HEARTBEAT)
            .bind(&heartbeat.worker_id)
            .bind(heartbeat.status.as_str())
            .bind(heartbeat.current_task_id)
            .bind(self.intervals().lease)
            .bind(heartbeat.running_task_ids.as_deref())
            .bind(heartbeat.instance_id.as_deref())
            .fetch_one(conn.raw())
            .await;
        let row = conn.done("heartbeat", result)?;
        if !row.found {
            return Err(StoreError::worker_not_found(&heartbeat.worker_id));
        }
        if !row.current {
            return Err(StoreError::WorkerSuperseded {
                worker_id: heartbeat.worker_id.clone(),
                current_instance: row.current_instance.unwrap_or_default(),
            });
        }
        if !row.requeued.is_empty() {
            tracing::info!(requeued = ?row.requeued, "heartbeat handed back tasks its worker does not hold");
        }
        let mut ack = HeartbeatAck::default();
        ack.acknowledged = true;
        ack.cancelled_task_ids = row.cancelled;
        ack.lease_expires_at = row.lease_expires_at;
        ack.requeued_task_ids = row.requeued;
        ack.lost_task_ids = row.lost;
        Ok(ack)
    }

    /// Marks a worker offline.
    #[tracing::instrument(skip(self))]
    pub(crate) async fn mark_offline(&self, worker_id: &str) -> StoreResult<()> {
        let mut conn = self.conn("deregister_worker").await?;
        let result: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(sql::DEREGISTER_WORKER)
            .bind(worker_id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("deregister_worker", result)?;
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::worker_not_found(worker_id)),
        }
    }

    /// Reads one worker.
    pub(crate) async fn select_worker(&self, worker_id: &str) -> StoreResult<Worker> {
        let mut conn = self.conn("get_worker").await?;
        let result: Result<Option<WorkerRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_WORKER)
            .bind(worker_id)
            .fetch_optional(conn.raw())
            .await;
        let row = conn.done("get_worker", result)?;
        row.ok_or_else(|| StoreError::worker_not_found(worker_id))?.try_into()
    }

    /// Lists workers by id.
    pub(crate) async fn select_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage> {
        let mut conn = self.conn("list_workers").await?;
        let result: Result<Vec<WorkerRow>, sqlx::Error> = sqlx::query_as(sql::LIST_WORKERS)
            .bind(filter.status.map(WorkerStatus::as_str))
            .bind(filter.backend_type.as_deref())
            .fetch_all(conn.raw())
            .await;
        let rows = conn.done("list_workers", result)?;
        let workers: Vec<Worker> = rows.into_iter().map(Worker::try_from).collect::<Result<_, _>>()?;
        Ok(WorkerPage {
            total: workers.len() as u64,
            workers,
        })
    }
}
