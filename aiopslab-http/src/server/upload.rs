//! [`TrajectoryUpload`]: the body of `PUT /tasks/{id}/trajectory`, which may
//! be far larger than any other request.
//!
//! Every LLM call of a trajectory carries its whole request, so a trajectory
//! grows with the square of its steps: a 1000-step episode is ~160 MB of
//! JSON. The route has a limit of its own
//! ([`ApiConfig::trajectory_body_limit`](super::ApiConfig::trajectory_body_limit),
//! 512 MiB by default) and accepts `Content-Encoding: gzip`, which shrinks
//! such a body about tenfold on the wire; the limit applies to the JSON
//! after decompression too, so a small gzip bomb is refused as a 413 like a
//! big body. Decompression and parsing run on the blocking pool: a large
//! trajectory takes a second or more of CPU.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::extract::{parse_loosely, read_body, require_json_content_type};
use super::state::ApiState;

/// A JSON body, plain or gzip-compressed, within the trajectory limit.
#[derive(Debug, Clone)]
pub struct TrajectoryUpload<T>(pub T);

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Ok("identity") => Ok(Encoding::Identity),
        Ok("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        other => Err(ApiError::unsupported_encoding(other.unwrap_or("<not text>"))),
    }
}

/// Inflates `compressed`, refusing more than `limit` bytes of output.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut decoded = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(compressed)
        .take(cap)
        .read_to_end(&mut decoded)
        .map_err(|e| ApiError::invalid_json(format!("the gzip-encoded body could not be decoded: {e}"), None))?;
    if decoded.len() > limit {
        return Err(ApiError::payload_too_large(Some(limit)));
    }
    Ok(decoded)
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "decoding a trajectory body panicked or was cancelled");
        ApiError::internal()
    })?
}

impl<T> FromRequest<ApiState> for TrajectoryUpload<T>
where
    T: DeserializeOwned + Send + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let encoding = content_encoding(req.headers())?;
        let limit = state.config.trajectory_body_limit;
        let bytes: Bytes = read_body(req, state).await?;
        let json = match encoding {
            Encoding::Identity => bytes,
            Encoding::Gzip => Bytes::from(blocking(move || gunzip(&bytes, limit)).await?),
        };
        blocking(move || parse_loosely::<T>(&json)).await.map(TrajectoryUpload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_round_trips_within_the_limit_and_is_refused_beyond() {
        let data = vec![b'a'; 10_000];
        assert_eq!(gunzip(&gzip(&data), 10_000).unwrap(), data);
        let refused = gunzip(&gzip(&data), 9_999).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let corrupt = gunzip(b"not gzip at all", 10_000).unwrap_err();
        assert_eq!(corrupt.status, axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn encodings_are_named() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_encoding(&headers).unwrap(), Encoding::Identity);
        headers.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(content_encoding(&headers).unwrap(), Encoding::Gzip);
        headers.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let refused = content_encoding(&headers).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(refused.body.error.contains("br"), "{}", refused.body.error);
    }
}
