//! The webhook outbox of a [`MemoryStore`](super::MemoryStore).
//!
//! Deliveries are written by the task transitions in [`state`](super::state) under the same lock as the status
//! change (so a terminal task with a `callback_url` always has its delivery), and handed to deliverers by
//! [`Outbox::claim`], which pushes each claimed delivery's `next_attempt_at` one lease ahead so a second deliverer
//! does not take it meanwhile. Pending deliveries are indexed by id, so a claim reads only those.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::clock::later;
use crate::error::StoreError;
use crate::store::StoreResult;
use crate::task::{Task, TaskId};
use crate::webhook::{WebhookAttempt, WebhookAttemptReport, WebhookDelivery, WebhookStatus};

/// Every delivery of one store.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    deliveries: BTreeMap<i64, WebhookDelivery>,
    /// Ids of the pending deliveries, oldest first.
    pending: BTreeSet<i64>,
    /// Delivery ids per task, oldest first.
    by_task: HashMap<TaskId, Vec<i64>>,
    last_id: i64,
}

/// The webhook body of a task: the task as the API serializes it.
pub(crate) fn payload(task: &Task) -> Value {
    serde_json::to_value(task).unwrap_or_else(|error| {
        // A task is plain data (string keys, finite numbers); this cannot happen, but a delivery with the
        // essentials beats losing the notification.
        tracing::error!(task_id = %task.id, %error, "task did not serialize for its webhook");
        serde_json::json!({ "id": task.id, "problem_id": task.problem_id, "status": task.status })
    })
}

impl Outbox {
    /// Writes a pending delivery of `task` (in its terminal state) when it has a `callback_url`.
    pub(crate) fn enqueue(&mut self, task: &Task, now: DateTime<Utc>) {
        let Some(url) = &task.parameters.callback_url else {
            return;
        };
        self.last_id += 1;
        let id = self.last_id;
        self.deliveries.insert(
            id,
            WebhookDelivery {
                id,
                task_id: task.id,
                url: url.clone(),
                payload: payload(task),
                status: WebhookStatus::Pending,
                created_at: now,
                next_attempt_at: Some(now),
                delivered_at: None,
                attempts: Vec::new(),
            },
        );
        self.pending.insert(id);
        self.by_task.entry(task.id).or_default().push(id);
        tracing::debug!(task_id = %task.id, delivery_id = id, status = %task.status, "webhook queued");
    }

    /// Up to `limit` due pending deliveries, oldest first, each now leased until `now + lease`.
    pub(crate) fn claim(&mut self, limit: u32, lease: Duration, now: DateTime<Utc>) -> Vec<WebhookDelivery> {
        let due: Vec<i64> = self
            .pending
            .iter()
            .copied()
            .filter(|id| {
                self.deliveries
                    .get(id)
                    .and_then(|d| d.next_attempt_at)
                    .is_some_and(|at| at <= now)
            })
            .take(limit as usize)
            .collect();
        let until = later(now, lease);
        due.into_iter()
            .filter_map(|id| {
                let delivery = self.deliveries.get_mut(&id)?;
                delivery.next_attempt_at = Some(until);
                Some(delivery.clone())
            })
            .collect()
    }

    /// Records one attempt and moves the delivery on (see
    /// [`WebhookOutbox::record_webhook_attempt`](crate::WebhookOutbox::record_webhook_attempt)). A delivered delivery
    /// stays delivered: a late report from a deliverer whose lease lapsed is recorded, not applied.
    pub(crate) fn record(
        &mut self,
        id: i64,
        report: WebhookAttemptReport,
        now: DateTime<Utc>,
    ) -> StoreResult<WebhookDelivery> {
        let delivery = self.deliveries.get_mut(&id).ok_or_else(|| StoreError::NotFound {
            entity: "webhook",
            id: id.to_string(),
        })?;
        let attempt = u32::try_from(delivery.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let delivered = report.error.is_none();
        delivery.attempts.push(WebhookAttempt {
            attempt,
            attempted_at: now,
            status_code: report.status_code,
            error: report.error,
            duration_ms: report.duration_ms,
        });
        if delivery.status != WebhookStatus::Delivered {
            match (delivered, report.retry_after) {
                (true, _) => {
                    delivery.status = WebhookStatus::Delivered;
                    delivery.delivered_at = Some(now);
                    delivery.next_attempt_at = None;
                }
                (false, Some(delay)) if delivery.status == WebhookStatus::Pending => {
                    delivery.next_attempt_at = Some(later(now, delay));
                }
                (false, _) => {
                    delivery.status = WebhookStatus::Failed;
                    delivery.next_attempt_at = None;
                }
            }
        }
        let delivery = delivery.clone();
        if delivery.status == WebhookStatus::Pending {
            self.pending.insert(id);
        } else {
            self.pending.remove(&id);
            // A delivery of a task dropped by the retention bound ends here.
            if !self.by_task.contains_key(&delivery.task_id) {
                self.deliveries.remove(&id);
            }
        }
        Ok(delivery)
    }

    /// Drops the deliveries of a task the store no longer keeps: the delivered and failed ones at once; one still
    /// pending stays until its last attempt is recorded (the delivery carries its own payload), then goes.
    pub(crate) fn forget(&mut self, task_id: TaskId) {
        for id in self.by_task.remove(&task_id).into_iter().flatten() {
            if !self.pending.contains(&id) {
                self.deliveries.remove(&id);
            }
        }
    }

    /// Every delivery of a task, oldest first.
    pub(crate) fn list(&self, task_id: TaskId) -> Vec<WebhookDelivery> {
        self.by_task
            .get(&task_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.deliveries.get(id).cloned())
            .collect()
    }
}
