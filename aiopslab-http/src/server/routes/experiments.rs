//! `/experiments`: experiments as a resource — set an experiment's concurrency limit, read one with its counts,
//! list them. A task names its experiment (`experiment` in `POST /tasks`); the claim serves the experiments of
//! one priority in turn and never runs more of an experiment's tasks at once than its `max_running`.
//!
//! The limits are the store's [`Experiments`](aiopslab_core::Experiments) capability: a server whose store lacks
//! it answers these routes 501 `not_implemented` (and every experiment is then unlimited).

use aiopslab_core::{Experiment, Experiments, NewExperimentSettings};
use axum::extract::State;
use axum::Json;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::{ApiJson, ExperimentPath};
use crate::server::state::ApiState;
use crate::server::wire::ExperimentList;

/// The store's experiments, or 501.
fn experiments(state: &ApiState) -> ApiResult<&dyn Experiments> {
    state.tasks.experiments().ok_or_else(|| {
        ApiError::not_implemented(
            "this server's store keeps no experiment limits: every experiment is unlimited, and the claim still \
             serves experiments in turn",
        )
    })
}

/// Sets an experiment's concurrency limit (creating the experiment if no task names it yet). The claims that
/// start after the answer keep it: none starts a task of the experiment while `max_running` of its tasks run;
/// lowering it stops nothing that runs.
#[utoipa::path(
    put, path = "/experiments/{name}", tag = "experiments",
    params(("name" = String, Path, min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$",
            description = "Experiment name: 1-128 ASCII letters, digits, `-`, `_` or `.`")),
    request_body = NewExperimentSettings,
    responses(
        (status = 200, description = "The experiment, with its limit and counts", body = Experiment),
        (status = 400, description = "Malformed JSON, unknown field, `max_running` out of bounds, or a bad name (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 501, description = "This server's store keeps no experiment limits (`not_implemented`)", body = ErrorBody),
        (status = 503, description = "Store unavailable (or the claims in flight did not finish within 5 s)", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn set_experiment(
    State(state): State<ApiState>,
    ExperimentPath(name): ExperimentPath,
    ApiJson(body): ApiJson<NewExperimentSettings>,
) -> ApiResult<Json<Experiment>> {
    let settings = body.validate().map_err(|e| ApiError::validation(&e))?;
    let experiment = experiments(&state)?.set_experiment(&name, settings).await?;
    tracing::info!(experiment = %name, max_running = ?experiment.max_running, "experiment limit set");
    Ok(Json(experiment))
}

/// Reads one experiment: its limit and how many of its tasks run and wait now.
#[utoipa::path(
    get, path = "/experiments/{name}", tag = "experiments",
    params(("name" = String, Path, min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$",
            description = "Experiment name")),
    responses(
        (status = 200, description = "The experiment", body = Experiment),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 404, description = "Neither configured nor named by a pending or running task", body = ErrorBody),
        (status = 501, description = "This server's store keeps no experiments (`not_implemented`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn get_experiment(
    State(state): State<ApiState>,
    ExperimentPath(name): ExperimentPath,
) -> ApiResult<Json<Experiment>> {
    Ok(Json(experiments(&state)?.get_experiment(&name).await?))
}

/// Lists the experiments: every one configured, and every one with pending or running tasks, by name.
#[utoipa::path(
    get, path = "/experiments", tag = "experiments",
    responses(
        (status = 200, description = "The experiments, by name", body = ExperimentList),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 501, description = "This server's store keeps no experiments (`not_implemented`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn list_experiments(State(state): State<ApiState>) -> ApiResult<Json<ExperimentList>> {
    Ok(Json(ExperimentList {
        experiments: experiments(&state)?.list_experiments().await?,
    }))
}
