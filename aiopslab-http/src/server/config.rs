//! [`ApiConfig`]: what a server operator can tune (tokens, body limits,
//! follow polling), with safe defaults: no tokens, 1 MiB bodies on the public
//! API, 8 MiB on the worker protocol (log batches, outcomes) and 512 MiB for a
//! trajectory (gzip accepted).

use std::fmt;
use std::time::Duration;

/// Settings of the router. Every field has a default ([`ApiConfig::default`]).
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every public route (tasks, workers listing, problems, stats,
    /// metrics) requires `Authorization: Bearer <client_token>`.
    pub client_token: Option<String>,
    /// When set, every worker-protocol route (register, heartbeat, claim,
    /// lease, logs/trajectory upload, finish, deregister) requires
    /// `Authorization: Bearer <worker_token>`.
    pub worker_token: Option<String>,
    /// Largest accepted request body on the public API, in bytes (1 MiB).
    pub body_limit: usize,
    /// Largest accepted request body on the worker protocol, in bytes (8 MiB):
    /// log batches and outcomes are bigger than task requests. Trajectories
    /// have their own limit, `trajectory_body_limit`.
    pub worker_body_limit: usize,
    /// Largest trajectory `PUT /tasks/{id}/trajectory` accepts, in bytes of
    /// JSON after decompression (512 MiB). Every LLM call of a trajectory
    /// carries its whole request, so its size grows with the square of its
    /// steps: a 1000-step simulated episode is ~160 MB of JSON (~17 MB
    /// gzipped, which is how [`HttpStore`](crate::client::HttpStore) sends
    /// one over 1 MiB). The route holds it in memory about three times
    /// while saving it, so size the server for it.
    pub trajectory_body_limit: usize,
    /// Named in `/health` as `store` (`"memory"`, `"postgres"`, ...).
    pub store_kind: String,
    /// How often a log follower (`?follow=true`) polls the store for new entries.
    pub follow_poll_interval: Duration,
    /// When true, `/openapi.json`, `/docs` and `/redoc` also require the client
    /// token. Off by default: browsers cannot send a bearer token when opening
    /// the docs, and they describe only the API's shape, no data.
    pub protect_docs: bool,
    /// Episodes per page of `GET /trajectories/export` (200): each page is
    /// one store query and one chunk of the response; a few pages are in
    /// memory at once.
    pub export_page_size: u32,
    /// Accept a `callback_url` that points at a loopback, private,
    /// link-local, metadata or other non-public address (off: such a task is
    /// a 400 naming `callback_url` when the URL names the address literally
    /// or is a `localhost` name; names are checked on their resolved address
    /// at delivery by the deliverer, whose
    /// [`WebhookConfig::allow_private_destinations`](crate::webhooks::WebhookConfig::allow_private_destinations)
    /// should agree with this).
    pub allow_private_webhook_destinations: bool,
}

impl ApiConfig {
    /// The default public body limit: 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
    /// The default worker-protocol body limit: 8 MiB.
    pub const DEFAULT_WORKER_BODY_LIMIT: usize = 8 * 1024 * 1024;
    /// The default trajectory limit: 512 MiB of JSON (PostgreSQL holds at
    /// most 1 GB in one field).
    pub const DEFAULT_TRAJECTORY_BODY_LIMIT: usize = 512 * 1024 * 1024;
    /// The default follow polling interval: 500 ms.
    pub const DEFAULT_FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(500);
    /// The default export page size: 200 episodes.
    pub const DEFAULT_EXPORT_PAGE_SIZE: u32 = 200;

    /// The defaults, naming the store kind shown by `/health`.
    pub fn for_store(store_kind: impl Into<String>) -> Self {
        Self {
            store_kind: store_kind.into(),
            ..Self::default()
        }
    }

    /// The same settings with a client token.
    pub fn with_client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = Some(token.into());
        self
    }

    /// The same settings with a worker token.
    pub fn with_worker_token(mut self, token: impl Into<String>) -> Self {
        self.worker_token = Some(token.into());
        self
    }

    /// The same settings, accepting callback URLs on non-public addresses
    /// (see [`allow_private_webhook_destinations`](Self::allow_private_webhook_destinations)).
    pub fn allowing_private_webhook_destinations(mut self, allow: bool) -> Self {
        self.allow_private_webhook_destinations = allow;
        self
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            client_token: None,
            worker_token: None,
            body_limit: Self::DEFAULT_BODY_LIMIT,
            worker_body_limit: Self::DEFAULT_WORKER_BODY_LIMIT,
            trajectory_body_limit: Self::DEFAULT_TRAJECTORY_BODY_LIMIT,
            store_kind: "memory".to_string(),
            follow_poll_interval: Self::DEFAULT_FOLLOW_POLL_INTERVAL,
            protect_docs: false,
            export_page_size: Self::DEFAULT_EXPORT_PAGE_SIZE,
            allow_private_webhook_destinations: false,
        }
    }
}

/// Tokens are never printed.
impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |token: &Option<String>| token.as_ref().map(|_| "<redacted>");
        f.debug_struct("ApiConfig")
            .field("client_token", &redact(&self.client_token))
            .field("worker_token", &redact(&self.worker_token))
            .field("body_limit", &self.body_limit)
            .field("worker_body_limit", &self.worker_body_limit)
            .field("trajectory_body_limit", &self.trajectory_body_limit)
            .field("store_kind", &self.store_kind)
            .field("follow_poll_interval", &self.follow_poll_interval)
            .field("protect_docs", &self.protect_docs)
            .field("export_page_size", &self.export_page_size)
            .field(
                "allow_private_webhook_destinations",
                &self.allow_private_webhook_destinations,
            )
            .finish()
    }
}
