//! Logging to stdout and, when asked, to a file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file (or its directory) cannot be created or opened.
    #[error("cannot open log file {path}: {source}")]
    File {
        /// The file asked for.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A global subscriber was already installed in this process.
    #[error("logging is already set up in this process: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the process's log subscriber: stdout (level from `RUST_LOG`; default `info`, with PostgreSQL's notices
/// such as "relation already exists, skipping" only from `warn`) and, when `log_file` is given, that file as well
/// (appended, its directory created, no colours).
///
/// Colours go to stdout only when it is a terminal and there is no log file: both layers share the formatted span
/// fields, so colour codes would otherwise end up in the file.
pub fn init_logging(log_file: Option<&Path>) -> Result<(), LoggingError> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let ansi = log_file.is_none() && std::io::stdout().is_terminal();
    let stdout = tracing_subscriber::fmt::layer().with_ansi(ansi).with_filter(filter());
    let file = match log_file {
        Some(path) => Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(open_append(path)?))
                .with_filter(filter()),
        ),
        None => None,
    };
    tracing_subscriber::registry().with(stdout).with(file).try_init()?;
    Ok(())
}

/// Opens `path` for appending, creating it and its directory.
fn open_append(path: &Path) -> Result<std::fs::File, LoggingError> {
    let failed = |source| LoggingError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)
}
