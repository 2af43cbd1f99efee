//! What a program hosting aiopslab does at start and at the end (feature `process`): logging to stdout and
//! optionally a file ([`init_logging`]), a graceful shutdown on SIGINT/SIGTERM with a second signal exiting at once
//! ([`cancel_on_signals`]), and the host name workers report ([`host_name`]).
//!
//! The `aiopslab` command uses exactly these; an application that embeds the server or a worker pool can too,
//! or keep its own logging and signal handling (nothing else in the crate depends on them).

mod host;
mod logging;
mod signals;

pub use host::host_name;
pub use logging::{init_logging, LoggingError};
pub use signals::cancel_on_signals;
