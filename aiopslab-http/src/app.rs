//! Running the API as a service: the router on a listener, the sweeper
//! beside it, and a graceful stop — what every server program needs, so the
//! `server` example (and a user's own binary) stays a thin assembly.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use aiopslab_core::MemoryStore;
//! use aiopslab_http::app::serve;
//! use aiopslab_http::server::{ApiConfig, ApiState};
//! use tokio_util::sync::CancellationToken;
//!
//! let state = ApiState::with_default_scheduler(Arc::new(MemoryStore::new()), ApiConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let shutdown = CancellationToken::new();
//! serve(listener, state, Some(Duration::from_secs(5)), shutdown).await
//! # }
//! ```

use std::time::Duration;

use aiopslab_core::run_sweeper;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{router, ApiState};

/// How often the sweeper runs unless told otherwise: often enough that a
/// lost worker's task is requeued soon after its lease expires.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves the API of `state` on `listener` until `shutdown` fires, then
/// stops accepting connections, lets requests in flight finish and returns.
///
/// With `sweep_interval` set, the scheduler's sweep (timeouts, expired
/// leases, retries, offline workers) runs at that interval for as long as the
/// server runs; several replicas on one database may each run one. `None`
/// leaves sweeping to someone else.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    sweep_interval: Option<Duration>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let sweeper_stop = shutdown.child_token();
    let sweeper = sweep_interval.map(|interval| {
        let scheduler = state.scheduler.clone();
        tokio::spawn(run_sweeper(scheduler, interval, sweeper_stop.clone()))
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "aiopslab API listening");
    }
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    // The server may also stop on an I/O error: stop the sweeper either way.
    sweeper_stop.cancel();
    if let Some(sweeper) = sweeper {
        if let Err(error) = sweeper.await {
            tracing::warn!(%error, "the sweeper task ended abnormally");
        }
    }
    tracing::info!("aiopslab API stopped");
    served
}
