//! [`WebhookOutbox`]: what the webhook deliverer needs from the store.

use async_trait::async_trait;

use super::StoreResult;
use crate::task::TaskId;
use crate::webhook::{WebhookAttemptReport, WebhookDelivery};

/// The store's webhook outbox, as the deliverer sees it: claim due
/// deliveries under a lease, record each attempt, list a task's deliveries
/// (to redeliver a failed one; the router serves the same list).
/// Checked by the outbox conformance suite (`testkit`,
/// `webhook_outbox_conformance_suite!`).
#[async_trait]
pub trait WebhookOutbox: Send + Sync + 'static {
    /// Claims up to `limit` due webhook deliveries (pending, `next_attempt_at`
    /// at or before now), oldest first, and pushes their `next_attempt_at` to
    /// now + `lease` so no other deliverer takes them meanwhile; a deliverer
    /// that dies mid-delivery leaves them due again once the lease passes.
    /// Deliveries come with every attempt so far.
    ///
    /// Stores write a delivery into their outbox in the same atomic step as a
    /// task with a `callback_url` reaching a terminal status (finish, cancel
    /// of a pending task, sweep), with the task as serialized at that moment
    /// as its payload, status pending and `next_attempt_at` = now. A requeue
    /// is not terminal and writes nothing.
    async fn claim_webhooks(&self, limit: u32, lease: std::time::Duration) -> StoreResult<Vec<WebhookDelivery>>;

    /// Records one delivery attempt (numbered after the previous ones, stamped
    /// with the store's clock) and moves the delivery on: no error →
    /// `delivered` (`delivered_at` = now, no next attempt); an error with
    /// `retry_after` → still `pending`, due at now + `retry_after`; an error
    /// without → `failed`. A late report (from a deliverer whose lease
    /// lapsed) never undoes an outcome: it is recorded, but a delivered
    /// delivery stays delivered, and a failed one only ever moves to
    /// delivered. Returns the updated delivery; [`StoreError::NotFound`](crate::StoreError::NotFound)
    /// (entity `"webhook"`) for an unknown id.
    async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        report: WebhookAttemptReport,
    ) -> StoreResult<WebhookDelivery>;

    /// Every webhook delivery of a task, oldest first, with its attempts;
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) for an unknown task.
    async fn list_webhooks(&self, task_id: TaskId) -> StoreResult<Vec<WebhookDelivery>>;
}
