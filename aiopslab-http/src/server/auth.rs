//! Bearer-token guards: the client token guards the public API, the worker
//! token guards the worker protocol; `/health` is never guarded.
//!
//! No token configured for a group means that group is open (the default, as
//! the quickstart uses no authentication). A missing or unknown token is a
//! 401 `unauthorized`; a valid token of the other kind (a client token on a
//! worker route or the reverse) is a 403 `forbidden`. Tokens are compared in
//! constant time.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::ApiState;

/// Which token a route group needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The public API: the client token.
    Client,
    /// The worker protocol: the worker token.
    Worker,
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the request's bearer token against the group's token.
pub fn check(state: &ApiState, guard: Guard, headers: &HeaderMap) -> Result<(), ApiError> {
    let (required, other, what) = match guard {
        Guard::Client => (&state.config.client_token, &state.config.worker_token, "client"),
        Guard::Worker => (&state.config.worker_token, &state.config.client_token, "worker"),
    };
    let Some(required) = required else {
        return Ok(());
    };
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(format!(
            "this route needs the {what} token: send `Authorization: Bearer <token>`"
        )));
    };
    if constant_time_eq(token.as_bytes(), required.as_bytes()) {
        return Ok(());
    }
    if other
        .as_ref()
        .is_some_and(|other| constant_time_eq(token.as_bytes(), other.as_bytes()))
    {
        return Err(ApiError::forbidden(format!(
            "this token may not use this route: it needs the {what} token"
        )));
    }
    Err(ApiError::unauthorized("invalid token"))
}

/// Middleware: the public API's guard.
pub async fn require_client(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match check(&state, Guard::Client, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Middleware: the worker protocol's guard.
pub async fn require_worker(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match check(&state, Guard::Worker, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_is_parsed_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
