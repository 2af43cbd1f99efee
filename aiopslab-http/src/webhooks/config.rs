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
    /// Tries per delivery before it is marked `failed` (44: with the default
    /// [`Backoff`], retried for at least 24 h; see [`retry_window`](Self::retry_window)).
    /// A failed delivery can be tried again with
    /// `POST /tasks/{id}/webhooks/{delivery_id}/redeliver`.
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
    /// Also POST to loopback, private, link-local, metadata and other
    /// non-public addresses (off: such deliveries are refused and marked
    /// `failed`; see [`destination`](super::destination)). For receivers on
    /// the server's own host or network, and for tests.
    pub allow_private_destinations: bool,
}

impl WebhookConfig {
    /// The default number of tries: 44, the fewest for which the default
    /// backoff keeps retrying for at least 24 h whatever the jitter.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 44;
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

    /// From the first try of a delivery to its last, as (shortest, longest)
    /// over every jitter: the sum of the backoff delays between the
    /// [`max_attempts`](Self::max_attempts) tries. Default: 24 h 6 min 11 s
    /// to 32 h 8 min 15 s.
    pub fn retry_window(&self) -> (Duration, Duration) {
        self.backoff.retry_window(self.max_attempts)
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
            allow_private_destinations: false,
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
            .field("allow_private_destinations", &self.allow_private_destinations)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let config = WebhookConfig::default();
        assert_eq!(config.backoff.initial, Duration::from_secs(1));
        assert_eq!(config.backoff.max, Duration::from_secs(3600));
        let (shortest, longest) = config.retry_window();
        assert!(
            shortest > DAY,
            "the shortest retry window {shortest:?} must exceed a day"
        );
        assert_eq!(shortest, Duration::from_millis(86_771_250), "24 h 6 min 11.25 s");
        assert_eq!(longest, Duration::from_secs(115_695), "32 h 8 min 15 s");
        // 44 is the fewest tries that guarantee it.
        let fewer = WebhookConfig {
            max_attempts: WebhookConfig::DEFAULT_MAX_ATTEMPTS - 1,
            ..WebhookConfig::default()
        };
        assert!(fewer.retry_window().0 < DAY);
        assert!(
            !config.allow_private_destinations,
            "private destinations are refused by default"
        );
    }
}
