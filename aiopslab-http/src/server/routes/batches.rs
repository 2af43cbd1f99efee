//! `POST /tasks/batch`: many tasks in one atomic request, as a group (e.g.
//! the same problem `n` times for group-relative RL methods), with an
//! optional `Idempotency-Key` so a retried submission creates nothing twice.

use aiopslab_core::batch::{CreatedBatch, NewBatch};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::ApiJsonBytes;
use crate::server::idempotency::{idempotency_key, mark_replayed};
use crate::server::routes::tasks::check_callback_destination;
use crate::server::state::ApiState;

/// Creates a batch of tasks atomically, as one group.
///
/// The body gives either `tasks` (a list of task requests, each as for
/// `POST /tasks`) or `task` with `count` (that task repeated). Either all the
/// tasks are created or none is: one invalid task is a 400 naming
/// `tasks[i].field`. The answer carries the group id that
/// `GET /groups/{group_id}` reads back with the tasks' rewards.
///
/// `min_valid` (1 to the number of tasks; default: all) and `max_refills`
/// (0–1000; default 0) ask for group-aware retry: while the group lacks
/// `min_valid` members that are valid or still pending/running, each member
/// that aborts (status `failed` for good; not a timeout, a cancel or a
/// requeued retry) gets a replacement with its problem and parameters that
/// names it in `replaces`, up to `max_refills` of them.
#[utoipa::path(
    post, path = "/tasks/batch", tag = "tasks",
    request_body = NewBatch,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
         description = "1-255 visible ASCII characters (`!` to `~`). Makes a retried submission safe: the same key with the same body replays the first answer \
(`replayed: true`, header `Idempotent-Replayed: true`) and creates nothing; the same key with a different body \
is a 409 `idempotency_conflict`"),
    ),
    responses(
        (status = 201, description = "Created (or replayed), in request order", body = CreatedBatch),
        (status = 400, description = "Malformed JSON, an unknown field, an invalid task (names `tasks[i].field`), or `min_valid`/`max_refills` out of range (names the field); nothing was created", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with a different request (`idempotency_conflict`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn create_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJsonBytes(batch, body): ApiJsonBytes<NewBatch>,
) -> ApiResult<Response> {
    let repeated = batch.task.is_some();
    let spec = batch.validate().map_err(|e| ApiError::validation(&e))?;
    for (i, task) in spec.specs.iter().enumerate() {
        if repeated {
            // `{"task", "count"}`: every copy is the same task.
            check_callback_destination(&state, task, "task.callback_url")?;
            break;
        }
        check_callback_destination(&state, task, &format!("tasks[{i}].callback_url"))?;
    }
    let key = idempotency_key(&headers, &Method::POST, "/tasks/batch", &body)?;
    let created = state.tasks.create_batch(spec, key).await?;
    tracing::info!(
        group_id = ?created.group_id,
        tasks = created.tasks.len(),
        replayed = created.replayed,
        "batch created"
    );
    let replayed = created.replayed;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    mark_replayed(&mut response, replayed);
    Ok(response)
}
