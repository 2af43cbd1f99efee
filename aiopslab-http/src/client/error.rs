//! Turning HTTP answers back into [`StoreError`]s.
//!
//! The server maps every [`StoreError`] to a status code and the error shape
//! `{"error", "code", "details"}`; this module maps it back, so code that
//! runs against an [`HttpStore`](super::HttpStore) sees the same variants as
//! code that runs against the store directly. Anything that means "try again
//! later" (the server cannot be reached, a timeout, 502/503/504, 429) becomes
//! [`StoreError::Unavailable`], which the worker runtime retries with backoff.
//!
//! [`ApiClient`](super::ApiClient)'s calls fail with an [`ApiError`]: that same
//! `StoreError`, plus the server's answer itself ([`ServerError`]: status, `code`,
//! message, `details`) when there was one. A program matches on the first; a
//! person is shown the second, and can tell a refusal (there is an answer) from
//! a server that could not be reached (there is none).

use aiopslab_core::{StoreError, TaskId, TaskStatus, ValidationError};
use reqwest::StatusCode;
use serde_json::Value;

use super::wire::ErrorBody;

/// Why an [`HttpStore`](super::HttpStore) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not an absolute `http://` or `https://` URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up (TLS configuration).
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The error answer of a server, as it sent it: every route answers errors as
/// `{"error", "code", "details"}` with a status code.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerError {
    /// The HTTP status (`404`).
    pub status: u16,
    /// The machine-readable `code` (`not_found`, `validation_error`, ...); empty
    /// when the answer was not the server's error shape (a proxy's page).
    pub code: String,
    /// The server's message for people (`error`), or the status and the start of
    /// the body when the answer was not the server's error shape.
    pub message: String,
    /// The `details` object (`{"entity": "task", "id": ...}`, `{"field": ...}`);
    /// `null` when there were none.
    pub details: Value,
}

impl ServerError {
    /// Reads an error answer: the server's error shape, or anything else a
    /// proxy may have put in its place.
    pub(crate) fn from_answer(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => Self {
                status: status.as_u16(),
                code: b.code,
                message: b.error,
                details: b.details,
            },
            Err(_) => {
                let mut message = format!("HTTP {status}");
                if !body.is_empty() {
                    message.push_str(": ");
                    message.extend(String::from_utf8_lossy(body).chars().take(200));
                }
                Self {
                    status: status.as_u16(),
                    code: String::new(),
                    message,
                    details: Value::Null,
                }
            }
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        match self.code.as_str() {
            "" => write!(f, " (HTTP {})", self.status),
            code => write!(f, " (HTTP {}, {code})", self.status),
        }
    }
}

/// Why an [`ApiClient`](super::ApiClient) call failed: the [`StoreError`] the
/// answer maps back to (what a program matches on, as with a local store), and
/// the server's error answer when there was one. `server` is `None` when no
/// answer came: the server could not be reached, the request timed out, or the
/// answer could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    /// The store error the failure maps to.
    pub error: StoreError,
    /// The server's error answer, when the server answered (boxed: it is large
    /// beside the store error, and most calls succeed).
    pub server: Option<Box<ServerError>>,
}

impl ApiError {
    /// True when the server answered (and refused); false when no answer came.
    pub fn is_refusal(&self) -> bool {
        self.server.is_some()
    }
}

/// A failure with no server answer behind it (a transport failure, an
/// unreadable answer, a URL that cannot be built).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self { error, server: None }
    }
}

/// The store error alone, for code written against [`StoreResult`](aiopslab_core::StoreResult).
impl From<ApiError> for StoreError {
    fn from(error: ApiError) -> Self {
        error.error
    }
}

/// What a request was about, used when an error body leaves a detail out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subject {
    /// `"task"` or `"worker"`.
    pub entity: &'static str,
    /// The task or worker id in the request.
    pub id: String,
    /// The attempt of the lease the request carried.
    pub attempt: Option<u32>,
}

impl Subject {
    /// A request about a task.
    pub fn task(id: TaskId) -> Self {
        Self {
            entity: "task",
            id: id.to_string(),
            attempt: None,
        }
    }

    /// A worker write under a lease.
    pub fn lease(id: TaskId, attempt: u32) -> Self {
        Self {
            attempt: Some(attempt),
            ..Self::task(id)
        }
    }

    /// A request about a worker.
    pub fn worker(id: &str) -> Self {
        Self {
            entity: "worker",
            id: id.to_string(),
            attempt: None,
        }
    }

    /// A request about no one entity (listings, stats).
    pub fn none() -> Self {
        Self::default()
    }
}

/// A transport failure (no connection, timeout, reset): always transient.
pub(crate) fn transport_error(error: &reqwest::Error) -> StoreError {
    StoreError::Unavailable(describe_transport(error))
}

/// A transport error with its causes (`request failed: error sending
/// request: connection refused`). Shared with the webhook deliverer.
pub(crate) fn describe_transport(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display names the URL; the source chain says why.
    let mut message = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn detail_str<'a>(details: &'a Value, key: &str) -> Option<&'a str> {
    details.get(key).and_then(Value::as_str)
}

fn static_entity(name: Option<&str>, fallback: &'static str) -> &'static str {
    match name {
        Some("task") => "task",
        Some("worker") => "worker",
        Some("trajectory") => "trajectory",
        Some("log") | Some("logs") => "logs",
        Some("webhook") => "webhook",
        Some("group") => "group",
        _ if !fallback.is_empty() => fallback,
        _ => "resource",
    }
}

/// Maps a non-success answer to the [`ApiError`] carrying the [`StoreError`]
/// the server started from. `body` is the raw response body, which may not be
/// JSON (a proxy's page).
pub(crate) fn status_error(status: StatusCode, body: &[u8], subject: &Subject) -> ApiError {
    let server = ServerError::from_answer(status, body);
    ApiError {
        error: store_error(status, &server, subject),
        server: Some(Box::new(server)),
    }
}

/// The [`StoreError`] an error answer stands for.
fn store_error(status: StatusCode, server: &ServerError, subject: &Subject) -> StoreError {
    let (message, code, details) = (server.message.clone(), server.code.as_str(), &server.details);
    match status {
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::BAD_GATEWAY
        | StatusCode::GATEWAY_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::REQUEST_TIMEOUT => StoreError::Unavailable(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Unauthorized(message),
        // A path no route serves (an older server): not a missing task or worker, which would read as a lease
        // gone and drop what the worker was reporting.
        StatusCode::NOT_FOUND if detail_str(details, "entity").is_none() && detail_str(details, "path").is_some() => {
            StoreError::Internal(format!(
                "the server has no such route (is it older than this worker?): {message}"
            ))
        }
        StatusCode::NOT_FOUND => StoreError::NotFound {
            entity: static_entity(detail_str(details, "entity"), subject.entity),
            id: detail_str(details, "id").map_or_else(|| subject.id.clone(), str::to_string),
        },
        StatusCode::CONFLICT => conflict(code, message, details, subject),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
            let field = detail_str(details, "field").unwrap_or(match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body",
                _ => "request",
            });
            let text = detail_str(details, "message").map_or(message, str::to_string);
            StoreError::Invalid(ValidationError::new(field, text))
        }
        _ => StoreError::Internal(message),
    }
}

fn task_id_of(details: &Value, subject: &Subject) -> Option<TaskId> {
    detail_str(details, "task_id")
        .or(detail_str(details, "id"))
        .or(Some(subject.id.as_str()))
        .and_then(|id| id.parse().ok())
}

fn conflict(code: &str, message: String, details: &Value, subject: &Subject) -> StoreError {
    match code {
        "worker_alive" => StoreError::WorkerAlive(
            detail_str(details, "worker_id")
                .or(detail_str(details, "id"))
                .map_or_else(|| subject.id.clone(), str::to_string),
        ),
        "worker_superseded" => StoreError::WorkerSuperseded {
            worker_id: detail_str(details, "worker_id").map_or_else(|| subject.id.clone(), str::to_string),
            current_instance: detail_str(details, "current_instance").unwrap_or_default().to_string(),
        },
        "lease_lost" => {
            let attempt = details
                .get("attempt")
                .and_then(Value::as_u64)
                .and_then(|a| u32::try_from(a).ok())
                .or(subject.attempt);
            match (task_id_of(details, subject), attempt) {
                (Some(task_id), Some(attempt)) => StoreError::LeaseLost { task_id, attempt },
                _ => StoreError::Internal(format!(
                    "lease lost, but the answer does not say for which task: {message}"
                )),
            }
        }
        "already_terminal" => {
            let status = detail_str(details, "status").and_then(|s| s.parse::<TaskStatus>().ok());
            match (task_id_of(details, subject), status) {
                (Some(task_id), Some(status)) => StoreError::AlreadyTerminal { task_id, status },
                _ => StoreError::Internal(format!("task already terminal, in an unnamed status: {message}")),
            }
        }
        "idempotency_conflict" => StoreError::IdempotencyConflict {
            key: detail_str(details, "key").unwrap_or_default().to_string(),
        },
        _ => StoreError::Internal(format!("conflict ({code}): {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn map(status: u16, body: Value, subject: &Subject) -> StoreError {
        status_error(
            StatusCode::from_u16(status).unwrap(),
            body.to_string().as_bytes(),
            subject,
        )
        .error
    }

    #[test]
    fn every_contract_error_maps_back_to_its_variant() {
        let id = Uuid::new_v4();
        let subject = Subject::lease(id, 3);
        let err = map(
            404,
            json!({"error":"task x not found","code":"not_found","details":{"entity":"task","id":"x"}}),
            &subject,
        );
        assert!(
            matches!(err, StoreError::NotFound { entity: "task", ref id } if id == "x"),
            "{err:?}"
        );
        let err = map(
            409,
            json!({"error":"lease lost","code":"lease_lost","details":{"task_id": id, "attempt": 2}}),
            &subject,
        );
        assert!(
            matches!(err, StoreError::LeaseLost { task_id, attempt: 2 } if task_id == id),
            "{err:?}"
        );
        let err = map(
            409,
            json!({"error":"lease lost","code":"lease_lost","details":{}}),
            &subject,
        );
        assert!(
            matches!(err, StoreError::LeaseLost { task_id, attempt: 3 } if task_id == id),
            "{err:?}"
        );
        let err = map(
            409,
            json!({"error":"done","code":"already_terminal","details":{"task_id": id, "status":"completed"}}),
            &subject,
        );
        assert!(
            matches!(err, StoreError::AlreadyTerminal { task_id, status: TaskStatus::Completed } if task_id == id),
            "{err:?}"
        );
        let err = map(
            409,
            json!({"error":"alive","code":"worker_alive","details":{"id":"w1"}}),
            &Subject::worker("w9"),
        );
        assert!(matches!(err, StoreError::WorkerAlive(ref w) if w == "w1"), "{err:?}");
        let err = map(
            400,
            json!({"error":"bad","code":"validation_error","details":{"field":"max_steps","message":"must be between 1 and 1000, got 0"}}),
            &Subject::none(),
        );
        assert!(
            matches!(err, StoreError::Invalid(ref v) if v.field == "max_steps" && v.message.contains("1000")),
            "{err:?}"
        );
        let err = map(
            409,
            json!({"error":"used","code":"idempotency_conflict","details":{"key":"k1"}}),
            &subject,
        );
        assert!(
            matches!(err, StoreError::IdempotencyConflict { ref key } if key == "k1"),
            "{err:?}"
        );
        assert!(matches!(
            map(401, json!({"error":"no","code":"unauthorized","details":{}}), &subject),
            StoreError::Unauthorized(_)
        ));
        assert!(matches!(
            map(403, json!({"error":"no","code":"forbidden","details":{}}), &subject),
            StoreError::Unauthorized(_)
        ));
        assert!(map(
            503,
            json!({"error":"later","code":"unavailable","details":{}}),
            &subject
        )
        .is_transient());
        assert!(matches!(
            map(500, json!({"error":"oops","code":"internal","details":{}}), &subject),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn a_non_json_gateway_error_is_transient() {
        let err = status_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", &Subject::none());
        assert!(err.error.is_transient(), "{err:?}");
        let server = err.server.expect("an answer came");
        assert_eq!((server.status, server.code.as_str()), (502, ""));
        assert_eq!(server.message, "HTTP 502 Bad Gateway: <html>bad gateway</html>");
    }

    #[test]
    fn the_servers_answer_is_kept_beside_the_store_error() {
        let body =
            json!({"error": "task 42 not found", "code": "not_found", "details": {"entity": "task", "id": "42"}});
        let err = status_error(StatusCode::NOT_FOUND, body.to_string().as_bytes(), &Subject::none());
        assert!(err.is_refusal());
        assert!(
            matches!(err.error, StoreError::NotFound { entity: "task", .. }),
            "{err:?}"
        );
        let server = err.server.expect("an answer came");
        assert_eq!(server.code, "not_found");
        assert_eq!(server.details["id"], "42");
        assert_eq!(server.to_string(), "task 42 not found (HTTP 404, not_found)");
        let transport = ApiError::from(StoreError::Unavailable("cannot connect".into()));
        assert!(!transport.is_refusal());
        assert!(matches!(StoreError::from(transport), StoreError::Unavailable(_)));
    }
}
