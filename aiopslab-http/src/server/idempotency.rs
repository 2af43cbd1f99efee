//! The `Idempotency-Key` header of `POST /tasks` and `POST /tasks/batch`.
//!
//! A client that retries a submission (its first answer was lost) sends the
//! same key again: the store creates nothing the second time and the server
//! replays the first answer, marked `Idempotent-Replayed: true`. The key is
//! bound to a fingerprint of the request — SHA-256 over the method, the path
//! and the exact body bytes — so the same key with a different request is a
//! 409 `idempotency_conflict` instead of a silent replay of something else.
//! Keys are kept by the store for its lifetime (they do not expire).

use aiopslab_core::batch::IdempotencyKey;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header set on a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's key with its fingerprint, or `None` when it sent no key.
/// A key that is not 1–255 visible ASCII characters is a 400
/// `validation_error` naming `Idempotency-Key`.
pub fn idempotency_key(
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> ApiResult<Option<IdempotencyKey>> {
    let Some(raw) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw.to_str().unwrap_or("\u{0}");
    IdempotencyKey::new(key, fingerprint(method, path, body))
        .map(Some)
        .map_err(|e| ApiError::validation(&e))
}

/// Hex SHA-256 of `METHOD path\n` followed by the body bytes.
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            use std::fmt::Write as _;
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Marks a replayed answer with `Idempotent-Replayed: true`.
pub fn mark_replayed(response: &mut Response, replayed: bool) {
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let a = fingerprint(&Method::POST, "/tasks", b"{}");
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint(&Method::POST, "/tasks", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/tasks/batch", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/tasks", b"{ }"));
    }

    #[test]
    fn keys_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(idempotency_key(&headers, &Method::POST, "/tasks", b"{}")
            .unwrap()
            .is_none());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("retry-1"));
        let key = idempotency_key(&headers, &Method::POST, "/tasks", b"{}")
            .unwrap()
            .unwrap();
        assert_eq!(key.key, "retry-1");
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("has space"));
        let err = idempotency_key(&headers, &Method::POST, "/tasks", b"{}").unwrap_err();
        assert_eq!(err.body.details["field"], "Idempotency-Key");
    }
}
