//! The client commands of `aiopslab`: a terminal front end to a running server's public API, for a person
//! (tables, colours, live progress bars) and for scripts (`--json` on every command, plain lines when stdout is
//! not a terminal, exit codes that say what went wrong).
//!
//! Every command talks to `--server` (env `AIOPSLAB_URL`, default `http://localhost:8000`) through
//! [`aiopslab_http::client::ApiClient`], with the client token from `AIOPSLAB_CLIENT_TOKEN` when it is set. The
//! token is deliberately not a flag: a flag's value ends up in shell history and in `ps` output. The wire types
//! are the core's (`Task`, `TaskStatus`, `LogEntry`, ...); nothing here re-declares the API's format.
//!
//! One file per command family: [`submit`], [`tasks`] (`tasks`, `show`, `cancel`), [`logs`], [`watch`] (with its
//! two views in [`progress`]), [`fleet`] (`workers`, `problems`), [`export`]; [`output`] holds the table, JSON
//! and colour helpers they share and [`error`] the exit codes.

mod error;
mod export;
mod fleet;
mod logs;
mod output;
mod parse;
mod progress;
mod submit;
mod tasks;
mod watch;

use std::process::ExitCode;

use aiopslab_http::client::ApiClient;
use clap::{Args, Subcommand};

pub use error::CliError;

/// The environment variable the client token is read from (never a flag).
pub const CLIENT_TOKEN_ENV: &str = "AIOPSLAB_CLIENT_TOKEN";

/// What the exit codes mean; shown by `aiopslab --help` and each client command's `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes of the client commands:
  0  success (watch: every task completed)
  1  watch: at least one task ended failed, cancelled or timeout
  2  usage error (a wrong flag or value; nothing was sent)
  3  the server refused the request (its message and code are printed)
  4  the server could not be reached (connection refused, DNS, timeout)
  5  any other failure (writing the output file, an answer that cannot be read)

The client token is read from AIOPSLAB_CLIENT_TOKEN, never from a flag.";

/// The client commands, flattened into `aiopslab`'s own subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a problem run (a batch group of N runs with --count N); prints the task id(s).
    #[command(after_help = EXIT_CODES_HELP)]
    Submit(submit::SubmitArgs),
    /// List tasks as a table, newest first.
    #[command(after_help = EXIT_CODES_HELP)]
    Tasks(tasks::TasksArgs),
    /// Show one task: its parameters, result, reward and error (and its log with --logs).
    #[command(after_help = EXIT_CODES_HELP)]
    Show(tasks::ShowArgs),
    /// Cancel tasks: a pending task at once, a running one by its worker.
    #[command(after_help = EXIT_CODES_HELP)]
    Cancel(tasks::CancelArgs),
    /// Print a task's log; --follow streams it until the task ends.
    #[command(after_help = EXIT_CODES_HELP)]
    Logs(logs::LogsArgs),
    /// Watch tasks live until every one is terminal (progress bars on a terminal, plain lines otherwise).
    #[command(after_help = EXIT_CODES_HELP, long_about = watch::LONG_ABOUT)]
    Watch(watch::WatchArgs),
    /// List the workers of the fleet.
    #[command(after_help = EXIT_CODES_HELP)]
    Workers(fleet::WorkersArgs),
    /// List the AIOpsLab problem catalog the server knows.
    #[command(after_help = EXIT_CODES_HELP)]
    Problems(fleet::ProblemsArgs),
    /// Export episodes (OpenAI chat format with rewards) as JSON Lines to a file or stdout, streamed.
    #[command(after_help = EXIT_CODES_HELP)]
    Export(export::ExportArgs),
}

/// The options every client command takes: where the server is, and whether to print JSON.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(long, env = "AIOPSLAB_URL", default_value = "http://localhost:8000")]
    pub server: String,
    /// Print machine-readable JSON on stdout, and nothing else there (messages go to stderr).
    #[arg(long)]
    pub json: bool,
}

impl Connection {
    /// A client of the server, with the token from the environment when it is set.
    pub fn client(&self) -> Result<ApiClient, CliError> {
        let token = std::env::var(CLIENT_TOKEN_ENV).ok().filter(|t| !t.is_empty());
        ApiClient::new(&self.server, token).map_err(|e| CliError::Usage(format!("--server: {e}")))
    }
}

/// Runs a client command; prints what failed on stderr and returns the exit code that says why.
pub async fn run(command: ClientCommand) -> ExitCode {
    let outcome = match command {
        ClientCommand::Submit(args) => submit::run(args).await,
        ClientCommand::Tasks(args) => tasks::list(args).await,
        ClientCommand::Show(args) => tasks::show(args).await,
        ClientCommand::Cancel(args) => tasks::cancel(args).await,
        ClientCommand::Logs(args) => logs::run(args).await,
        ClientCommand::Watch(args) => watch::run(args).await,
        ClientCommand::Workers(args) => fleet::workers(args).await,
        ClientCommand::Problems(args) => fleet::problems(args).await,
        ClientCommand::Export(args) => export::run(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            error.print();
            error.exit_code()
        }
    }
}
