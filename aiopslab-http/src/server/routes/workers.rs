//! Worker routes: the public listing (`GET /workers`, `GET /workers/{id}`)
//! and the worker protocol's register, heartbeat, claim and deregister.
//!
//! An idle worker's heartbeat is answered with its next task, already claimed
//! for it through the [`Scheduler`](aiopslab_core::Scheduler) with the
//! backend type and supported problems of its stored registration.

use aiopslab_core::{
    ClaimRequest, Worker, WorkerFilter, WorkerHeartbeat, WorkerPage, WorkerRegistration, WorkerStatus,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::{ApiJson, QueryParams, WorkerIdPath};
use crate::server::state::ApiState;
use crate::server::wire::{ClaimResponse, HeartbeatResponse};

/// Lists workers, by id.
#[utoipa::path(
    get, path = "/workers", tag = "workers",
    params(
        ("status" = Option<WorkerStatus>, Query, description = "Only workers in this status"),
        ("backend_type" = Option<String>, Query, max_length = 256, description = "Only workers of this backend type"),
    ),
    responses(
        (status = 200, description = "The workers and how many", body = WorkerPage),
        (status = 400, description = "A query parameter is invalid (names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn list_workers(State(state): State<ApiState>, query: QueryParams) -> ApiResult<Json<WorkerPage>> {
    let filter = WorkerFilter::default()
        .with_status(query.parsed::<WorkerStatus>("status")?)
        .with_backend_type(query.bounded_text("backend_type", 256)?);
    Ok(Json(state.fleet.list_workers(&filter).await?))
}

/// Reads one worker.
#[utoipa::path(
    get, path = "/workers/{id}", tag = "workers",
    params(("id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The worker", body = Worker),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_worker(State(state): State<ApiState>, WorkerIdPath(id): WorkerIdPath) -> ApiResult<Json<Worker>> {
    Ok(Json(state.fleet.get_worker(&id).await?))
}

/// Registers a worker (worker protocol).
#[utoipa::path(
    post, path = "/workers/register", tag = "worker protocol",
    request_body = WorkerRegistration,
    responses(
        (status = 201, description = "Registered, idle", body = Worker),
        (status = 400, description = "Malformed JSON, unknown field, or an invalid value (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 409, description = "A live worker holds this id and the registrations name no instances to tell them apart (`worker_alive`); a registration naming another `instance_id` than the live one takes the id over instead", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn register_worker(
    State(state): State<ApiState>,
    ApiJson(registration): ApiJson<WorkerRegistration>,
) -> ApiResult<Response> {
    registration.validate().map_err(|e| ApiError::validation(&e))?;
    for (field, value) in [("id", &registration.id), ("backend_type", &registration.backend_type)] {
        if value.chars().any(char::is_control) {
            return Err(ApiError::validation(&aiopslab_core::ValidationError::new(
                field,
                "must not contain control characters",
            )));
        }
    }
    let worker = state.queue.register_worker(registration).await?;
    tracing::info!(worker_id = %worker.id, backend_type = %worker.backend_type, "worker registered");
    Ok((StatusCode::CREATED, Json(worker)).into_response())
}

/// A worker's sign of life (worker protocol). An idle worker gets its next
/// task, already claimed for it, in `next_task` — unless it holds its event
/// stream (`GET /workers/{id}/events`) open, which wakes it to claim by itself.
#[utoipa::path(
    post, path = "/workers/heartbeat", tag = "worker protocol",
    request_body = WorkerHeartbeat,
    responses(
        (status = 200, description = "Acknowledged; cancelled task ids and maybe a next task", body = HeartbeatResponse),
        (status = 400, description = "Malformed JSON, unknown field, or an invalid value (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "The worker is not registered", body = ErrorBody),
        (status = 409, description = "`worker_superseded`: another instance registered under this id since; this one must stop", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn heartbeat(
    State(state): State<ApiState>,
    ApiJson(beat): ApiJson<WorkerHeartbeat>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let mut ack = state.queue.heartbeat(&beat).await?;
    // A worker holding its event stream open is woken when work arrives and claims by itself: its heartbeat
    // stays the heartbeat's own write (a claim in every idle heartbeat of a large fleet was most of its latency).
    let listening = state.wakeups.is_listening(&beat.worker_id);
    if beat.status == WorkerStatus::Idle && ack.next_task.is_none() && !listening {
        let worker = state.fleet.get_worker(&beat.worker_id).await?;
        let request = ClaimRequest::new(worker.id.clone(), worker.backend_type.clone())
            .for_problems(worker.capabilities.supported_problems.clone());
        if let Some(task) = state.scheduler.next_task(&request).await? {
            tracing::info!(task_id = %task.id, worker_id = %worker.id, "task handed out on heartbeat");
            ack.lease_expires_at = match (ack.lease_expires_at, task.lease_expires_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            ack.next_task = Some(task);
        }
    }
    let idle = beat.status == WorkerStatus::Idle && ack.next_task.is_none();
    state.wakeups.set_idle(&beat.worker_id, idle);
    Ok(Json(HeartbeatResponse {
        acknowledged: ack.acknowledged,
        next_task_id: ack.next_task.as_ref().map(|t| t.id),
        next_task: ack.next_task,
        cancelled_task_ids: ack.cancelled_task_ids,
        lease_expires_at: ack.lease_expires_at,
        requeued_task_ids: ack.requeued_task_ids,
        lost_task_ids: ack.lost_task_ids,
    }))
}

/// Claims the next task for a worker (worker protocol); with `max_tasks` above 1, up to that many in one step
/// (the first in `task`, the others in `more_tasks`), so a worker with several free slots fills them at once.
#[utoipa::path(
    post, path = "/workers/claim", tag = "worker protocol",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "The claimed task, now running, or null (and, with `max_tasks` above 1, the others claimed in `more_tasks`)", body = ClaimResponse),
        (status = 400, description = "Malformed JSON, wrong types, an invalid value (names the field), or a worker that is offline (names `worker_id`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No worker is registered under `worker_id` (entity `worker`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn claim(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    for (field, value) in [
        ("worker_id", &request.worker_id),
        ("backend_type", &request.backend_type),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::validation(&aiopslab_core::ValidationError::new(
                field,
                "must be a non-empty string",
            )));
        }
    }
    let mut tasks = if request.max_tasks > 1 {
        request.validate().map_err(|error| ApiError::validation(&error))?;
        state.scheduler.next_tasks(&request).await?
    } else {
        state.scheduler.next_task(&request).await?.into_iter().collect()
    };
    for task in &tasks {
        tracing::info!(task_id = %task.id, worker_id = %request.worker_id, attempt = task.attempt, "task claimed");
    }
    // A claim that found nothing says the worker would take work: the next new task may wake it.
    state.wakeups.set_idle(&request.worker_id, tasks.is_empty());
    // One that got all it asked for may have left more behind (one wake-up can stand for a batch): pass it on.
    if tasks.len() >= request.max_tasks.max(1) as usize {
        state.wakeups.pass_on(&request.backend_type);
    }
    let task = (!tasks.is_empty()).then(|| tasks.remove(0));
    Ok(Json(ClaimResponse {
        task,
        more_tasks: tasks,
    }))
}

/// Marks a worker offline (graceful shutdown; worker protocol).
#[utoipa::path(
    post, path = "/workers/{id}/deregister", tag = "worker protocol",
    params(("id" = String, Path, description = "Worker id")),
    responses(
        (status = 204, description = "The worker is offline"),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn deregister_worker(State(state): State<ApiState>, WorkerIdPath(id): WorkerIdPath) -> ApiResult<StatusCode> {
    state.queue.deregister_worker(&id).await?;
    tracing::info!(worker_id = %id, "worker deregistered");
    Ok(StatusCode::NO_CONTENT)
}
