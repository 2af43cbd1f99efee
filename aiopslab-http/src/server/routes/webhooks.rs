//! `GET /tasks/{id}/webhooks`: a task's completion webhooks and every
//! delivery attempt (status code, error, duration), so a client can see why
//! its receiver did or did not get the POST. The task JSON itself stays as
//! it is (no webhook fields): this is the one place to look.

use axum::extract::State;
use axum::Json;

use crate::server::error::{ApiResult, ErrorBody};
use crate::server::extract::TaskIdPath;
use crate::server::state::ApiState;
use crate::server::wire::WebhookList;

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
    let deliveries = state.store.list_webhooks(id).await?;
    Ok(Json(WebhookList {
        task_id: id,
        deliveries,
    }))
}
