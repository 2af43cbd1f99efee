//! Assembles the axum [`Router`]: the public API (client token), the worker
//! protocol (worker token), `/health` (never guarded), the docs pages, JSON
//! 404/405 fallbacks, body limits, unknown query parameters refused, and
//! request metrics by route template.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::auth::{require_client, require_worker};
use super::docs;
use super::error::ApiError;
use super::metrics;
use super::openapi::ApiDoc;
use super::query_guard::{reject_unknown_query, AllowedQueries};
use super::routes::{batches, events, experiments, export, groups, leases, system, tasks, webhooks, workers};
use super::state::ApiState;

/// Builds the router over `state`. Serve it with `axum::serve`, on a
/// [`JsonErrorsListener`](super::JsonErrorsListener) so that the answers
/// hyper gives by itself to unparsable requests are JSON too (or use
/// [`app::serve`](crate::app::serve), which does):
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use aiopslab_http::server::{router, ApiConfig, ApiState, JsonErrorsListener};
/// # let store: Arc<dyn aiopslab_core::TaskStore> = unimplemented!();
/// let state = ApiState::with_default_scheduler(store, ApiConfig::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(JsonErrorsListener::new(listener), router(state)).await
/// # }
/// ```
pub fn router(state: ApiState) -> Router {
    let config = state.config.clone();
    let queries = std::sync::Arc::new(AllowedQueries::from_openapi());

    let public = Router::new()
        .route("/tasks", post(tasks::create_task).get(tasks::list_tasks))
        .route("/tasks/batch", post(batches::create_batch))
        .route("/tasks/{id}", get(tasks::get_task).delete(tasks::cancel_task))
        .route("/tasks/{id}/logs", get(tasks::get_logs))
        .route("/tasks/{id}/trajectory", get(tasks::get_trajectory))
        .route("/tasks/{id}/webhooks", get(webhooks::list_webhooks))
        .route(
            "/tasks/{id}/webhooks/{delivery_id}/redeliver",
            post(webhooks::redeliver_webhook),
        )
        .route("/groups/{group_id}", get(groups::get_group))
        .route("/experiments", get(experiments::list_experiments))
        .route(
            "/experiments/{name}",
            get(experiments::get_experiment).put(experiments::set_experiment),
        )
        .route("/trajectories/export", get(export::export_trajectories))
        .route("/workers", get(workers::list_workers))
        .route("/workers/{id}", get(workers::get_worker))
        .route("/problems", get(system::list_problems))
        .route("/stats", get(system::stats))
        .route("/metrics", get(system::metrics))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .route_layer(from_fn_with_state(queries.clone(), reject_unknown_query))
        .route_layer(from_fn_with_state(state.clone(), require_client));

    let worker = Router::new()
        .route("/workers/register", post(workers::register_worker))
        .route("/workers/heartbeat", post(workers::heartbeat))
        .route("/workers/claim", post(workers::claim))
        .route("/workers/{id}/deregister", post(workers::deregister_worker))
        .route("/workers/{id}/events", get(events::worker_events))
        .route("/tasks/{id}/lease", post(leases::extend_lease))
        .route("/tasks/{id}/logs", post(leases::append_logs))
        .route("/tasks/{id}/finish", post(leases::finish))
        .layer(DefaultBodyLimit::max(config.worker_body_limit))
        // Trajectories grow with the square of their steps: a limit of their own.
        .route(
            "/tasks/{id}/trajectory",
            put(leases::save_trajectory).layer(DefaultBodyLimit::max(config.trajectory_body_limit)),
        )
        .route(
            "/tasks/{id}/final-report",
            post(leases::final_report).layer(DefaultBodyLimit::max(config.trajectory_body_limit)),
        )
        .route_layer(from_fn_with_state(queries, reject_unknown_query))
        .route_layer(from_fn_with_state(state.clone(), require_worker));

    let swagger = SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()).config(
        Config::new(["/openapi.json"])
            .validator_url("none")
            .try_it_out_enabled(true),
    );
    let mut docs = Router::new()
        .route("/redoc", get(docs::redoc_page))
        .route("/redoc/redoc.standalone.js", get(docs::redoc_js))
        .merge(swagger);
    if config.protect_docs {
        docs = docs.route_layer(from_fn_with_state(state.clone(), require_client));
    }

    let open = Router::new().route("/health", get(system::health));

    Router::new()
        .merge(public)
        .merge(worker)
        .merge(docs)
        .merge(open)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(from_fn(json_errors))
        .with_state(state)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::no_route(request.uri().path())
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
}

/// Safety net: an error response that is not JSON (a rejection from a layer
/// or extractor we did not map) is rewritten into the error shape, keeping
/// its status and headers (such as `Allow`).
async fn json_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::no_route(&path),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(&method, &path),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::unsupported_media_type(parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
        }
        s if s.is_server_error() => ApiError::internal(),
        s => ApiError::new(
            s,
            "bad_request",
            s.canonical_reason().unwrap_or("bad request"),
            serde_json::json!({}),
        ),
    };
    let fresh = error.into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in fresh_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, body)
}
