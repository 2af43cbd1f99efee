//! The per-task LLM proxy: a loopback OpenAI-compatible endpoint that holds
//! the API key and records every call.
//!
//! AIOpsLab runs the agent's shell commands on the worker host, inside the
//! driver's process tree, so anything the Python driver knows the agent can
//! read. The LLM API key therefore never enters the driver: the worker starts
//! one [`LlmProxy`] on `127.0.0.1`, opens a [`ProxySession`] per task, and
//! hands the driver only the session's [`base_url`](ProxySession::base_url)
//! (`http://127.0.0.1:PORT/t/<token>/v1`). The proxy forwards each
//! `POST …/chat/completions` to the task's real endpoint with
//! `Authorization: Bearer <key>` added, and keeps its own record of the call
//! ([`RecordedCall`]): the body as sent, the reply, status, usage, latency,
//! and the token ids and log-probabilities when the endpoint returns them.
//! The trajectory's LLM calls come from this record
//! ([`RecordedCall::to_llm_call`]), not from what the driver reports.
//!
//! What the proxy guarantees:
//!
//! - **The key stays here.** It is sent only upstream, as a sensitive header.
//!   It is never logged, never part of an error message, `Debug` output or the
//!   record ([`Secret`] prints `[redacted]`), and an upstream reply that echoes
//!   it back has it replaced by `[redacted]` before the driver or the record
//!   sees it. The driver's own `Authorization` header and every
//!   `X-Aiopslab-*` header are never forwarded: only the JSON body is.
//! - **Sessions are capabilities.** The token is 32 random bytes; an unknown
//!   or closed session answers 404 and nothing is forwarded.
//! - **Whole replies only.** `"stream": true` is refused (400): the driver
//!   never streams and the record needs the complete reply.
//! - **Every call is recorded**, successful or not, in the order the driver
//!   made them, even when the driver disconnects before the reply arrives.
//! - **Fair to the endpoint.** [`ProxyLimits`] bound the concurrency and the
//!   request rate per upstream `base_url`, shared by every session of the
//!   proxy; callers wait for their turn rather than being refused.
//!
//! Upstream statuses and JSON bodies pass through unchanged. A non-JSON
//! upstream body is wrapped as `{"error": {"message": …}}`; an unreachable
//! upstream answers 502 and a timeout 504, with OpenAI-style error bodies
//! that name the upstream host.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aiopslab_core::{JsonObject, LlmCall, TokenUsage, TrajectoryMessage};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The largest request body the proxy accepts (32 MiB: long episodes carry
/// their whole conversation in every request).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// The largest upstream reply the proxy reads (64 MiB); a larger one is
/// answered with 502.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The request header that tells the proxy which agent step a call serves
/// (recorded as [`RecordedCall::step`], never forwarded).
pub const STEP_HEADER: &str = "x-aiopslab-step";

/// The request header that tells the proxy which retry of the step a call is
/// (recorded as [`RecordedCall::attempt`], never forwarded).
pub const ATTEMPT_HEADER: &str = "x-aiopslab-attempt";

/// How long [`LlmProxy::shutdown`] waits for in-flight requests before it
/// stops the server anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Keys shorter than this are not scrubbed from upstream replies: such a key
/// (vLLM's customary `EMPTY`) is no secret, and replacing a short string
/// everywhere would mangle ordinary replies.
const MIN_SCRUBBED_KEY_LEN: usize = 12;

/// How much of a non-JSON upstream body an error message quotes.
const EXCERPT_CHARS: usize = 512;

/// The sampling parameters copied from the request into
/// [`LlmCall::sampling`].
const SAMPLING_KEYS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
];

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("cannot bind the LLM proxy to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("cannot read the LLM proxy's local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The HTTP client for upstream calls could not be built (TLS set-up).
    #[error("cannot build the LLM proxy's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A secret string (an API key). `Debug` and `Display` print `[redacted]`;
/// only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call it only where the value is sent on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The real OpenAI-compatible endpoint a session forwards to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The endpoint's base URL, as an OpenAI client takes it
    /// (`https://api.openai.com/v1`, `http://vllm:8000/v1`); the proxy posts
    /// to `<base_url>/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<Secret>,
    /// The most one upstream call may take, reply body included; a call that
    /// takes longer is answered with 504.
    pub timeout: Duration,
}

impl Upstream {
    /// An upstream with the given base URL, no key and a 10-minute timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            timeout: Duration::from_secs(600),
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key that groups sessions for [`ProxyLimits`]: the base URL without
    /// a trailing slash.
    fn limit_key(&self) -> String {
        self.base_url.trim_end_matches('/').to_owned()
    }
}

/// Limits per upstream endpoint (`base_url`), shared by all sessions of one
/// proxy. Both are off by default; `Some(0)` also means off. Callers over a
/// limit wait for their turn; they are never refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyLimits {
    /// At most this many calls in flight to one endpoint at a time.
    pub max_concurrency: Option<usize>,
    /// At most this many calls started per minute on one endpoint, as a
    /// minimum spacing of `60 / rpm` seconds between call starts.
    pub requests_per_minute: Option<u32>,
}

/// One call the driver made through a session, as the proxy saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// Arrival order within the session, from 0.
    pub seq: u64,
    /// The agent step, from the `X-Aiopslab-Step` header.
    pub step: Option<u32>,
    /// The retry of that step, from the `X-Aiopslab-Attempt` header.
    pub attempt: Option<u32>,
    /// Whether the call was sent upstream (false when the proxy refused it
    /// itself: invalid JSON, `"stream": true`).
    pub forwarded: bool,
    /// The JSON body as sent upstream (`null` when the body was not JSON).
    pub request: Value,
    /// The upstream's HTTP status; `None` when it never answered
    /// (unreachable, timeout, not forwarded).
    pub status: Option<u16>,
    /// The HTTP status the driver got back: the upstream's own, or the
    /// proxy's 400/502/504.
    pub proxy_status: u16,
    /// The upstream's JSON reply, when it answered with JSON.
    pub response: Option<Value>,
    /// What went wrong, for anything but a 2xx JSON reply.
    pub error: Option<String>,
    /// Time from sending the request upstream to having the whole reply (0
    /// when not forwarded).
    pub latency_ms: u64,
    /// Time the call waited for [`ProxyLimits`] before it was sent.
    pub queued_ms: u64,
    /// When the request was sent upstream (when it arrived, if it was not
    /// forwarded).
    pub started_at: DateTime<Utc>,
}

impl RecordedCall {
    /// The trajectory's view of this call: `Some` only for a 2xx reply with
    /// `choices[0].message.content`.
    ///
    /// The messages come from the request's `messages` (array content parts
    /// have their text parts joined with newlines), the model from the
    /// reply's `model` (else the request's), the sampling parameters from the
    /// request, usage, log-probabilities and token ids from the reply (token
    /// ids as vLLM returns them: `choices[0].token_ids`, and
    /// `prompt_token_ids` at the top level or in `choices[0]`).
    pub fn to_llm_call(&self) -> Option<LlmCall> {
        let status = self.status?;
        if !(200..300).contains(&status) {
            return None;
        }
        let response = self.response.as_ref()?;
        let choice = response.get("choices")?.get(0)?;
        let reply = content_text(choice.get("message")?.get("content")?)?;

        let request = self
            .request
            .get("messages")
            .and_then(Value::as_array)
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
                        let content = m.get("content").and_then(content_text).unwrap_or_default();
                        TrajectoryMessage::new(role, content)
                    })
                    .collect()
            })
            .unwrap_or_default();

        let model = response
            .get("model")
            .and_then(Value::as_str)
            .or_else(|| self.request.get("model").and_then(Value::as_str))
            .map(str::to_owned);

        let mut sampling = JsonObject::new();
        for key in SAMPLING_KEYS {
            if let Some(v) = self.request.get(*key).filter(|v| !v.is_null()) {
                sampling.insert((*key).to_owned(), v.clone());
            }
        }

        let usage = response.get("usage").filter(|u| u.is_object()).map(|u| {
            let count = |k: &str| u.get(k).and_then(Value::as_u64);
            let prompt_tokens = count("prompt_tokens").unwrap_or(0);
            let completion_tokens = count("completion_tokens").unwrap_or(0);
            TokenUsage {
                prompt_tokens,
                completion_tokens,
                total_tokens: count("total_tokens").unwrap_or(prompt_tokens + completion_tokens),
            }
        });

        let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
        Some(LlmCall {
            step: self.step,
            request,
            response: reply,
            model,
            sampling,
            usage,
            latency_ms: self.latency_ms,
            logprobs: present(choice.get("logprobs")),
            token_ids: present(choice.get("token_ids")),
            prompt_token_ids: present(response.get("prompt_token_ids"))
                .or_else(|| present(choice.get("prompt_token_ids"))),
            // Stamped by the worker runtime from the task's agent_config.
            model_version: None,
        })
    }
}

/// The text of a message's `content`: a string, or an array of parts whose
/// text parts are joined with newlines. `None` for anything else (`null`).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    _ => p.get("text").and_then(Value::as_str),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// The proxy: a loopback HTTP server forwarding each session's calls to its
/// upstream. A cheap, clonable handle; the server runs until
/// [`shutdown`](LlmProxy::shutdown) or until the last handle is dropped
/// (sessions do not keep it alive).
#[derive(Clone)]
pub struct LlmProxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ProxyInner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the server's handlers and the sessions share.
struct Shared {
    client: reqwest::Client,
    limits: ProxyLimits,
    sessions: Mutex<HashMap<String, Arc<SessionState>>>,
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
}

impl Shared {
    fn session(&self, token: &str) -> Option<Arc<SessionState>> {
        lock(&self.sessions).get(token).cloned()
    }

    fn limiter(&self, key: String) -> Arc<Limiter> {
        lock(&self.limiters)
            .entry(key)
            .or_insert_with(|| Arc::new(Limiter::new(self.limits)))
            .clone()
    }
}

/// Locks a mutex, recovering the data if another thread panicked holding it
/// (every critical section here leaves the data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl fmt::Debug for LlmProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmProxy")
            .field("local_addr", &self.inner.addr)
            .field("limits", &self.inner.shared.limits)
            .field("open_sessions", &lock(&self.inner.shared.sessions).len())
            .finish()
    }
}

impl LlmProxy {
    /// Binds `addr` (normally `127.0.0.1:0`) and starts serving.
    pub async fn start(addr: SocketAddr, limits: ProxyLimits) -> Result<LlmProxy, ProxyError> {
        let client = reqwest::Client::builder()
            // An API endpoint has no business redirecting a POST; pass the
            // 3xx back rather than re-sending the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ProxyError::Client)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(ProxyError::LocalAddr)?;

        let shared = Arc::new(Shared {
            client,
            limits,
            sessions: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/t/{token}/v1/chat/completions", post(chat_completions))
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(shared.clone());

        let stop = CancellationToken::new();
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::trace!("cannot set TCP_NODELAY on a proxy connection: {err}");
            }
        });
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::error!("LLM proxy server stopped: {err}");
            }
        });
        tracing::debug!(addr = %local, ?limits, "LLM proxy listening");

        Ok(LlmProxy {
            inner: Arc::new(ProxyInner {
                addr: local,
                shared,
                stop,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Opens a session forwarding to `upstream`. `label` (the task id) names
    /// the session in traces. The session closes when it is closed or
    /// dropped.
    pub fn open_session(&self, upstream: Upstream, label: String) -> ProxySession {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let limiter = self.inner.shared.limiter(upstream.limit_key());
        let state = Arc::new(SessionState {
            label,
            upstream,
            limiter,
            calls: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(0),
        });
        lock(&self.inner.shared.sessions).insert(token.clone(), state.clone());
        tracing::debug!(task = %state.label, "LLM proxy session opened");
        ProxySession {
            base_url: format!("http://{}/t/{}/v1", self.inner.addr, token),
            token,
            state,
            shared: self.inner.shared.clone(),
            closed: AtomicBool::new(false),
        }
    }

    /// Stops accepting connections, waits up to a few seconds for in-flight
    /// requests, then stops the server. Calls already sent upstream are
    /// still recorded when their reply arrives.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let server = lock(&self.inner.server).take();
        if let Some(mut server) = server {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("LLM proxy: in-flight requests outlived the shutdown grace; stopping anyway");
                server.abort();
            }
        }
    }
}

/// One task's session: its URL for the driver and the record of its calls.
/// Not clonable: closing (or dropping) it makes its URL answer 404.
pub struct ProxySession {
    base_url: String,
    token: String,
    state: Arc<SessionState>,
    shared: Arc<Shared>,
    closed: AtomicBool,
}

struct SessionState {
    label: String,
    upstream: Upstream,
    limiter: Arc<Limiter>,
    calls: Mutex<Vec<RecordedCall>>,
    next_seq: AtomicU64,
}

impl SessionState {
    fn record(&self, call: RecordedCall) {
        lock(&self.calls).push(call);
    }
}

impl fmt::Debug for ProxySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySession")
            .field("label", &self.state.label)
            // The token is a capability: keep it out of logs.
            .field("base_url", &self.base_url.replace(&self.token, "[token]"))
            .field("upstream", &self.state.upstream)
            .field("closed", &self.is_closed())
            .field("calls", &lock(&self.state.calls).len())
            .finish()
    }
}

impl ProxySession {
    /// The OpenAI base URL to give the driver:
    /// `http://127.0.0.1:PORT/t/<token>/v1`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The label given at [`LlmProxy::open_session`].
    pub fn label(&self) -> &str {
        &self.state.label
    }

    /// Every call recorded so far, in the order the driver made them. Calls
    /// still waiting for their reply are not included yet. Still readable
    /// after the session is closed.
    pub fn calls(&self) -> Vec<RecordedCall> {
        let mut calls = lock(&self.state.calls).clone();
        calls.sort_by_key(|c| c.seq);
        calls
    }

    /// The trajectory's LLM calls: [`calls`](Self::calls) mapped with
    /// [`RecordedCall::to_llm_call`], failed calls left out.
    pub fn llm_calls(&self) -> Vec<LlmCall> {
        self.calls().iter().filter_map(RecordedCall::to_llm_call).collect()
    }

    /// Whether the session has been closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the session: its URL answers 404 from now on. Calls in flight
    /// finish and are recorded. Idempotent.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            lock(&self.shared.sessions).remove(&self.token);
            tracing::debug!(task = %self.state.label, "LLM proxy session closed");
        }
    }
}

impl Drop for ProxySession {
    fn drop(&mut self) {
        self.close();
    }
}

/// Concurrency and rate limits for one upstream endpoint.
struct Limiter {
    permits: Option<Arc<Semaphore>>,
    spacing: Option<Duration>,
    next_start: Mutex<Option<tokio::time::Instant>>,
}

impl Limiter {
    fn new(limits: ProxyLimits) -> Self {
        Self {
            permits: limits
                .max_concurrency
                .filter(|n| *n > 0)
                .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
            spacing: limits
                .requests_per_minute
                .filter(|n| *n > 0)
                .map(|rpm| Duration::from_secs_f64(60.0 / f64::from(rpm))),
            next_start: Mutex::new(None),
        }
    }

    /// Waits for a concurrency permit, then for the call's start slot. The
    /// permit is held for the upstream call.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = match &self.permits {
            // The semaphore is never closed, so this only waits.
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(spacing) = self.spacing {
            let slot = {
                let mut next = lock(&self.next_start);
                let now = tokio::time::Instant::now();
                let slot = next.filter(|t| *t > now).unwrap_or(now);
                *next = Some(slot + spacing);
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
        permit
    }
}

/// An OpenAI-style error reply.
fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, axum::Json(error_body(kind, code, message))).into_response()
}

fn error_body(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "not found: this proxy serves only POST /t/<session>/v1/chat/completions",
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "method not allowed: this proxy serves only POST /t/<session>/v1/chat/completions",
    )
}

fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `POST /t/{token}/v1/chat/completions`.
async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(session) = shared.session(&token) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_session",
            "unknown or closed session",
        );
    };
    let step = header_u32(&headers, STEP_HEADER);
    let attempt = header_u32(&headers, ATTEMPT_HEADER);
    let seq = session.next_seq.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("llm_proxy_call", task = %session.label, seq, step, attempt);

    let refuse = |request: Value, status: StatusCode, code: &str, message: String| {
        tracing::warn!(parent: &span, %status, "LLM proxy refused a call: {message}");
        session.record(RecordedCall {
            seq,
            step,
            attempt,
            forwarded: false,
            request,
            status: None,
            proxy_status: status.as_u16(),
            response: None,
            error: Some(message.clone()),
            latency_ms: 0,
            queued_ms: 0,
            started_at: Utc::now(),
        });
        error_response(status, "invalid_request_error", code, &message)
    };

    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            return refuse(
                Value::Null,
                status,
                "invalid_body",
                format!("cannot read the request body: {rejection}"),
            );
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return refuse(
                Value::Null,
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body must be a JSON object".to_owned(),
            )
        }
        Err(err) => {
            return refuse(
                Value::Null,
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the request body is not valid JSON: {err}"),
            )
        }
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return refuse(
            request,
            StatusCode::BAD_REQUEST,
            "stream_not_supported",
            "\"stream\": true is not supported: this proxy records whole replies; send the request without streaming"
                .to_owned(),
        );
    }

    // Run the forwarding in its own task so that the call is still recorded
    // when the driver disconnects before the reply.
    let client = shared.client.clone();
    let task = tokio::spawn(
        async move {
            let (status, body, call) = forward(&client, &session, request).await;
            let call = RecordedCall {
                seq,
                step,
                attempt,
                ..call
            };
            tracing::info!(
                status = call.proxy_status,
                latency_ms = call.latency_ms,
                queued_ms = call.queued_ms,
                error = call.error.as_deref(),
                "LLM call"
            );
            session.record(call);
            (status, body)
        }
        .instrument(span),
    );
    match task.await {
        Ok((status, body)) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "proxy_error",
            "the proxy failed while forwarding the call",
        ),
    }
}

/// `host[:port]` of the upstream, for messages (never credentials).
fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "the upstream".to_owned(),
    }
}

/// A reqwest error and its causes, without the URL.
fn describe(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let top = match err.url() {
        // reqwest's Display names the URL; keep only the kind of failure.
        Some(_) if err.is_connect() => "cannot connect".to_owned(),
        Some(_) if err.is_timeout() => "timed out".to_owned(),
        Some(_) if err.is_body() || err.is_decode() => "cannot read the reply body".to_owned(),
        Some(_) if err.is_request() => "cannot send the request".to_owned(),
        _ => err.to_string(),
    };
    parts.push(top);
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// Replaces the key in `text` by `[redacted]`.
fn scrub(text: &str, key: Option<&Secret>) -> String {
    match key.map(Secret::expose) {
        Some(k) if k.len() >= MIN_SCRUBBED_KEY_LEN && text.contains(k) => text.replace(k, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// The first few hundred characters of a body.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Sends one call upstream. Returns the status and body for the driver, and
/// the record (its `seq`/`step`/`attempt` are filled by the caller).
async fn forward(
    client: &reqwest::Client,
    session: &SessionState,
    request: Value,
) -> (StatusCode, Vec<u8>, RecordedCall) {
    let upstream = &session.upstream;
    let key = upstream.api_key.as_ref();
    let queued = Instant::now();
    let mut call = RecordedCall {
        seq: 0,
        step: None,
        attempt: None,
        forwarded: false,
        request,
        status: None,
        proxy_status: 0,
        response: None,
        error: None,
        latency_ms: 0,
        queued_ms: 0,
        started_at: Utc::now(),
    };
    let fail = |mut call: RecordedCall, status: StatusCode, code: &str, message: String| {
        let message = scrub(&message, key);
        call.proxy_status = status.as_u16();
        call.error = Some(message.clone());
        let body = serde_json::to_vec(&error_body("upstream_error", code, &message)).unwrap_or_default();
        (status, body, call)
    };

    let url = match reqwest::Url::parse(&format!("{}/chat/completions", upstream.base_url.trim_end_matches('/'))) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            return fail(
                call,
                StatusCode::BAD_GATEWAY,
                "invalid_upstream",
                "the task's upstream base_url is not a valid http(s) URL".to_owned(),
            )
        }
    };
    let host = host_of(&url);
    let body = match serde_json::to_vec(&call.request) {
        Ok(body) => body,
        Err(err) => {
            return fail(
                call,
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("cannot encode the request: {err}"),
            )
        }
    };
    let mut builder = client
        .post(url)
        .timeout(upstream.timeout)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(body);
    if let Some(key) = key {
        match HeaderValue::try_from(format!("Bearer {}", key.expose())) {
            Ok(mut value) => {
                value.set_sensitive(true);
                builder = builder.header(header::AUTHORIZATION, value);
            }
            Err(_) => {
                return fail(
                    call,
                    StatusCode::BAD_GATEWAY,
                    "invalid_api_key",
                    "the task's API key is not a valid HTTP header value".to_owned(),
                )
            }
        }
    }

    let _permit = session.limiter.admit().await;
    call.queued_ms = millis(queued.elapsed());
    call.started_at = Utc::now();
    call.forwarded = true;
    let sent = Instant::now();
    let result = async {
        let mut reply = builder.send().await?;
        let status = reply.status();
        let mut body = Vec::new();
        while let Some(chunk) = reply.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Ok((status, None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>((status, Some(body)))
    }
    .await;
    call.latency_ms = millis(sent.elapsed());

    let (status, body) = match result {
        Ok((status, Some(body))) => (status, body),
        Ok((status, None)) => {
            call.status = Some(status.as_u16());
            return fail(
                call,
                StatusCode::BAD_GATEWAY,
                "reply_too_large",
                format!("upstream {host} sent a reply larger than {MAX_RESPONSE_BYTES} bytes"),
            );
        }
        Err(err) if err.is_timeout() => {
            return fail(
                call,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("upstream {host} did not answer within {:?}", upstream.timeout),
            )
        }
        Err(err) => {
            return fail(
                call,
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("upstream {host} unreachable: {}", describe(&err)),
            )
        }
    };
    call.status = Some(status.as_u16());

    let text = String::from_utf8_lossy(&body);
    let scrubbed = key.is_some_and(|k| k.expose().len() >= MIN_SCRUBBED_KEY_LEN && text.contains(k.expose()));
    let text = scrub(&text, key);
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => {
            if !status.is_success() {
                let message = value
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(|m| format!("upstream {host} answered {status}: {}", excerpt(m)))
                    .unwrap_or_else(|| format!("upstream {host} answered {status}"));
                call.error = Some(message);
            }
            call.response = Some(value);
            call.proxy_status = status.as_u16();
            // Pass the body back byte for byte unless the key had to go.
            let body = if scrubbed { text.into_bytes() } else { body };
            (status, body, call)
        }
        Err(_) => {
            // A 2xx without JSON is no reply an OpenAI client can use.
            let reply_status = if status.is_success() {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            let message = format!(
                "upstream {host} answered {status} with a non-JSON body: {}",
                excerpt(&text)
            );
            fail(call, reply_status, "non_json_reply", message)
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
