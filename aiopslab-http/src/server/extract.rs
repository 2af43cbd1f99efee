//! Extractors that answer with the API's error shape instead of axum's
//! plain-text rejections: JSON bodies ([`ApiJson`], [`ApiJsonBytes`]), path
//! ids ([`TaskIdPath`], [`GroupIdPath`], [`WorkerIdPath`], [`DeliveryPath`],
//! [`ExperimentPath`])
//! and query strings ([`QueryParams`], parsed by hand with the core
//! validators so a bad value names its parameter).

use std::collections::HashMap;
use std::str::FromStr;

use aiopslab_core::batch::GroupId;
use aiopslab_core::{TaskId, ValidationError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;

/// A JSON request body. A `Content-Type` other than JSON (or none) is a 415
/// `unsupported_media_type`; malformed JSON, a wrong type (an array where an
/// object belongs included) or an unknown field is a 400 `invalid_json` whose
/// message (from serde) says what and where; a body over the route's limit
/// is a 413 `payload_too_large`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + Serialize,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON request body parsed like [`ApiJson`], together with its raw bytes
/// (for the `Idempotency-Key` fingerprint, which covers the exact body).
#[derive(Debug, Clone)]
pub struct ApiJsonBytes<T>(pub T, pub Bytes);

impl<S, T> FromRequest<S> for ApiJsonBytes<T>
where
    T: DeserializeOwned + Serialize,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        let value = parse_json(&bytes)?;
        Ok(ApiJsonBytes(value, bytes))
    }
}

/// True for `application/json` and `application/<anything>+json`, with any
/// parameters (`; charset=utf-8`), in any case.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", "json")) => true,
        Some(("application", subtype)) => subtype.ends_with("+json") && subtype.len() > "+json".len(),
        _ => false,
    }
}

/// A JSON body must say so: anything else (or no `Content-Type`) is a 415.
pub(super) fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    match value {
        Some(value) if is_json_media_type(value) => Ok(()),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub(super) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(None)
        } else {
            ApiError::invalid_json(format!("could not read the request body: {rejection}"), None)
        }
    })
}

/// Parses a JSON object body, naming the offending field on a type error.
/// An array where the type wants an object is a type error too (serde would
/// read a struct from an array of its fields, so `"capabilities": []` would
/// pass as every default).
pub fn parse_json<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: T = parse_loosely(bytes)?;
    if bytes.contains(&b'[') {
        if let (Ok(sent), Ok(typed)) = (serde_json::from_slice::<Value>(bytes), serde_json::to_value(&value)) {
            refuse_arrays_for_objects(&sent, &typed, &mut String::new())?;
        }
    }
    Ok(value)
}

pub(super) fn parse_loosely<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::invalid_json(
                "the request body is empty; expected a JSON object",
                None,
            ))
        }
        // Every request body is an object; serde would otherwise accept a
        // struct written as an array.
        Some(b'{') => {}
        Some(_) => return Err(ApiError::invalid_json("the request body must be a JSON object", None)),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let first = serde_path_to_error::deserialize(&mut deserializer).map_err(path_error);
    let value: T = match first {
        Ok(value) => value,
        // JSON Schema counts `3.0` as an integer; serde does not. Only then,
        // read the body again with integral floats written as integers.
        Err(error) if error.body.error.contains("invalid type: floating point") => {
            let mut loose: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::invalid_json(format!("invalid JSON body: {e}"), None))?;
            integral_floats_to_integers(&mut loose);
            return serde_path_to_error::deserialize(loose).map_err(path_error);
        }
        Err(error) => return Err(error),
    };
    // Trailing garbage after the value is malformed JSON too.
    deserializer
        .end()
        .map_err(|e| ApiError::invalid_json(format!("invalid JSON body: {e}"), None))?;
    Ok(value)
}

/// Walks what was sent beside what it was read as: where the type holds an
/// object (a struct) and the body held an array, the body is refused,
/// naming the field (`capabilities`, `outcome.result`, `entries[0]`).
fn refuse_arrays_for_objects(sent: &Value, typed: &Value, path: &mut String) -> Result<(), ApiError> {
    match (sent, typed) {
        (Value::Array(_), Value::Object(_)) => Err(ApiError::invalid_json(
            format!("invalid JSON body at {path}: invalid type: sequence, expected a JSON object"),
            Some(path.clone()),
        )),
        (Value::Object(sent), Value::Object(typed)) => {
            for (key, sent) in sent {
                if let Some(typed) = typed.get(key) {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    refuse_arrays_for_objects(sent, typed, path)?;
                    path.truncate(len);
                }
            }
            Ok(())
        }
        (Value::Array(sent), Value::Array(typed)) if sent.len() == typed.len() => {
            for (i, (sent, typed)) in sent.iter().zip(typed).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                refuse_arrays_for_objects(sent, typed, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn path_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if path.is_empty() || path == "." {
        ApiError::invalid_json(format!("invalid JSON body: {inner}"), None)
    } else {
        ApiError::invalid_json(format!("invalid JSON body at {path}: {inner}"), Some(path))
    }
}

/// Rewrites every float with no fractional part that fits an `i64` (or a
/// `u64`) as that integer.
fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                    *value = Value::from(f as i64);
                } else if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                    *value = Value::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// The `{id}` segment of a task route, which must be a UUID (else 400 naming `id`).
#[derive(Debug, Clone, Copy)]
pub struct TaskIdPath(pub TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        uuid_path(parts, state, "id").await.map(TaskIdPath)
    }
}

/// The `{group_id}` segment of a group route, which must be a UUID (else 400
/// naming `group_id`).
#[derive(Debug, Clone, Copy)]
pub struct GroupIdPath(pub GroupId);

impl<S: Send + Sync> FromRequestParts<S> for GroupIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        uuid_path(parts, state, "group_id").await.map(GroupIdPath)
    }
}

/// Reads the route's single path segment as a UUID; errors name `field`.
async fn uuid_path<S: Send + Sync>(parts: &mut Parts, state: &S, field: &str) -> Result<uuid::Uuid, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::validation(&ValidationError::new(field, e.body_text())))?;
    raw.parse::<uuid::Uuid>().map_err(|_| {
        ApiError::validation(&ValidationError::new(
            field,
            format!("must be a UUID such as 550e8400-e29b-41d4-a716-446655440000, got {raw:?}"),
        ))
    })
}

/// The `{id}` and `{delivery_id}` segments of a webhook delivery route: a
/// task UUID (else 400 naming `id`) and a positive delivery id (else 400
/// naming `delivery_id`).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPath {
    /// The task.
    pub task_id: TaskId,
    /// The delivery (an outbox id).
    pub delivery_id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for DeliveryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((task, delivery)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(&ValidationError::new("id", e.body_text())))?;
        let task_id = task.parse::<uuid::Uuid>().map_err(|_| {
            ApiError::validation(&ValidationError::new(
                "id",
                format!("must be a UUID such as 550e8400-e29b-41d4-a716-446655440000, got {task:?}"),
            ))
        })?;
        let delivery_id = delivery.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::validation(&ValidationError::new(
                "delivery_id",
                format!("must be a positive integer (a delivery's `id`), got {delivery:?}"),
            ))
        })?;
        Ok(DeliveryPath { task_id, delivery_id })
    }
}

/// The `{id}` segment of a worker route.
#[derive(Debug, Clone)]
pub struct WorkerIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for WorkerIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        text_path(parts, state, "id").await.map(WorkerIdPath)
    }
}

/// Reads the route's single path segment as text; errors name `field`.
async fn text_path<S: Send + Sync>(parts: &mut Parts, state: &S, field: &str) -> Result<String, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::validation(&ValidationError::new(field, e.body_text())))?;
    Ok(raw)
}

/// The `{name}` segment of an experiment route: an experiment name (see
/// [`EXPERIMENT_NAME_PATTERN`](aiopslab_core::experiment::EXPERIMENT_NAME_PATTERN); else 400 naming `name`).
#[derive(Debug, Clone)]
pub struct ExperimentPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ExperimentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = text_path(parts, state, "name").await?;
        aiopslab_core::experiment::validate_experiment_name("name", &raw).map_err(|e| ApiError::validation(&e))?;
        Ok(ExperimentPath(raw))
    }
}

/// The raw query string as name → value (the last occurrence wins). Values
/// are parsed by the handlers with the typed getters, which answer 400
/// `invalid_query` naming the parameter. Names a route does not take were
/// refused before the handler ran (see `query_guard`).
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::invalid_query(&ValidationError::new("query", format!("malformed query string: {e}")))
        })?;
        Ok(QueryParams(pairs.into_iter().collect()))
    }
}

fn invalid(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_query(&ValidationError::new(name, message))
}

impl QueryParams {
    /// A text parameter; empty values count as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A typed parameter's raw value: absent is `None`; present but empty is
    /// an error (no type here has an empty spelling).
    pub fn typed(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name).map(String::as_str) {
            None => Ok(None),
            Some("") => Err(invalid(name, "must not be empty")),
            Some(raw) => Ok(Some(raw)),
        }
    }

    /// A parameter parsed with a core `FromStr` whose error names the field.
    pub fn parsed<T>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T: FromStr<Err = ValidationError>,
    {
        match self.typed(name)? {
            None => Ok(None),
            Some(raw) => raw.parse::<T>().map(Some).map_err(|e| invalid(name, e.message)),
        }
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| invalid(name, format!("must be an integer, got {raw:?}"))),
        }
    }

    /// A boolean parameter (`true`/`false`, `1`/`0`); `default` when absent.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.typed(name)? {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(raw) => Err(invalid(name, format!("must be true or false, got {raw:?}"))),
        }
    }

    /// An RFC 3339 timestamp parameter (`2025-09-12T10:00:00Z`).
    pub fn timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(raw) => DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    invalid(
                        name,
                        format!("must be an RFC 3339 timestamp such as 2025-09-12T10:00:00Z, got {raw:?} ({e})"),
                    )
                }),
        }
    }

    /// A UUID parameter.
    pub fn parsed_uuid(&self, name: &str) -> Result<Option<uuid::Uuid>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<uuid::Uuid>()
                .map(Some)
                .map_err(|_| invalid(name, format!("must be a UUID, got {raw:?}"))),
        }
    }

    /// An experiment name parameter (see
    /// [`EXPERIMENT_NAME_PATTERN`](aiopslab_core::experiment::EXPERIMENT_NAME_PATTERN)).
    pub fn experiment(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.typed(name)? {
            None => Ok(None),
            Some(raw) => aiopslab_core::experiment::validate_experiment_name(name, raw)
                .map(|()| Some(raw.to_string()))
                .map_err(|e| invalid(name, e.message)),
        }
    }

    /// A text parameter of at most `max_len` characters. Characters, not
    /// bytes: the OpenAPI document's `maxLength` counts code points.
    pub fn bounded_text(&self, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
        match self.text(name) {
            Some(v) if v.chars().count() > max_len => {
                Err(invalid(name, format!("must be at most {max_len} characters")))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/+json",
            "json",
            "text/json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
