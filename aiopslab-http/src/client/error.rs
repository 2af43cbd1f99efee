//! Turning HTTP answers back into [`StoreError`]s.
//!
//! The server maps every [`StoreError`] to a status code and the error shape
//! `{"error", "code", "details"}`; this module maps it back, so code that
//! runs against an [`HttpStore`](super::HttpStore) sees the same variants as
//! code that runs against the store directly. Anything that means "try again
//! later" (the server cannot be reached, a timeout, 502/503/504, 429) becomes
//! [`StoreError::Unavailable`], which the worker runtime retries with backoff.

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

/// Maps a non-success answer to the [`StoreError`] the server started from.
/// `body` is the raw response body, which may not be JSON (a proxy's page).
pub(crate) fn status_error(status: StatusCode, body: &[u8], subject: &Subject) -> StoreError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (message, code, details) = match parsed {
        Some(b) => (b.error, b.code, b.details),
        None => (
            format!(
                "HTTP {status}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        String::from_utf8_lossy(body).chars().take(200).collect::<String>()
                    )
                }
            ),
            String::new(),
            Value::Null,
        ),
    };
    match status {
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::BAD_GATEWAY
        | StatusCode::GATEWAY_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::REQUEST_TIMEOUT => StoreError::Unavailable(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Unauthorized(message),
        // A path no route serves (an older server): not a missing task or worker, which would read as a lease
        // gone and drop what the worker was reporting.
        StatusCode::NOT_FOUND if detail_str(&details, "entity").is_none() && detail_str(&details, "path").is_some() => {
            StoreError::Internal(format!(
                "the server has no such route (is it older than this worker?): {message}"
            ))
        }
        StatusCode::NOT_FOUND => StoreError::NotFound {
            entity: static_entity(detail_str(&details, "entity"), subject.entity),
            id: detail_str(&details, "id").map_or_else(|| subject.id.clone(), str::to_string),
        },
        StatusCode::CONFLICT => conflict(&code, message, &details, subject),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
            let field = detail_str(&details, "field").unwrap_or(match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body",
                _ => "request",
            });
            let text = detail_str(&details, "message").map_or(message, str::to_string);
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
        assert!(err.is_transient(), "{err:?}");
    }
}
