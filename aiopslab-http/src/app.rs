//! Running the API as a service: the router on a listener, the sweeper and
//! the completion-webhook deliverer beside it, and a graceful stop — what
//! every server program needs, so the `server` example (and a user's own
//! binary) stays a thin assembly.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use aiopslab_core::MemoryStore;
//! use aiopslab_http::app::{serve_with, ServeOptions};
//! use aiopslab_http::server::{ApiConfig, ApiState};
//! use aiopslab_http::webhooks::WebhookConfig;
//! use tokio_util::sync::CancellationToken;
//!
//! let state = ApiState::with_default_scheduler(Arc::new(MemoryStore::new()), ApiConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let shutdown = CancellationToken::new();
//! let options = ServeOptions {
//!     sweep_interval: Some(Duration::from_secs(5)),
//!     webhooks: Some(WebhookConfig::default().with_secret("s3cret")),
//! };
//! serve_with(listener, state, options, shutdown).await
//! # }
//! ```

use std::time::Duration;

use aiopslab_core::run_sweeper;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{router, ApiState, JsonErrorsListener};
use crate::webhooks::{WebhookConfig, WebhookDeliverer};

/// How often the sweeper runs unless told otherwise: often enough that a
/// lost worker's task is requeued soon after its lease expires.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What runs beside the API in [`serve_with`].
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Run the store's sweep (timeouts, expired leases, retries, offline
    /// workers) at this interval; `None` leaves sweeping to someone else.
    /// Several replicas on one database may each run one.
    pub sweep_interval: Option<Duration>,
    /// Deliver completion webhooks from the store's outbox with these
    /// settings; `None` leaves delivery to someone else (another replica).
    /// Several replicas on one database may each run one.
    pub webhooks: Option<WebhookConfig>,
}

/// Serves the API of `state` on `listener` until `shutdown` fires, then
/// stops accepting connections, lets requests in flight finish and returns.
///
/// With `sweep_interval` set, the store's sweep runs at that interval
/// for as long as the server runs. Completion webhooks are delivered with
/// the default [`WebhookConfig`] (unsigned; see [`serve_with`] to sign them
/// or to leave delivery to another process).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    sweep_interval: Option<Duration>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let options = ServeOptions {
        sweep_interval,
        webhooks: Some(WebhookConfig::default()),
    };
    serve_with(listener, state, options, shutdown).await
}

/// [`serve`] with every option: the sweeper and the webhook deliverer run
/// beside the API as `options` says, and stop with it. The deliverer also
/// serves `POST /tasks/{id}/webhooks/{delivery_id}/redeliver` (unless
/// `state` already has one). Connections are served through a
/// [`JsonErrorsListener`], so even the answers hyper gives by itself to an
/// unparsable request have the API's JSON error shape.
pub async fn serve_with(
    listener: TcpListener,
    state: ApiState,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let deliverer = match options.webhooks {
        Some(config) => Some(
            WebhookDeliverer::new(state.outbox.clone(), config)
                .map_err(std::io::Error::other)?
                .with_metrics(state.metrics.clone()),
        ),
        None => None,
    };
    let state = match (&deliverer, &state.webhooks) {
        (Some(deliverer), None) => state.with_webhooks(deliverer.clone()),
        _ => state,
    };
    let helpers_stop = shutdown.child_token();
    let sweeper = options
        .sweep_interval
        .map(|interval| tokio::spawn(run_sweeper(state.housekeeping.clone(), interval, helpers_stop.clone())));
    let deliverer = deliverer.map(|deliverer| tokio::spawn(deliverer.run(helpers_stop.clone())));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "aiopslab API listening");
    }
    // Open log streams (SSE follow) end when the server stops, so a graceful
    // shutdown does not wait for followed tasks to finish.
    let app = router(state.with_shutdown(shutdown.child_token()));
    let served = axum::serve(JsonErrorsListener::new(listener), app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    // The server may also stop on an I/O error: stop the helpers either way.
    helpers_stop.cancel();
    if let Some(sweeper) = sweeper {
        if let Err(error) = sweeper.await {
            tracing::warn!(%error, "the sweeper task ended abnormally");
        }
    }
    // A delivery pass in progress finishes first (each POST is bounded by its timeout).
    if let Some(deliverer) = deliverer {
        if let Err(error) = deliverer.await {
            tracing::warn!(%error, "the webhook deliverer task ended abnormally");
        }
    }
    tracing::info!("aiopslab API stopped");
    served
}
