//! The public task routes: create (with an optional `Idempotency-Key`),
//! list, read, cancel, logs (with a Server-Sent Events follow mode) and the
//! trajectory. Batches, groups, webhooks and the dataset export have their
//! own files.

use aiopslab_core::batch::BatchSpec;
use aiopslab_core::{
    CancelOutcome, LogQuery, NewTask, Page, TaskFilter, TaskPage, TaskQuery, TaskSort, TaskSpec, TaskStatus,
    Trajectory, ValidationError,
};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::{ApiJsonBytes, QueryParams, TaskIdPath};
use crate::server::idempotency::{idempotency_key, mark_replayed};
use crate::server::sse;
use crate::server::state::ApiState;
use crate::server::wire::{CancelResponse, LogStreamEvent, LogsResponse, TaskView};
use crate::webhooks::destination::literal_destination_error;

/// Longest accepted text filter in a query string.
const MAX_FILTER_LEN: usize = 256;

/// Refuses a `callback_url` that names a non-public address outright (a
/// literal IP such as `127.0.0.1`, `2130706433` or `[::1]`, or a
/// `localhost` name), unless the server allows private webhook
/// destinations. `field` names it in the 400 (`callback_url`,
/// `tasks[2].callback_url`). Other names are checked, resolved, at delivery.
pub(crate) fn check_callback_destination(state: &ApiState, spec: &TaskSpec, field: &str) -> ApiResult<()> {
    if state.config.allow_private_webhook_destinations {
        return Ok(());
    }
    match spec
        .parameters
        .callback_url
        .as_deref()
        .and_then(literal_destination_error)
    {
        None => Ok(()),
        Some(message) => Err(ApiError::validation(&ValidationError::new(field, message))),
    }
}

/// Creates a task.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = NewTask,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
         description = "1-255 visible ASCII characters (`!` to `~`). Makes a retried submission safe: the same key with the same body answers the task the first \
request created (header `Idempotent-Replayed: true`) and creates nothing; the same key with a different body is a 409 \
`idempotency_conflict`"),
    ),
    responses(
        (status = 201, description = "Created, pending (or, replayed, the task the key first created, as it is now)", body = aiopslab_core::Task),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or a value out of bounds (names the field); a callback_url on a loopback, private, link-local or metadata address unless the server allows them", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used with a different request (`idempotency_conflict`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn create_task(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJsonBytes(new, body): ApiJsonBytes<NewTask>,
) -> ApiResult<Response> {
    let spec = new.validate().map_err(|e| ApiError::validation(&e))?;
    check_callback_destination(&state, &spec, "callback_url")?;
    let Some(key) = idempotency_key(&headers, &Method::POST, "/tasks", &body)? else {
        let task = state.tasks.create_task(spec).await?;
        tracing::info!(task_id = %task.id, problem_id = %task.problem_id, "task created");
        return Ok((StatusCode::CREATED, Json(task)).into_response());
    };
    let batch = BatchSpec::ungrouped(vec![spec]);
    let created = state.tasks.create_batch(batch, Some(key)).await?;
    let Some(task) = created.tasks.into_iter().next() else {
        tracing::error!("the store created an empty batch for one task");
        return Err(ApiError::internal());
    };
    tracing::info!(task_id = %task.id, problem_id = %task.problem_id, replayed = created.replayed, "task created");
    let mut response = (StatusCode::CREATED, Json(task)).into_response();
    mark_replayed(&mut response, created.replayed);
    Ok(response)
}

fn task_filter(query: &QueryParams) -> ApiResult<TaskFilter> {
    Ok(TaskFilter::default()
        .with_status(query.parsed::<TaskStatus>("status")?)
        .with_problem_id(query.bounded_text("problem_id", MAX_FILTER_LEN)?)
        .with_worker_id(query.bounded_text("worker_id", MAX_FILTER_LEN)?)
        .with_backend_type(query.bounded_text("backend_type", MAX_FILTER_LEN)?)
        .with_group_id(query.parsed_uuid("group_id")?)
        .with_experiment(query.experiment("experiment")?))
}

/// Lists tasks, filtered, sorted, one page at a time.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks in this status"),
        ("problem_id" = Option<String>, Query, max_length = 256, description = "Only tasks of this problem"),
        ("worker_id" = Option<String>, Query, max_length = 256, description = "Only tasks held (or last held) by this worker"),
        ("backend_type" = Option<String>, Query, max_length = 256, description = "Only tasks of this backend type"),
        ("group_id" = Option<uuid::Uuid>, Query, description = "Only tasks of this batch group"),
        ("experiment" = Option<String>, Query, min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$", description = "Only tasks of this experiment"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1-100 (20)"),
        ("offset" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_u64, description = "How many to skip (0)"),
        ("sort" = Option<TaskSort>, Query, description = "created_at, -created_at (default), priority or -priority"),
    ),
    responses(
        (status = 200, description = "One page and the total that matched (exact unless total_is_estimate: with problem_id, worker_id, group_id or experiment, PostgreSQL estimates past 10,000 matches)", body = TaskPage),
        (status = 400, description = "A query parameter is invalid (names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn list_tasks(State(state): State<ApiState>, query: QueryParams) -> ApiResult<Json<TaskPage>> {
    let filter = task_filter(&query)?;
    let page = Page::new(query.int("limit")?, query.int("offset")?).map_err(|e| ApiError::invalid_query(&e))?;
    let sort = query.parsed::<TaskSort>("sort")?.unwrap_or_default();
    Ok(Json(
        state
            .tasks
            .list_tasks(&TaskQuery::new(filter.clone()).sorted(sort).page(page))
            .await?,
    ))
}

/// Reads one task; `?include_logs=true` adds its log.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "Task id"),
        ("include_logs" = Option<bool>, Query, description = "Add the task's log entries as `logs`"),
    ),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "The id is not a UUID, or a bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_task(
    State(state): State<ApiState>,
    TaskIdPath(id): TaskIdPath,
    query: QueryParams,
) -> ApiResult<Json<TaskView>> {
    let include_logs = query.flag("include_logs", false)?;
    let task = state.tasks.get_task(id).await?;
    let logs = if include_logs {
        Some(state.tasks.get_logs(id, &LogQuery::default()).await?)
    } else {
        None
    };
    Ok(Json(TaskView { task, logs }))
}

/// Cancels a task: a pending task is cancelled at once; a running task's
/// worker is asked to stop (it reports `cancelled`); a terminal task is a 409.
#[utoipa::path(
    delete, path = "/tasks/{id}", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled, or cancellation requested from its worker", body = CancelResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is already terminal (`already_terminal`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn cancel_task(State(state): State<ApiState>, TaskIdPath(id): TaskIdPath) -> ApiResult<Json<CancelResponse>> {
    let outcome = state.tasks.cancel_task(id).await?;
    tracing::info!(task_id = %id, ?outcome, "cancel requested by client");
    Ok(Json(match outcome {
        CancelOutcome::Cancelled => CancelResponse {
            id,
            status: TaskStatus::Cancelled,
            cancel_requested: false,
            message: "the task was pending and is now cancelled".to_string(),
        },
        CancelOutcome::CancelRequested => CancelResponse {
            id,
            status: TaskStatus::Running,
            cancel_requested: true,
            message: "the task is running; its worker has been told to stop it and will report it cancelled"
                .to_string(),
        },
    }))
}

/// Largest `limit` of a log read.
const MAX_LOG_LIMIT: i64 = 100_000;

fn log_query(query: &QueryParams) -> ApiResult<LogQuery> {
    let limit = match query.int("limit")? {
        None => None,
        Some(n) if (1..=MAX_LOG_LIMIT).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(ApiError::invalid_query(&aiopslab_core::ValidationError::new(
                "limit",
                format!("must be between 1 and {MAX_LOG_LIMIT}, got {n}"),
            )))
        }
    };
    let after_id = match query.int("after_id")? {
        Some(n) if n < 0 => {
            return Err(ApiError::invalid_query(&aiopslab_core::ValidationError::new(
                "after_id",
                format!("must be 0 or more, got {n}"),
            )))
        }
        other => other,
    };
    Ok(LogQuery::default()
        .with_min_level(query.parsed("level")?)
        .with_since(query.timestamp("since")?)
        .with_after_id(after_id)
        .with_limit(limit))
}

/// Reads a task's log; `?follow=true` streams it as Server-Sent Events until
/// the task is terminal.
#[utoipa::path(
    get, path = "/tasks/{id}/logs", tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "Task id"),
        ("level" = Option<aiopslab_core::LogLevel>, Query, description = "Only entries at this level or more severe"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only entries at or after this RFC 3339 instant"),
        ("after_id" = Option<i64>, Query, minimum = 0, description = "Only entries with a greater id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "At most this many entries"),
        ("follow" = Option<bool>, Query, description = "Stream as text/event-stream: one `log` event per entry (data = the entry as JSON), then an `end` event (data = the final status) when the task is terminal"),
    ),
    responses(
        (status = 200, description = "The entries in append order (or an event stream with follow=true)",
         content((LogsResponse = "application/json"), (LogStreamEvent = "text/event-stream"))),
        (status = 400, description = "The id is not a UUID, or a bad query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_logs(
    State(state): State<ApiState>,
    TaskIdPath(id): TaskIdPath,
    query: QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut log_query = log_query(&query)?;
    if query.flag("follow", false)? {
        // Resume after the last event a reconnecting EventSource saw.
        if let Some(last) = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            log_query.after_id = Some(log_query.after_id.map_or(last, |a| a.max(last)));
        }
        // Unknown task: 404 before the stream starts.
        state.tasks.get_task(id).await?;
        return Ok(sse::follow_logs(state, id, log_query).into_response());
    }
    let logs = state.tasks.get_logs(id, &log_query).await?;
    Ok(Json(LogsResponse { task_id: id, logs }).into_response())
}

/// Reads a task's trajectory (the RL record of its episode).
#[utoipa::path(
    get, path = "/tasks/{id}/trajectory", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The trajectory, with its `outcome` and `model_version`; `reward` is null unless the outcome is `valid`", body = Trajectory),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "No such task, or no trajectory saved yet", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_trajectory(State(state): State<ApiState>, TaskIdPath(id): TaskIdPath) -> ApiResult<Json<Trajectory>> {
    match state.tasks.get_trajectory(id).await? {
        Some(mut trajectory) => {
            // Labelled from the task as it is now: a trajectory is saved just before the finish, so a read in
            // between sees a running task, no outcome and no reward yet.
            let task = state.tasks.get_task(id).await?;
            trajectory.label(task.status, &task.parameters.agent_config);
            Ok(Json(trajectory))
        }
        None => Err(ApiError::not_found("trajectory", &id.to_string())),
    }
}
