//! Completion webhooks: the deliverer that drains the stores' outbox.
//!
//! When a task with a `callback_url` reaches a terminal status, the store
//! writes a [`WebhookDelivery`](aiopslab_core::webhook::WebhookDelivery) into
//! its outbox in the same atomic step (so a completion survives a crash or a
//! restart). [`WebhookDeliverer`] runs beside the API: it claims due
//! deliveries with [`WebhookOutbox::claim_webhooks`](aiopslab_core::WebhookOutbox::claim_webhooks)
//! (a lease keeps other replicas off them), POSTs each payload — the task JSON
//! — to the task's `callback_url`, and records every attempt with
//! [`WebhookOutbox::record_webhook_attempt`](aiopslab_core::WebhookOutbox::record_webhook_attempt).
//!
//! - Headers: `Content-Type: application/json`, `X-Aiopslab-Event:
//!   task.<status>`, `X-Aiopslab-Delivery: <id>`, `X-Aiopslab-Attempt: <n>`,
//!   and with a secret `X-Aiopslab-Signature: sha256=<hex HMAC-SHA256(secret,
//!   body)>` ([`sign`], [`verify`]).
//! - A 2xx answer is delivered; anything else (another status, no
//!   connection, a timeout, a redirect — redirects are never followed, so
//!   nothing but the `callback_url` is ever POSTed to) is retried with
//!   exponential backoff and jitter ([`Backoff`]: 1 s doubling to 1 h) until
//!   [`WebhookConfig::max_attempts`] (44 tries, at least 24 h), then the
//!   delivery is `failed`. A failed delivery can be tried again on demand
//!   ([`WebhookDeliverer::redeliver`], `POST
//!   /tasks/{id}/webhooks/{delivery_id}/redeliver`).
//! - Destinations are guarded against SSRF ([`destination`]): loopback,
//!   private, link-local, metadata and other non-public addresses are
//!   refused — checked on the resolved address, which is the one connected
//!   to — unless [`WebhookConfig::allow_private_destinations`] is set. A
//!   refused delivery fails at once with the reason as its attempt's error.
//! - Delivery is at least once: a deliverer that stops between the POST and
//!   the record leaves the delivery due again when its lease passes. The
//!   `X-Aiopslab-Delivery` id lets a receiver drop duplicates.

mod backoff;
mod config;
mod deliverer;
pub mod destination;
mod signature;

pub use backoff::Backoff;
pub use config::WebhookConfig;
pub use deliverer::{RedeliverError, WebhookDeliverer, WebhookError};
pub use signature::{sign, verify, SIGNATURE_PREFIX};

/// The header naming the event (`task.completed`, `task.failed`, ...).
pub const EVENT_HEADER: &str = "x-aiopslab-event";
/// The header carrying the outbox id of the delivery (stable across retries).
pub const DELIVERY_HEADER: &str = "x-aiopslab-delivery";
/// The header carrying the attempt number (1 for the first try).
pub const ATTEMPT_HEADER: &str = "x-aiopslab-attempt";
/// The header carrying `sha256=<hex>` when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-aiopslab-signature";
