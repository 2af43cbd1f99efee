//! Worker writes to a task under its lease token `(task id, attempt)`:
//! extend the lease, append logs, save the trajectory, finish. A stale token
//! is a 409 `lease_lost`: the worker must stop writing for that task.

use aiopslab_core::{FinalReport, LeaseState, LeaseToken, Task, TaskOutcome};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::{ApiJson, TaskIdPath};
use crate::server::state::ApiState;
use crate::server::upload::TrajectoryUpload;
use crate::server::wire::{AppendLogsBody, FinalReportBody, FinishBody, LeaseBody, SaveTrajectoryBody};

/// Extends the lease of a running task.
#[utoipa::path(
    post, path = "/tasks/{id}/lease", tag = "worker protocol",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = LeaseBody,
    responses(
        (status = 200, description = "The new expiry, and whether a client asked to cancel", body = LeaseState),
        (status = 400, description = "Malformed JSON, or the id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The lease is no longer held (`lease_lost`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn extend_lease(
    State(state): State<ApiState>,
    TaskIdPath(task_id): TaskIdPath,
    ApiJson(body): ApiJson<LeaseBody>,
) -> ApiResult<Json<LeaseState>> {
    let lease = LeaseToken {
        task_id,
        attempt: body.attempt,
    };
    Ok(Json(state.queue.extend_lease(lease).await?))
}

/// Largest number of entries in one batch.
const MAX_BATCH: usize = 10_000;

/// Appends a batch of log entries to a running task.
#[utoipa::path(
    post, path = "/tasks/{id}/logs", tag = "worker protocol",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = AppendLogsBody,
    responses(
        (status = 204, description = "Appended"),
        (status = 400, description = "Malformed JSON, too many entries, or the id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The lease is no longer held (`lease_lost`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn append_logs(
    State(state): State<ApiState>,
    TaskIdPath(task_id): TaskIdPath,
    ApiJson(body): ApiJson<AppendLogsBody>,
) -> ApiResult<StatusCode> {
    at_most_one_batch("entries", body.entries.len())?;
    let lease = LeaseToken {
        task_id,
        attempt: body.attempt,
    };
    state.queue.append_logs(lease, body.entries).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Saves (replaces) the trajectory of a running task. The body may be
/// gzip-encoded (`Content-Encoding: gzip`); its limit is the trajectory
/// limit, not the worker protocol's.
#[utoipa::path(
    put, path = "/tasks/{id}/trajectory", tag = "worker protocol",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = SaveTrajectoryBody,
    responses(
        (status = 204, description = "Saved"),
        (status = 400, description = "Malformed JSON, or the id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The lease is no longer held (`lease_lost`)", body = ErrorBody),
        (status = 413, description = "Body over the trajectory limit (`--max-trajectory-mb`, 512 MiB by default), counted after decompression", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json, or its Content-Encoding is neither gzip nor identity", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn save_trajectory(
    State(state): State<ApiState>,
    TaskIdPath(task_id): TaskIdPath,
    TrajectoryUpload(body): TrajectoryUpload<SaveTrajectoryBody>,
) -> ApiResult<StatusCode> {
    // The path names the task; the lease token proves the worker holds it.
    let mut trajectory = body.trajectory;
    trajectory.task_id = task_id;
    let lease = LeaseToken {
        task_id,
        attempt: body.attempt,
    };
    state.queue.save_trajectory(lease, trajectory).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Finishes a running task with its outcome. A failure with retries left
/// requeues it (the answer then shows it `pending`). Replaying the same
/// finish after it landed returns the task unchanged.
#[utoipa::path(
    post, path = "/tasks/{id}/finish", tag = "worker protocol",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = FinishBody,
    responses(
        (status = 200, description = "The task after the finish", body = Task),
        (status = 400, description = "Malformed JSON, or the id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The lease is no longer held (`lease_lost`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn finish(
    State(state): State<ApiState>,
    TaskIdPath(task_id): TaskIdPath,
    ApiJson(body): ApiJson<FinishBody>,
) -> ApiResult<Json<Task>> {
    let lease = LeaseToken {
        task_id,
        attempt: body.attempt,
    };
    let outcome: TaskOutcome = body.outcome;
    // The duration histogram is fed by the state's ObservedStore.
    let task = state.queue.finish(lease, outcome).await?;
    tracing::info!(task_id = %task_id, attempt = body.attempt, status = %task.status, "task finished");
    Ok(Json(task))
}

/// A log batch of at most [`MAX_BATCH`] entries, or a 400 naming `field`.
fn at_most_one_batch(field: &str, entries: usize) -> ApiResult<()> {
    if entries > MAX_BATCH {
        return Err(ApiError::validation(&aiopslab_core::ValidationError::new(
            field,
            format!("at most {MAX_BATCH} entries per batch, got {entries}"),
        )));
    }
    Ok(())
}

/// Ends a run in one step: appends its last log entries, saves its trajectory and finishes it, all or nothing
/// (nothing is written when any part is refused; a worker then sends the parts one by one). The body may be
/// gzip-encoded and has the trajectory limit. Replaying a report that landed returns the task unchanged and
/// appends nothing again. A store without the capability answers 501 `not_implemented`: send the parts.
#[utoipa::path(
    post, path = "/tasks/{id}/final-report", tag = "worker protocol",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = FinalReportBody,
    responses(
        (status = 200, description = "The task after the finish", body = Task),
        (status = 400, description = "Malformed JSON, too many log entries, or the id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The lease is no longer held (`lease_lost`)", body = ErrorBody),
        (status = 413, description = "Body over the trajectory limit (`--max-trajectory-mb`), counted after decompression", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json, or its Content-Encoding is neither gzip nor identity", body = ErrorBody),
        (status = 501, description = "This server's store cannot write a final report in one step (`not_implemented`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn final_report(
    State(state): State<ApiState>,
    TaskIdPath(task_id): TaskIdPath,
    TrajectoryUpload(body): TrajectoryUpload<FinalReportBody>,
) -> ApiResult<Json<Task>> {
    at_most_one_batch("logs", body.logs.len())?;
    let Some(reports) = state.queue.final_reports() else {
        return Err(ApiError::not_implemented(
            "this server's store cannot write a final report in one step: send the logs, the trajectory and the \
             finish separately",
        ));
    };
    let lease = LeaseToken {
        task_id,
        attempt: body.attempt,
    };
    let trajectory = body.trajectory.map(|mut trajectory| {
        trajectory.task_id = task_id;
        trajectory
    });
    let report = FinalReport::new(body.outcome)
        .with_logs(body.logs)
        .with_trajectory(trajectory);
    // The duration histogram is fed by the state's ObservedStore.
    let task = reports.finish_run(lease, report).await?;
    tracing::info!(task_id = %task_id, attempt = body.attempt, status = %task.status, "run reported");
    Ok(Json(task))
}
