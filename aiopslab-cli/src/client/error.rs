//! How a client command fails: one line (or a few) on stderr that a person can act on, and an exit code that
//! tells a script which kind of failure it was (see [`EXIT_CODES_HELP`](super::EXIT_CODES_HELP)).
//!
//! A refusal prints the server's own message and code (`error: task … not found (HTTP 404, not_found)`); a
//! server that cannot be reached says so and where it was looked for; a 401 says where the token comes from.

use std::process::ExitCode;

use aiopslab_core::StoreError;
use aiopslab_http::client::{ApiError, ServerError};

/// Exit code: at least one watched task ended failed, cancelled or timeout.
pub const EXIT_NOT_ALL_COMPLETED: u8 = 1;
/// Exit code: a wrong flag or value (clap's own usage errors exit 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server answered with an error.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: no answer from the server.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: any other failure.
pub const EXIT_OTHER: u8 = 5;

/// Why a client command failed.
#[derive(Debug)]
pub enum CliError {
    /// A flag's value is wrong; nothing was sent.
    Usage(String),
    /// The server answered with an error.
    Refused(Box<ServerError>),
    /// No answer came: the server could not be reached, or it went silent.
    Unreachable(StoreError),
    /// Anything else: a local I/O failure, an answer this client cannot read.
    Other(anyhow::Error),
}

impl From<ApiError> for CliError {
    fn from(error: ApiError) -> Self {
        match (error.server, error.error) {
            (Some(server), _) => CliError::Refused(server),
            (None, error @ StoreError::Unavailable(_)) => CliError::Unreachable(error),
            (None, error) => CliError::Other(error.into()),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::Other(error)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Other(error.into())
    }
}

impl CliError {
    /// The exit code of this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Refused(_) => EXIT_REFUSED,
            CliError::Unreachable(_) => EXIT_UNREACHABLE,
            CliError::Other(_) => EXIT_OTHER,
        })
    }

    /// Prints the failure on stderr; a closed stdout pipe (the reader had enough) prints nothing.
    pub fn print(&self) {
        if !self.is_closed_pipe() {
            eprintln!("{}", self.describe());
        }
    }

    /// Whether this is stdout's reader going away (`| head`).
    fn is_closed_pipe(&self) -> bool {
        matches!(self, CliError::Other(error)
            if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
    }

    /// What [`print`](Self::print) prints.
    pub fn describe(&self) -> String {
        match self {
            CliError::Usage(message) => format!("error: {message}"),
            CliError::Refused(server) => refusal(server),
            CliError::Unreachable(error) => {
                let reason = match error {
                    StoreError::Unavailable(reason) => reason.as_str(),
                    _ => "no answer",
                };
                format!(
                    "error: no answer from the server: {reason}\n  hint: is `aiopslab serve` running there? \
                     Point --server (or AIOPSLAB_URL) at it."
                )
            }
            CliError::Other(error) => format!("error: {error:#}"),
        }
    }
}

/// The server's message and code, its details when they add something, and a hint for a missing token.
fn refusal(server: &ServerError) -> String {
    let mut text = format!("error: {server}");
    if adds_to(&server.details, &server.message) {
        text.push_str(&format!("\n  details: {}", server.details));
    }
    if server.status == 401 {
        text.push_str(&format!(
            "\n  hint: this server needs a client token: set {}",
            super::CLIENT_TOKEN_ENV
        ));
    }
    text
}

/// Whether `details` says something `message` does not: a value that is not a string, or a string the message
/// does not contain (`{"entity": "task", "id": X}` beside "task X not found" says nothing new).
fn adds_to(details: &serde_json::Value, message: &str) -> bool {
    details.as_object().is_some_and(|d| {
        d.values()
            .any(|value| value.as_str().is_none_or(|text| !message.contains(text)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_are_shown_only_when_they_add_to_the_message() {
        let message = "task 42 not found";
        assert!(!adds_to(&json!({"entity": "task", "id": "42"}), message));
        assert!(!adds_to(&json!({}), message));
        assert!(!adds_to(&serde_json::Value::Null, message));
        assert!(adds_to(&json!({"field": "limit"}), message));
        assert!(adds_to(&json!({"attempt": 2}), message));
    }
}
