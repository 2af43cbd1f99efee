//! The webhook outbox: deliveries written in the same statement as a task's terminal transition (finish, cancel
//! of a pending task, sweep), leased to deliverers with `FOR UPDATE SKIP LOCKED`, and every attempt recorded.
//!
//! The statement that ends a task writes the delivery without its payload; the payload (the task as it ended) is
//! rendered here from the task row the first time the delivery is read, and stored. A terminal task row never
//! changes again, so the rendering is the task exactly as it ended, serialized the same way the API serializes it.

use std::collections::HashMap;
use std::time::Duration;

use aiopslab_core::{StoreError, StoreResult, Task, TaskId, WebhookAttempt, WebhookAttemptReport, WebhookDelivery};
use sqlx::postgres::types::PgInterval;
use sqlx::types::Json;
use uuid::Uuid;

use crate::jsonb::Jsonb;
use crate::rows::{webhook_status, AttemptRow, DeliveryRow, TaskRow};
use crate::sql;
use crate::PgStore;

/// A duration as an interval, truncated to whole microseconds (the database's resolution).
fn interval(duration: Duration) -> StoreResult<PgInterval> {
    let microseconds = i64::try_from(duration.as_micros()).map_err(|_| {
        StoreError::Invalid(aiopslab_core::ValidationError::new(
            "lease",
            "duration too large for the database",
        ))
    })?;
    Ok(PgInterval {
        months: 0,
        days: 0,
        microseconds,
    })
}

impl PgStore {
    /// Leases up to `limit` due deliveries for `lease`, oldest first.
    #[tracing::instrument(skip(self))]
    pub(crate) async fn lease_webhooks(&self, limit: u32, lease: Duration) -> StoreResult<Vec<WebhookDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn("claim_webhooks").await?;
        let result: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(sql::CLAIM_WEBHOOKS)
            .bind(i64::from(limit))
            .bind(interval(lease)?)
            .fetch_all(conn.raw())
            .await;
        let ids = conn.done("claim_webhooks", result)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.deliveries(sql::SELECT_DELIVERIES, DeliveryKey::Ids(&ids)).await
    }

    /// Records one attempt and returns the delivery as it now stands.
    #[tracing::instrument(skip(self, report))]
    pub(crate) async fn record_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery> {
        let retry_after = report.retry_after.map(interval).transpose()?;
        let mut conn = self.conn("record_webhook_attempt").await?;
        let result: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(sql::RECORD_WEBHOOK_ATTEMPT)
            .bind(delivery_id)
            .bind(report.status_code.map(i32::from))
            .bind(report.error)
            .bind(i64::try_from(report.duration_ms).unwrap_or(i64::MAX))
            .bind(retry_after)
            .fetch_optional(conn.raw())
            .await;
        if conn.done("record_webhook_attempt", result)?.is_none() {
            return Err(StoreError::NotFound {
                entity: "webhook",
                id: delivery_id.to_string(),
            });
        }
        self.deliveries(sql::SELECT_DELIVERIES, DeliveryKey::Ids(&[delivery_id]))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Internal("a recorded delivery vanished".into()))
    }

    /// Every delivery of a task, oldest first.
    pub(crate) async fn task_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        let deliveries = self
            .deliveries(sql::SELECT_TASK_DELIVERIES, DeliveryKey::Task(task_id))
            .await?;
        if deliveries.is_empty() && !self.task_exists(task_id, "list_webhooks").await? {
            return Err(StoreError::task_not_found(task_id));
        }
        Ok(deliveries)
    }

    /// Reads deliveries with their attempts, rendering (and storing) payloads not rendered yet.
    async fn deliveries(&self, statement: &'static str, key: DeliveryKey<'_>) -> StoreResult<Vec<WebhookDelivery>> {
        const OP: &str = "webhooks";
        let mut conn = self.conn(OP).await?;
        let query = sqlx::query_as::<_, DeliveryRow>(statement);
        let query = match key {
            DeliveryKey::Ids(ids) => query.bind(ids),
            DeliveryKey::Task(task_id) => query.bind(task_id),
        };
        let result = query.fetch_all(conn.raw()).await;
        let rows = conn.done(OP, result)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();

        // Payloads not rendered yet: the tasks as they ended.
        let missing: Vec<Uuid> = rows
            .iter()
            .filter(|row| row.payload.is_none())
            .map(|row| row.task_id)
            .collect();
        let mut rendered: HashMap<Uuid, serde_json::Value> = HashMap::new();
        if !missing.is_empty() {
            let mut conn = self.conn(OP).await?;
            let result: Result<Vec<TaskRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_TASKS_BY_ID)
                .bind(&missing)
                .fetch_all(conn.raw())
                .await;
            for row in conn.done(OP, result)? {
                let task = Task::try_from(row)?;
                let payload = serde_json::to_value(&task)
                    .map_err(|e| StoreError::Internal(format!("a task did not serialize: {e}")))?;
                rendered.insert(task.id, payload);
            }
            let (store_ids, payloads): (Vec<i64>, Vec<Jsonb<&serde_json::Value>>) = rows
                .iter()
                .filter(|row| row.payload.is_none())
                .filter_map(|row| rendered.get(&row.task_id).map(|p| (row.id, Jsonb(p))))
                .unzip();
            let mut conn = self.conn(OP).await?;
            let result = sqlx::query(sql::STORE_PAYLOADS)
                .bind(&store_ids)
                .bind(payloads)
                .execute(conn.raw())
                .await;
            conn.done(OP, result)?;
        }

        let mut conn = self.conn(OP).await?;
        let result: Result<Vec<AttemptRow>, sqlx::Error> = sqlx::query_as(sql::SELECT_ATTEMPTS)
            .bind(&ids)
            .fetch_all(conn.raw())
            .await;
        let mut attempts: HashMap<i64, Vec<WebhookAttempt>> = HashMap::new();
        for row in conn.done(OP, result)? {
            let delivery_id = row.delivery_id;
            attempts.entry(delivery_id).or_default().push(row.try_into()?);
        }

        rows.into_iter()
            .map(|row| {
                let payload = match row.payload {
                    Some(Json(payload)) => payload,
                    None => rendered
                        .get(&row.task_id)
                        .cloned()
                        .ok_or_else(|| StoreError::Internal("a delivery's task is missing".into()))?,
                };
                Ok(WebhookDelivery {
                    id: row.id,
                    task_id: row.task_id,
                    url: row.url,
                    payload,
                    status: webhook_status(&row.status)?,
                    created_at: row.created_at,
                    next_attempt_at: row.next_attempt_at,
                    delivered_at: row.delivered_at,
                    attempts: attempts.remove(&row.id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// Which deliveries to read.
enum DeliveryKey<'a> {
    Ids(&'a [i64]),
    Task(TaskId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_truncate_to_microseconds() {
        assert_eq!(interval(Duration::from_nanos(1_999)).unwrap().microseconds, 1);
        assert_eq!(interval(Duration::from_millis(1_500)).unwrap().microseconds, 1_500_000);
        assert!(interval(Duration::MAX).is_err(), "too large for the database");
    }
}
