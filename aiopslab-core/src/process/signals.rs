//! SIGINT/SIGTERM as a graceful shutdown, and a second signal as an immediate exit.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT (Ctrl-C) or SIGTERM, so running tasks can finish within their grace;
/// a second signal exits the process at once with status 130 (an operator who presses Ctrl-C twice means it).
///
/// Spawns a task on the current Tokio runtime: call it from inside one.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing what is running (signal again to exit now)");
        shutdown.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
