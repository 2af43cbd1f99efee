//! [`WebhookDeliverer`]: claims due deliveries from the store's outbox, POSTs
//! them, records every attempt, and schedules retries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aiopslab_core::webhook::{WebhookAttemptReport, WebhookDelivery, WebhookStatus};
use aiopslab_core::{StoreError, StoreResult, TaskId, WebhookOutbox};
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Url;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::WebhookConfig;
use super::destination::{check_literal_host, refused_in, GuardedResolver};
use super::signature::sign;
use super::{ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use crate::client::describe_transport;
use crate::server::Metrics;

/// How much of a failing receiver's answer is kept in the attempt's error.
const ERROR_BODY_SNIPPET: usize = 256;
/// How much of an answer is read at most (the connection is dropped after).
const DRAIN_LIMIT: usize = 64 * 1024;
/// Tries at recording an attempt when the store is briefly unavailable.
const RECORD_TRIES: u32 = 3;

/// Why a [`WebhookDeliverer`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A setting is out of range.
    #[error("invalid webhook settings: {0}")]
    Config(String),
    /// The HTTP client could not be set up (TLS configuration).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// Why [`WebhookDeliverer::redeliver`] did not try a delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedeliverError {
    /// The store failed, or has no such task or delivery
    /// ([`StoreError::NotFound`] with entity `task` or `webhook`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only a `failed` delivery is redelivered: a pending one is still being
    /// retried, a delivered one was accepted.
    #[error("webhook delivery {delivery_id} is {status:?}, not failed")]
    NotFailed {
        /// The delivery.
        delivery_id: i64,
        /// Where it stands.
        status: WebhookStatus,
    },
    /// A redelivery of it is in progress on this server.
    #[error("webhook delivery {delivery_id} is being redelivered already")]
    InProgress {
        /// The delivery.
        delivery_id: i64,
    },
}

/// Delivers the webhooks of one store; several (one per server replica) may
/// run against one database, the store's claim leases keep them apart.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn aiopslab_core::WebhookOutbox>) -> Result<(), Box<dyn std::error::Error>> {
/// use aiopslab_http::webhooks::{WebhookConfig, WebhookDeliverer};
/// use tokio_util::sync::CancellationToken;
///
/// let deliverer = WebhookDeliverer::new(store, WebhookConfig::default().with_secret("s3cret"))?;
/// let stop = CancellationToken::new();
/// tokio::spawn(deliverer.run(stop.clone()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebhookDeliverer {
    store: Arc<dyn WebhookOutbox>,
    client: reqwest::Client,
    config: Arc<WebhookConfig>,
    metrics: Option<Arc<Metrics>>,
    /// Deliveries being redelivered right now (one at a time each).
    redelivering: Arc<Mutex<HashSet<i64>>>,
}

/// What one POST came to.
struct PostOutcome {
    status_code: Option<u16>,
    error: Option<String>,
    /// The request can never succeed (a malformed URL, a refused
    /// destination): do not retry.
    permanent: bool,
    /// The receiver's `Retry-After`, in seconds.
    retry_after: Option<Duration>,
}

impl WebhookDeliverer {
    /// A deliverer over `store` with `config`.
    pub fn new(store: Arc<dyn WebhookOutbox>, config: WebhookConfig) -> Result<Self, WebhookError> {
        if config.max_attempts == 0 {
            return Err(WebhookError::Config("max_attempts must be at least 1".into()));
        }
        if config.timeout.is_zero() || config.poll_interval.is_zero() {
            return Err(WebhookError::Config(
                "timeout and poll_interval must be longer than zero".into(),
            ));
        }
        if config.batch_size == 0 {
            return Err(WebhookError::Config("batch_size must be at least 1".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // Only the task's callback_url is ever POSTed to: a redirect is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            // Names resolve through the SSRF guard, and the client connects to exactly the addresses it
            // checked (no second lookup a rebinding DNS server could answer differently).
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private_destinations,
            }))
            // Straight to the receiver: through a proxy, the guard would check the proxy's address.
            .no_proxy()
            .user_agent(concat!("aiopslab-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            store,
            client,
            config: Arc::new(config),
            metrics: None,
            redelivering: Arc::default(),
        })
    }

    /// The same deliverer, counting its attempts into `metrics`
    /// (`aiopslab_webhook_attempts_total{outcome}` on `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Delivers until `shutdown` fires: a pass over the due deliveries, then
    /// (when the pass found fewer than a full batch) a pause of
    /// [`WebhookConfig::poll_interval`]. A pass in progress when `shutdown`
    /// fires is finished first (each POST is bounded by the timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            max_attempts = self.config.max_attempts,
            signed = self.config.secret.is_some(),
            "webhook deliverer started"
        );
        while !shutdown.is_cancelled() {
            let pause = match self.deliver_due().await {
                Ok(n) if n >= self.config.batch_size as usize => None,
                Ok(_) => Some(self.config.poll_interval),
                Err(error) => {
                    tracing::warn!(%error, "cannot claim webhook deliveries; retrying");
                    Some(self.config.poll_interval)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::info!("webhook deliverer stopped");
    }

    /// One pass: claims up to a batch of due deliveries, POSTs them
    /// concurrently and records each attempt. Returns how many were tried.
    pub async fn deliver_due(&self) -> StoreResult<usize> {
        let due = self
            .store
            .claim_webhooks(self.config.batch_size, self.config.claim_lease())
            .await?;
        let count = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(None, |delivery| self.deliver(delivery))
            .await;
        Ok(count)
    }

    /// One attempt at one delivery, recorded.
    async fn deliver(&self, delivery: WebhookDelivery) {
        let span = tracing::info_span!("webhook", task_id = %delivery.task_id, delivery_id = delivery.id);
        async {
            let report = self.attempt(&delivery, true).await;
            if let Err(error) = self.record(delivery.id, report).await {
                tracing::error!(%error, "cannot record the webhook attempt; it will be retried after its lease");
            }
        }
        .instrument(span)
        .await
    }

    /// Tries a `failed` delivery of task `task_id` once more, now, and
    /// records the attempt (numbered after the earlier ones; the receiver
    /// sees the same `X-Aiopslab-Delivery` id). Returns the delivery as it
    /// then stands: `delivered` when the receiver accepted it, else still
    /// `failed` with the new attempt's error (it is not retried on its own).
    /// The destination rules apply as to every attempt.
    ///
    /// Uses only [`WebhookOutbox::list_webhooks`] and
    /// [`WebhookOutbox::record_webhook_attempt`] (a failed delivery moves to
    /// delivered on a successful report), so it works on every store. One
    /// redelivery of a delivery runs at a time on this deliverer.
    pub async fn redeliver(&self, task_id: TaskId, delivery_id: i64) -> Result<WebhookDelivery, RedeliverError> {
        let delivery = self
            .store
            .list_webhooks(task_id)
            .await?
            .into_iter()
            .find(|d| d.id == delivery_id)
            .ok_or_else(|| StoreError::NotFound {
                entity: "webhook",
                id: delivery_id.to_string(),
            })?;
        if delivery.status != WebhookStatus::Failed {
            return Err(RedeliverError::NotFailed {
                delivery_id,
                status: delivery.status,
            });
        }
        let _claim =
            RedeliveryClaim::take(&self.redelivering, delivery_id).ok_or(RedeliverError::InProgress { delivery_id })?;
        let span = tracing::info_span!("webhook", task_id = %task_id, delivery_id, redelivery = true);
        async {
            tracing::info!("redelivering a failed webhook");
            let report = self.attempt(&delivery, false).await;
            Ok(self.record(delivery_id, report).await?)
        }
        .instrument(span)
        .await
    }

    /// POSTs a delivery once and says what came of it: delivered, retry
    /// after a delay (only when `may_retry` and tries are left), or failed.
    async fn attempt(&self, delivery: &WebhookDelivery, may_retry: bool) -> WebhookAttemptReport {
        let attempt = u32::try_from(delivery.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let started = Instant::now();
        let outcome = self.post(delivery, attempt).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let retry_after = match &outcome.error {
            None => None,
            Some(_) if !may_retry || outcome.permanent || attempt >= self.config.max_attempts => None,
            Some(_) => {
                let seed = (delivery.id as u64) ^ u64::from(attempt).rotate_left(32) ^ clock_seed();
                let delay = self.config.backoff.delay(attempt, seed);
                let hinted = outcome.retry_after.map_or(delay, |hint| delay.max(hint));
                let capped = hinted.min(self.config.backoff.max.max(delay));
                // Whole milliseconds: stores keep intervals at microsecond precision at best.
                Some(Duration::from_millis(
                    u64::try_from(capped.as_millis()).unwrap_or(u64::MAX),
                ))
            }
        };
        let label = match (&outcome.error, retry_after) {
            (None, _) => {
                tracing::info!(attempt, status = ?outcome.status_code, "webhook delivered");
                "delivered"
            }
            (Some(error), Some(delay)) => {
                tracing::warn!(attempt, %error, retry_in_ms = delay.as_millis() as u64, "webhook attempt failed; will retry");
                "retry"
            }
            (Some(error), None) => {
                tracing::warn!(attempt, %error, "webhook attempt failed; giving up");
                "failed"
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe_webhook_attempt(label);
        }
        WebhookAttemptReport {
            status_code: outcome.status_code,
            error: outcome.error,
            duration_ms,
            retry_after,
        }
    }

    /// Records an attempt, riding out a brief store outage. If it still
    /// fails, a claimed delivery's lease runs out and it is tried again (at
    /// least once, never lost).
    async fn record(&self, delivery_id: i64, report: WebhookAttemptReport) -> StoreResult<WebhookDelivery> {
        let mut pause = Duration::from_millis(100);
        let mut tries = 1;
        loop {
            match self.store.record_webhook_attempt(delivery_id, report.clone()).await {
                Err(error) if error.is_transient() && tries < RECORD_TRIES => {
                    tracing::debug!(%error, "cannot record the webhook attempt yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                recorded => return recorded,
            }
        }
    }

    /// POSTs the payload to the delivery's URL.
    async fn post(&self, delivery: &WebhookDelivery, attempt: u32) -> PostOutcome {
        let failed = |error: String, permanent: bool| PostOutcome {
            status_code: None,
            error: Some(error),
            permanent,
            retry_after: None,
        };
        let body = match serde_json::to_vec(&delivery.payload) {
            Ok(body) => body,
            Err(error) => return failed(format!("cannot serialize the payload: {error}"), true),
        };
        let url = match Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(error) => return failed(format!("callback_url is not a valid URL: {error}"), true),
        };
        // The client connects to IP literals without resolving them: check those here.
        if !self.config.allow_private_destinations {
            if let Err(refused) = check_literal_host(&url) {
                return failed(refused.to_string(), true);
            }
        }
        let status = delivery
            .payload
            .get("status")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("finished");
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(EVENT_HEADER, format!("task.{status}"))
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .header(ATTEMPT_HEADER, attempt.to_string());
        if let Some(secret) = &self.config.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret.as_bytes(), &body));
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                if let Some(refused) = refused_in(&error) {
                    return failed(refused.to_string(), true);
                }
                return failed(describe_transport(&error), error.is_builder());
            }
        };
        let code = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let snippet = read_snippet(response).await;
        if code.is_success() {
            return PostOutcome {
                status_code: Some(code.as_u16()),
                error: None,
                permanent: false,
                retry_after: None,
            };
        }
        let mut error = format!("receiver answered HTTP {code}");
        if code.is_redirection() {
            error.push_str(" (redirects are not followed)");
        }
        if !snippet.is_empty() {
            error.push_str(": ");
            error.push_str(&snippet);
        }
        PostOutcome {
            status_code: Some(code.as_u16()),
            error: Some(error),
            permanent: false,
            retry_after,
        }
    }
}

/// The first bytes of an answer's body, as text. A short rest is read and
/// dropped so the connection can be reused; a long one is not read at all.
async fn read_snippet(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_SNIPPET.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

/// A delivery id held in the set of redeliveries in progress until dropped.
struct RedeliveryClaim {
    set: Arc<Mutex<HashSet<i64>>>,
    id: i64,
}

impl RedeliveryClaim {
    fn take(set: &Arc<Mutex<HashSet<i64>>>, id: i64) -> Option<Self> {
        let fresh = set.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        fresh.then(|| Self { set: set.clone(), id })
    }
}

impl Drop for RedeliveryClaim {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

/// Varies the jitter between processes and passes.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
