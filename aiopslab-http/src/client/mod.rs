//! The remote-worker client: [`HttpStore`], a
//! [`TaskStore`](aiopslab_core::TaskStore) that talks to an aiopslab server
//! over HTTP.
//!
//! A worker on another machine runs the very same
//! [`WorkerRuntime`](aiopslab_core::runtime::WorkerRuntime) against an
//! `HttpStore` as an in-process worker runs against the database: register,
//! heartbeat, claim, extend the lease, append logs, save the trajectory,
//! finish and deregister all go through the worker protocol
//! (`/workers/register`, `/workers/heartbeat`, `/workers/claim`,
//! `/tasks/{id}/lease`, `/tasks/{id}/logs`, `/tasks/{id}/trajectory`,
//! `/tasks/{id}/finish`, `/workers/{id}/deregister`), every write carrying
//! its lease token. The worker needs no database credentials, only the
//! server URL and, when the server requires one, the worker token.
//!
//! The public reads and writes (`get_task`, `list_tasks`, `get_logs`,
//! `create_task`, `cancel_task`, `stats`, ...) use the public API, so the
//! same type also serves as a plain Rust client of a server.
//!
//! Errors come back as the `StoreError` the server started from (the error
//! body's `code` and `details` name the variant and its fields). An
//! unreachable server, a timeout, a 502/503/504 or a 429 is
//! `StoreError::Unavailable`, so the runtime's retry-with-backoff rides out
//! a server restart and delivers a finished result once the server is back.

mod error;
mod store;
mod wire;

pub(crate) use error::describe_transport;
pub use error::ClientError;

use std::fmt;
use std::time::Duration;

use aiopslab_core::{StoreError, StoreResult};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use error::{status_error, transport_error, Subject};

/// How long one request may take, end to end, unless changed with
/// [`HttpStore::with_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which token a route is guarded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The public API: the client token.
    Public,
    /// The worker protocol: the worker token.
    Worker,
}

/// A [`TaskStore`](aiopslab_core::TaskStore) backed by an aiopslab server's
/// HTTP API. Cheap to clone (the connection pool is shared).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use aiopslab_core::TaskStore;
/// use aiopslab_http::client::HttpStore;
///
/// let store = HttpStore::new("http://127.0.0.1:8000", Some("worker-secret".into()))?;
/// let stats = store.stats().await?;
/// println!("{stats:?}");
/// # Ok(()) }
/// ```
///
/// A remote worker never sweeps: [`sweep`](aiopslab_core::TaskStore::sweep)
/// returns an empty report, because the server runs the sweeper next to its
/// database. Store events ([`subscribe`](aiopslab_core::TaskStore::subscribe))
/// are not carried over HTTP; the runtime falls back to polling, and an idle
/// worker's heartbeat hands it its next task.
#[derive(Clone)]
pub struct HttpStore {
    http: reqwest::Client,
    base: Url,
    worker_token: Option<String>,
    client_token: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are secrets: say whether they are set, never what they are.
        f.debug_struct("HttpStore")
            .field("base", &self.base.as_str())
            .field("worker_token", &self.worker_token.as_ref().map(|_| "<set>"))
            .field("client_token", &self.client_token.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpStore {
    /// A client of the server at `base_url` (`http://host:8000`, optionally
    /// with a path prefix). `worker_token` is sent as `Authorization: Bearer`
    /// on worker-protocol routes when the server requires it.
    pub fn new(base_url: &str, worker_token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL must name a host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL must not carry a query or a fragment"));
        }
        // A trailing slash makes the path a prefix that routes extend.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("aiopslab-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base,
            worker_token: worker_token.filter(|t| !t.is_empty()),
            client_token: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Sets the token sent on public routes (task reads, creation, cancel,
    /// stats) when the server requires a client token.
    pub fn with_client_token(mut self, token: Option<String>) -> Self {
        self.client_token = token.filter(|t| !t.is_empty());
        self
    }

    /// Sets how long one request may take end to end (default 30 s). A
    /// request that takes longer fails with `StoreError::Unavailable`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under the base, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> StoreResult<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| StoreError::Internal(format!("server URL {} cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A request to `segments`, with the token of its guard and the timeout.
    fn request(&self, method: Method, segments: &[&str], guard: Guard) -> StoreResult<RequestBuilder> {
        let url = self.url(segments)?;
        let mut request = self.http.request(method, url).timeout(self.timeout);
        let token = match guard {
            Guard::Public => &self.client_token,
            Guard::Worker => &self.worker_token,
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    /// Sends `request`; a success status returns the response, anything
    /// else the mapped [`StoreError`].
    async fn send(&self, request: RequestBuilder, subject: &Subject) -> StoreResult<Response> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        tracing::debug!(url = %response.url(), %status, "aiopslab server answered");
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        Err(status_error(status, &body, subject))
    }

    /// Sends `request` and decodes a JSON answer.
    async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder, subject: &Subject) -> StoreResult<T> {
        let response = self.send(request, subject).await?;
        decode(response).await
    }

    /// Sends `request` and ignores the answer's body.
    async fn send_empty(&self, request: RequestBuilder, subject: &Subject) -> StoreResult<StatusCode> {
        let response = self.send(request, subject).await?;
        let status = response.status();
        // Drain the body so the connection goes back to the pool.
        response.bytes().await.map_err(|e| transport_error(&e))?;
        Ok(status)
    }
}

/// Reads and decodes a JSON body; a body cut short is transient, a body of
/// the wrong shape is not.
async fn decode<T: DeserializeOwned>(response: Response) -> StoreResult<T> {
    let url = response.url().clone();
    let body = response.bytes().await.map_err(|e| transport_error(&e))?;
    serde_json::from_slice(&body).map_err(|e| StoreError::Internal(format!("unexpected answer from {url}: {e}")))
}
