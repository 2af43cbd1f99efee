//! Completion webhooks, delivered through a durable outbox.
//!
//! When a task with a `callback_url` reaches a terminal status, the store
//! writes a delivery into its outbox in the same atomic step as the status
//! change, so no completion is lost across restarts. A deliverer (in the
//! server) claims due deliveries, POSTs them, and records every attempt.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::TaskId;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Not delivered yet; will be tried at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every allowed attempt failed; no more tries.
    Failed,
}

/// One try at delivering a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookAttempt {
    /// 1 for the first try.
    pub attempt: u32,
    /// When it was made (store clock).
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
}

/// One webhook delivery of a task's terminal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// The outbox entry's id.
    pub id: i64,
    /// The task it reports.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub task_id: TaskId,
    /// Where it is POSTed.
    pub url: String,
    /// The body: the task as `GET /tasks/{id}` showed it when it ended.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub payload: Value,
    /// Where it stands.
    pub status: WebhookStatus,
    /// When it was written to the outbox.
    pub created_at: DateTime<Utc>,
    /// When the next try is due (while pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every try so far, oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

/// What a deliverer reports after one try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttemptReport {
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong; `None` means delivered.
    pub error: Option<String>,
    /// How long the request took.
    pub duration_ms: u64,
    /// When to try again after a failure, as a delay from now; `None` after a
    /// failure means give up (the delivery becomes `failed`).
    pub retry_after: Option<std::time::Duration>,
}
