//! The one error shape of the API: `{"error": "...", "code": "...", "details": {...}}`.
//!
//! Every failure a handler, an extractor, the auth guard or the router itself
//! produces becomes an [`ApiError`], so a client never sees a plain-text
//! rejection. [`StoreError`]s map losslessly to status codes and details (the
//! HTTP client turns them back into the same variants); internal and
//! transient store failures get a generic message, and the real one goes to
//! the server's log only.

use aiopslab_core::{StoreError, ValidationError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
    /// A stable machine-readable code: `invalid_json`, `validation_error`,
    /// `invalid_query`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `already_terminal`, `worker_alive`, `worker_superseded`, `lease_lost`,
    /// `idempotency_conflict`, `webhook_not_failed`, `redelivery_in_progress`,
    /// `payload_too_large`, `unsupported_media_type`, `uri_too_long`,
    /// `headers_too_large`, `bad_request` (a request that is not valid
    /// HTTP/1.1), `webhooks_disabled`, `unavailable`, `internal`.
    pub code: String,
    /// Structured details: `field`/`message` for validation errors,
    /// `entity`/`id` for not found, `task_id`/`attempt` for a lost lease,
    /// `task_id`/`status` for an already terminal task, `key` for an
    /// idempotency conflict.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// An error response: status code plus [`ErrorBody`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with a status, a code, a message and details (a JSON object;
    /// anything else is sent as an empty object).
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>, details: Value) -> Self {
        let details = match details {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            status,
            body: ErrorBody {
                error: message.into(),
                code: code.to_string(),
                details,
            },
        }
    }

    /// 400 `invalid_json`: the body is not JSON, has a wrong type or an unknown field.
    pub fn invalid_json(message: impl Into<String>, field: Option<String>) -> Self {
        let message = message.into();
        let details = match field {
            Some(field) => json!({ "field": field, "message": message }),
            None => json!({ "message": message }),
        };
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message, details)
    }

    /// 400 `validation_error`, naming the field.
    pub fn validation(error: &ValidationError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            error.to_string(),
            json!({ "field": error.field, "message": error.message }),
        )
    }

    /// 400 `invalid_query`, naming the query parameter.
    pub fn invalid_query(error: &ValidationError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query parameter {error}"),
            json!({ "field": error.field, "message": error.message }),
        )
    }

    /// 404 `not_found` for an entity (`task`, `worker`, `trajectory`) and id.
    pub fn not_found(entity: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{entity} {id} not found"),
            json!({ "entity": entity, "id": id }),
        )
    }

    /// 404 `not_found` for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
            json!({ "path": path }),
        )
    }

    /// 501 `not_implemented`: the server cannot do what was asked (a capability its store lacks).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", message, json!({}))
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} is not allowed on {path}"),
            json!({ "method": method, "path": path }),
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: Option<usize>) -> Self {
        let message = match limit {
            Some(limit) => format!("request body is larger than the limit of {limit} bytes"),
            None => "request body is larger than the limit".to_string(),
        };
        let details = match limit {
            Some(limit) => json!({ "field": "body", "message": message, "limit_bytes": limit }),
            None => json!({ "field": "body", "message": message }),
        };
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message, details)
    }

    /// 415 `unsupported_media_type`: a JSON route got a body whose
    /// `Content-Type` (`got`, `None` when absent) is not JSON.
    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        let message = match got {
            Some(got) => format!("Content-Type {got:?} is not supported: send the body as application/json"),
            None => "the request has no Content-Type: send the body as application/json".to_string(),
        };
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
            json!({ "field": "Content-Type", "content_type": got, "expected": "application/json" }),
        )
    }

    /// 415 `unsupported_media_type`: a `Content-Encoding` (`got`) the route
    /// cannot decode (it takes `gzip` or none).
    pub fn unsupported_encoding(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding {got:?} is not supported: send the body as is or gzip-encoded"),
            json!({ "field": "Content-Encoding", "content_encoding": got, "expected": ["gzip", "identity"] }),
        )
    }

    /// 401 `unauthorized`: no token, or a token the server does not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message, json!({}))
    }

    /// 403 `forbidden`: a valid token of the wrong kind for this route.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message, json!({}))
    }

    /// 500 `internal`, with a generic message.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the details are in the server log",
            json!({}),
        )
    }

    /// 503 `unavailable`, with a generic message.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the task store is temporarily unavailable; retry later",
            json!({}),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { entity, id } => ApiError::not_found(entity, &id),
            StoreError::AlreadyTerminal { task_id, status } => ApiError::new(
                StatusCode::CONFLICT,
                "already_terminal",
                format!("task {task_id} is already {status}"),
                json!({ "task_id": task_id, "status": status }),
            ),
            StoreError::WorkerAlive(id) => ApiError::new(
                StatusCode::CONFLICT,
                "worker_alive",
                format!("worker {id} is already registered and alive; stop it or wait until it is marked offline"),
                json!({ "id": id, "worker_id": id }),
            ),
            StoreError::WorkerSuperseded {
                worker_id,
                current_instance,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "worker_superseded",
                format!(
                    "worker {worker_id} was taken over by instance {current_instance}; this instance must stop \
                     (two processes with one worker id keep taking it from each other: give each its own id)"
                ),
                json!({ "worker_id": worker_id, "current_instance": current_instance }),
            ),
            StoreError::LeaseLost { task_id, attempt } => ApiError::new(
                StatusCode::CONFLICT,
                "lease_lost",
                format!("lease lost for task {task_id} attempt {attempt}: the task is no longer running under it"),
                json!({ "task_id": task_id, "attempt": attempt }),
            ),
            StoreError::IdempotencyConflict { key } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!(
                    "idempotency key {key} was already used with a different request; nothing was created \
                     (use a new key for a new request)"
                ),
                json!({ "key": key }),
            ),
            StoreError::Invalid(validation) => ApiError::validation(&validation),
            StoreError::Unauthorized(message) => {
                tracing::warn!(%message, "store refused the request as unauthorized");
                ApiError::unauthorized("not authorized")
            }
            StoreError::Unavailable(message) => {
                tracing::warn!(%message, "task store unavailable");
                ApiError::unavailable()
            }
            StoreError::Internal(message) => {
                tracing::error!(%message, "task store internal error");
                ApiError::internal()
            }
            // A variant added after this mapping was written: an internal error until it is mapped.
            other => {
                tracing::error!(error = %other, "task store error this server does not know");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
