//! [`WebhookConfig`]: how the deliverer signs, times out, retries and polls.

use std::fmt;
use std::time::Duration;

use super::backoff::Backoff;

/// Settings of a [`WebhookDeliverer`](super::WebhookDeliverer). Every field
/// has a default ([`WebhookConfig::default`]).
#[derive(Clone)]
pub struct WebhookConfig {
    /// When set, every POST carries `X-Aiopslab-Signature: sha256=<hex
    /// HMAC-SHA256(secret, body)>`.
    pub secret: Option<String>,
    /// Tries per delivery before it is marked `failed` (8).
    pub max_attempts: u32,
    /// How long one POST may take, connection to end of answer (10 s).
    pub timeout: Duration,
    /// Delay between tries.
    pub backoff: Backoff,
    /// How often the outbox is polled when it had nothing due (1 s).
    pub poll_interval: Duration,
    /// Deliveries claimed (and POSTed concurrently) per pass (16).
    pub batch_size: u32,
    /// Extra time beyond [`timeout`](Self::timeout) that a claim keeps a
    /// delivery from other replicas (30 s): a deliverer that dies mid-POST
    /// leaves it due again after `timeout + claim_margin`.
    pub claim_margin: Duration,
}

impl WebhookConfig {
    /// The default number of tries: 8.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
    /// The default request timeout: 10 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The same settings with a signing secret (an empty one means none).
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        self.secret = (!secret.is_empty()).then_some(secret);
        self
    }

    /// How long a claim holds a delivery: the request timeout plus the margin.
    pub fn claim_lease(&self) -> Duration {
        self.timeout + self.claim_margin
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: None,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            timeout: Self::DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
            poll_interval: Duration::from_secs(1),
            batch_size: 16,
            claim_margin: Duration::from_secs(30),
        }
    }
}

/// The secret is never printed.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("poll_interval", &self.poll_interval)
            .field("batch_size", &self.batch_size)
            .field("claim_margin", &self.claim_margin)
            .finish()
    }
}
