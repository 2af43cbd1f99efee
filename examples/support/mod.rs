//! What the `server` and `worker` programs both do at start: logging to
//! stdout and optionally a file, and turning SIGINT/SIGTERM into a graceful
//! shutdown. Included by each program with `#[path]` (they stand alone as
//! examples; this is not part of any library API).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Logs to stdout (level from `RUST_LOG`; default `info`, with PostgreSQL's
/// notices such as "relation already exists, skipping" only from `warn`) and, when given, to
/// a file as well (appended, no colours).
pub fn init_logging(log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colours only on a terminal, and never with a log file: both layers share
    // the formatted span fields, so colour codes would end up in the file.
    let ansi = log_file.is_none() && std::io::stdout().is_terminal();
    let stdout = tracing_subscriber::fmt::layer().with_ansi(ansi).with_filter(filter());
    let file = match log_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    tracing_subscriber::registry().with(stdout).with(file).init();
    Ok(())
}

/// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM; a second signal exits
/// the process at once with status 130.
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

/// This machine's host name, for worker metadata (`None` when unknown).
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}
