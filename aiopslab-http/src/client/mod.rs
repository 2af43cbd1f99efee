//! Clients of an aiopslab server over HTTP: [`HttpStore`], the
//! [`WorkerQueue`](aiopslab_core::WorkerQueue) of a remote worker (the
//! worker protocol), and [`ApiClient`], the task API, the operator's reads
//! and the export for Rust programs (the public API).
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
//! [`ApiClient`] makes the task calls of the public API (`/tasks`,
//! `/tasks/batch`, ...) and implements [`FleetView`](aiopslab_core::FleetView)
//! and [`EpisodeExport`](aiopslab_core::EpisodeExport) over it (`/workers`,
//! `/stats`, `/trajectories/export`), sending the client token. It also reads
//! what a person's tools show: a followed log ([`ApiClient::follow_logs`],
//! Server-Sent Events), a batch group, the problem catalog, and the export as a
//! byte stream ([`ApiClient::export_stream`]). Neither client sweeps nor
//! delivers webhooks: the server runs both beside its store.
//!
//! Errors come back as the `StoreError` the server started from (the error
//! body's `code` and `details` name the variant and its fields); an
//! `ApiClient` call's [`ApiError`] also keeps the server's answer itself. An
//! unreachable server, a timeout, a 502/503/504 or a 429 is
//! `StoreError::Unavailable`, so the runtime's retry-with-backoff rides out
//! a server restart and delivers a finished result once the server is back.

mod api;
mod error;
mod events;
mod export;
mod follow;
mod sse;
mod store;
mod wire;

pub use api::ApiClient;
pub use export::{ExportQuery, ExportStream, Outcomes};
pub use follow::{LogEvent, LogFollow, FOLLOW_SILENCE};
pub use wire::ProblemInfo;

pub(crate) use error::describe_transport;
pub use error::{ApiError, ClientError, ServerError};

/// What an [`ApiClient`] call returns: an [`ApiError`] carries the
/// [`StoreError`] and the server's answer.
pub type ApiResult<T> = Result<T, ApiError>;

use std::fmt;
use std::time::Duration;

use aiopslab_core::{StoreError, StoreResult};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use error::{status_error, transport_error, Subject};

/// How long one request may take, end to end, unless changed with
/// [`HttpStore::with_request_timeout`] or [`ApiClient::with_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which routes a connection uses, so which token it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The public API: the client token.
    Public,
    /// The worker protocol: the worker token.
    Worker,
}

/// A remote worker's store: the [`WorkerQueue`](aiopslab_core::WorkerQueue)
/// of an aiopslab server, over its worker protocol. Cheap to clone (the
/// connection pool is shared).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use aiopslab_core::{WorkerQueue, WorkerRegistration};
/// use aiopslab_http::client::HttpStore;
///
/// let store = HttpStore::new("http://127.0.0.1:8000", Some("worker-secret".into()))?;
/// let worker = store.register_worker(WorkerRegistration::new("worker-001", "default")).await?;
/// println!("{worker:?}");
/// # Ok(()) }
/// ```
///
/// Store events ([`subscribe`](aiopslab_core::WorkerQueue::subscribe)) come
/// over `GET /workers/{id}/events` (Server-Sent Events) for the worker this
/// store registered, so an idle worker claims new work and stops a cancelled
/// run at once; when the stream is down the runtime's polling and
/// heartbeats cover it (see the `events` module).
#[derive(Clone, Debug)]
pub struct HttpStore {
    http: Http,
    /// The worker it registered last: whose events a subscription reads.
    registered: std::sync::Arc<tokio::sync::watch::Sender<Option<events::Listener>>>,
    /// Set once the server answered that it cannot take a final report (an older server without the route, or
    /// a store without the capability): from then on the worker sends the parts.
    no_final_reports: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpStore {
    /// A worker's client of the server at `base_url` (`http://host:8000`,
    /// optionally with a path prefix). `worker_token` is sent as
    /// `Authorization: Bearer` when the server requires it.
    pub fn new(base_url: &str, worker_token: Option<String>) -> Result<Self, ClientError> {
        Ok(Self {
            http: Http::new(base_url, "aiopslab-worker", worker_token, Guard::Worker)?,
            registered: std::sync::Arc::new(tokio::sync::watch::channel(None).0),
            no_final_reports: std::sync::Arc::default(),
        })
    }

    /// Sets how long one request may take end to end (default 30 s). A
    /// request that takes longer fails with `StoreError::Unavailable`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// The server URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.http.base
    }
}

/// One connection to a server: the pool, the base URL, the token of the
/// routes this client uses (worker protocol or public API), the timeout.
#[derive(Clone)]
struct Http {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    guard: Guard,
    timeout: Duration,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are secrets: say whether one is set, never what it is.
        f.debug_struct("Http")
            .field("base", &self.base.as_str())
            .field("routes", &self.guard)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Http {
    /// A connection to the server at `base_url`, identifying as `agent`,
    /// sending `token` on the routes of `guard`.
    fn new(base_url: &str, agent: &str, token: Option<String>, guard: Guard) -> Result<Self, ClientError> {
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
            .user_agent(format!("{agent}/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
            guard,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
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

    /// A request to `segments` with the token and no overall timeout, for a
    /// stream that stays open (its reader watches for silence itself).
    fn stream_request(&self, method: Method, segments: &[&str]) -> StoreResult<RequestBuilder> {
        let url = self.url(segments)?;
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    /// A request to `segments`, with the token and the timeout.
    fn request(&self, method: Method, segments: &[&str]) -> StoreResult<RequestBuilder> {
        Ok(self.stream_request(method, segments)?.timeout(self.timeout))
    }

    /// Sends `request`; a success status returns the response, anything
    /// else the mapped [`StoreError`] with the server's answer.
    async fn send(&self, request: RequestBuilder, subject: &Subject) -> ApiResult<Response> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        tracing::debug!(url = %response.url(), %status, "aiopslab server answered");
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        Err(status_error(status, &body, subject))
    }

    /// Sends a [`stream_request`](Self::stream_request): its answer's head must
    /// come within the timeout, its body may take as long as it takes (the
    /// reader watches for silence).
    async fn open_stream(&self, request: RequestBuilder, subject: &Subject) -> ApiResult<Response> {
        match tokio::time::timeout(self.timeout, self.send(request, subject)).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable(format!(
                "timed out: the server did not answer within {} s",
                self.timeout.as_secs()
            ))
            .into()),
        }
    }

    /// Sends `request` and decodes a JSON answer.
    async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder, subject: &Subject) -> ApiResult<T> {
        let response = self.send(request, subject).await?;
        decode(response).await
    }

    /// Sends `request` and ignores the answer's body.
    async fn send_empty(&self, request: RequestBuilder, subject: &Subject) -> ApiResult<StatusCode> {
        let response = self.send(request, subject).await?;
        let status = response.status();
        // Drain the body so the connection goes back to the pool.
        response.bytes().await.map_err(|e| transport_error(&e))?;
        Ok(status)
    }
}

/// Reads and decodes a JSON body; a body cut short is transient, a body of
/// the wrong shape is not.
async fn decode<T: DeserializeOwned>(response: Response) -> ApiResult<T> {
    let url = response.url().clone();
    let body = response.bytes().await.map_err(|e| transport_error(&e))?;
    serde_json::from_slice(&body).map_err(|e| StoreError::Internal(format!("unexpected answer from {url}: {e}")).into())
}
