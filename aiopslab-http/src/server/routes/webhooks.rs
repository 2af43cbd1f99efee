//! `GET /tasks/{id}/webhooks`: a task's completion webhooks and every
//! delivery attempt (status code, error, duration), so a client can see why
//! its receiver did or did not get the POST. The task JSON itself stays as
//! it is (no webhook fields): this is the one place to look.
//!
//! `POST /tasks/{id}/webhooks/{delivery_id}/redeliver`: tries a `failed`
//! delivery once more, now (after its receiver's outage outlasted the retry
//! schedule, or after a refused destination was fixed on the server), and
//! answers the delivery with the new attempt.

use aiopslab_core::webhook::{WebhookDelivery, WebhookStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::{DeliveryPath, TaskIdPath};
use crate::server::state::ApiState;
use crate::server::wire::WebhookList;
use crate::webhooks::RedeliverError;

/// Lists a task's completion webhooks with their attempts.
#[utoipa::path(
    get, path = "/tasks/{id}/webhooks", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The deliveries, oldest first (empty when the task has no callback_url or is not terminal yet)", body = WebhookList),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn list_webhooks(State(state): State<ApiState>, TaskIdPath(id): TaskIdPath) -> ApiResult<Json<WebhookList>> {
    let deliveries = state.outbox.list_webhooks(id).await?;
    Ok(Json(WebhookList {
        task_id: id,
        deliveries,
    }))
}

/// Redelivers a failed completion webhook: one more POST, now, with the
/// same `X-Aiopslab-Delivery` id (receivers dedupe on it) and the next
/// attempt number. The attempt is recorded like every other; the answer is
/// the delivery as it then stands — `delivered` when the receiver accepted
/// it, else still `failed` with the new attempt's error (a redelivery is
/// not retried on its own; ask again).
#[utoipa::path(
    post, path = "/tasks/{id}/webhooks/{delivery_id}/redeliver", tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "Task id"),
        ("delivery_id" = i64, Path, minimum = 1, description = "Delivery id (`id` in `GET /tasks/{id}/webhooks`)"),
    ),
    responses(
        (status = 200, description = "Tried and recorded: the delivery with its new attempt (`status` delivered or failed)", body = WebhookDelivery),
        (status = 400, description = "An id is malformed (names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task, or no such delivery of this task", body = ErrorBody),
        (status = 409, description = "The delivery is not failed (`webhook_not_failed`: still pending, or delivered), or is being redelivered (`redelivery_in_progress`)", body = ErrorBody),
        (status = 501, description = "This server runs no webhook deliverer (`webhooks_disabled`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn redeliver_webhook(
    State(state): State<ApiState>,
    DeliveryPath { task_id, delivery_id }: DeliveryPath,
) -> ApiResult<Json<WebhookDelivery>> {
    let Some(deliverer) = &state.webhooks else {
        // Still 404 for an unknown task, so the answer does not depend on the
        // server's setup more than it must.
        state.outbox.list_webhooks(task_id).await?;
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "webhooks_disabled",
            "this server does not deliver webhooks (it runs no webhook deliverer); redeliver through one that does",
            json!({}),
        ));
    };
    match deliverer.redeliver(task_id, delivery_id).await {
        Ok(delivery) => {
            tracing::info!(%task_id, delivery_id, status = ?delivery.status, "webhook redelivered on request");
            Ok(Json(delivery))
        }
        Err(RedeliverError::Store(error)) => Err(error.into()),
        Err(RedeliverError::NotFailed { delivery_id, status }) => {
            let (status_name, why) = match status {
                WebhookStatus::Pending => ("pending", "it is still being retried on its schedule"),
                WebhookStatus::Delivered => ("delivered", "the receiver already accepted it"),
                WebhookStatus::Failed => ("failed", ""),
            };
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "webhook_not_failed",
                format!("webhook delivery {delivery_id} is {status_name}, not failed: {why}"),
                json!({ "task_id": task_id, "delivery_id": delivery_id, "status": status_name }),
            ))
        }
        Err(RedeliverError::InProgress { delivery_id }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "redelivery_in_progress",
            format!("webhook delivery {delivery_id} is being redelivered already; read it back when that ends"),
            json!({ "task_id": task_id, "delivery_id": delivery_id }),
        )),
    }
}
