//! `aiopslab`: one command for everything a person or a host runs.
//!
//! - `aiopslab serve`: the server (HTTP API, sweeper, webhook deliverer, optionally in-process workers); the
//!   quickstart's `uvicorn main:app --host 0.0.0.0 --port 8000`.
//! - `aiopslab worker`: one worker per cluster; the quickstart's `python worker.py --id worker-001-kind
//!   --backend-type default`.
//! - The client commands (`submit`, `tasks`, `show`, `cancel`, `logs`, `watch`, `workers`, `problems`, `export`):
//!   a terminal front end to a running server's public API.
//!
//! The programs are thin: flags become the library crates' configuration, and what any host application also
//! needs (store selection, the in-process worker pool, signal handling, logging) lives in those crates.

mod client;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Run AIOpsLab problems at scale: the server, its workers, and a client for both.
#[derive(Debug, Parser)]
#[command(name = "aiopslab", version, propagate_version = true, after_help = client::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the HTTP API, the sweeper, webhooks, and optionally in-process workers.
    Serve(Box<serve::ServeArgs>),
    /// Run a worker: claim tasks from a server (or PostgreSQL) and run them on one cluster.
    Worker(Box<worker::WorkerArgs>),
    #[command(flatten)]
    Client(Box<client::ClientCommand>),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Worker(args) => {
                let worker_matches = matches.subcommand_matches("worker").unwrap_or(&matches);
                worker::run(*args, worker_matches).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Client(command) => Ok(client::run(*command).await),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
