//! Catalog and operations routes: `/problems`, `/stats`, `/health`, `/metrics`.

use aiopslab_core::catalog::{self, Application, TaskType};
use aiopslab_core::{StoreError, StoreStats, ValidationError};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::QueryParams;
use crate::server::metrics;
use crate::server::state::ApiState;
use crate::server::wire::{HealthResponse, ProblemList};

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

const APPLICATIONS: [Application; 4] = [
    Application::HotelReservation,
    Application::SocialNetwork,
    Application::AstronomyShop,
    Application::Flower,
];

const TASK_TYPES: [TaskType; 4] = [
    TaskType::Detection,
    TaskType::Localization,
    TaskType::Analysis,
    TaskType::Mitigation,
];

fn application_name(application: Application) -> String {
    format!("{application:?}")
}

fn parse_application(raw: &str) -> Result<Application, ValidationError> {
    let wanted = normalize(raw);
    APPLICATIONS
        .into_iter()
        .find(|a| normalize(&application_name(*a)) == wanted)
        .ok_or_else(|| {
            ValidationError::new(
                "application",
                format!(
                    "unknown application {raw:?}; expected HotelReservation, SocialNetwork, AstronomyShop or Flower"
                ),
            )
        })
}

pub(crate) fn parse_task_type(raw: &str) -> Result<TaskType, ValidationError> {
    let wanted = normalize(raw);
    TASK_TYPES.into_iter().find(|t| t.as_str() == wanted).ok_or_else(|| {
        ValidationError::new(
            "task_type",
            format!("unknown task type {raw:?}; expected detection, localization, analysis or mitigation"),
        )
    })
}

/// Lists the AIOpsLab problem catalog.
#[utoipa::path(
    get, path = "/problems", tag = "catalog",
    params(
        ("task_type" = Option<TaskType>, Query, description = "detection, localization, analysis or mitigation"),
        ("application" = Option<Application>, Query, description = "HotelReservation, SocialNetwork, AstronomyShop or Flower (case and separators ignored)"),
    ),
    responses(
        (status = 200, description = "The matching problems", body = ProblemList),
        (status = 400, description = "A query parameter is invalid (names it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn list_problems(query: QueryParams) -> ApiResult<Json<ProblemList>> {
    let application = query
        .typed("application")?
        .map(parse_application)
        .transpose()
        .map_err(|e| ApiError::invalid_query(&e))?;
    let task_type = query
        .typed("task_type")?
        .map(parse_task_type)
        .transpose()
        .map_err(|e| ApiError::invalid_query(&e))?;
    let problems: Vec<_> = catalog::filter(application, task_type).copied().collect();
    Ok(Json(ProblemList {
        total: problems.len(),
        problems,
    }))
}

/// Counts of tasks by status, pending tasks by backend type, workers by status.
#[utoipa::path(
    get, path = "/stats", tag = "operations",
    responses(
        (status = 200, description = "The counts", body = StoreStats),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn stats(State(state): State<ApiState>) -> ApiResult<Json<StoreStats>> {
    Ok(Json(state.fleet.stats().await?))
}

/// Liveness and store reachability. Never authenticated.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The server and its store answer", body = HealthResponse),
        (status = 503, description = "The store does not answer", body = HealthResponse),
    )
)]
pub async fn health(State(state): State<ApiState>) -> Response {
    // A primary-key read of an id that never exists: cheap on any store.
    let reachable = match state.tasks.get_task(Uuid::nil()).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => true,
        Err(error) => {
            tracing::warn!(%error, "health check: store does not answer");
            false
        }
    };
    let body = HealthResponse {
        status: if reachable { "ok" } else { "unavailable" }.to_string(),
        store: state.config.store_kind.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let status = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "Missing or invalid client token", body = ErrorBody),
        (status = 403, description = "Worker token used on a public route", body = ErrorBody),
    ),
    security((), ("client_token" = []))
)]
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let body = metrics::render(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_filters_parse_loosely() {
        assert_eq!(
            parse_application("hotel_reservation").unwrap(),
            Application::HotelReservation
        );
        assert_eq!(parse_application("SocialNetwork").unwrap(), Application::SocialNetwork);
        assert!(parse_application("nope").is_err());
        assert_eq!(parse_task_type("Detection").unwrap(), TaskType::Detection);
        assert_eq!(parse_task_type("nope").unwrap_err().field, "task_type");
    }
}
