//! `aiopslab logs ID [--follow]`: a task's log, one line per entry (time, level coloured on a terminal,
//! message). `--follow` reads the server's event stream (`GET /tasks/{id}/logs?follow=true`) and ends when
//! the server sends its `end` event, saying on stderr how the task ended; a stream the server closes early (it
//! is restarting) is reopened after the last entry shown, so nothing is printed twice or skipped.
//! `--json` prints each entry as one line of JSON (JSON Lines), in both modes.

use std::process::ExitCode;
use std::time::Duration;

use aiopslab_core::{LogEntry, LogLevel, LogQuery, TaskId};
use aiopslab_http::client::{ApiClient, LogEvent};
use anyhow::anyhow;
use clap::Args;

use super::output::{log_line, print_json_line, say};
use super::{parse, CliError, Connection};

/// Reconnections in a row, without a new entry between them, before `--follow` gives up.
const RECONNECTS: u32 = 3;
/// The pause before a reconnection.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// `aiopslab logs --help`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task id.
    pub id: TaskId,
    /// Keep printing new entries until the task ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Only entries at this level or more severe.
    #[arg(long, value_parser = parse::log_level())]
    pub level: Option<LogLevel>,
    /// Only entries after this entry id.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub after_id: Option<i64>,
    /// At most this many entries (without --follow).
    #[arg(long, conflicts_with = "follow", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub connection: Connection,
}

/// Runs `aiopslab logs`.
pub async fn run(args: LogsArgs) -> Result<ExitCode, CliError> {
    let client = args.connection.client()?;
    let query = LogQuery::default()
        .with_min_level(args.level)
        .with_after_id(args.after_id)
        .with_limit(args.limit.map(|n| n as usize));
    if args.follow {
        return follow(&client, args.id, query, args.connection.json).await;
    }
    for entry in client.get_logs(args.id, &query).await? {
        print_entry(&entry, args.connection.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entry(entry: &LogEntry, json: bool) -> Result<(), CliError> {
    if json {
        print_json_line(entry)
    } else {
        say(log_line(entry))
    }
}

/// Follows the log until the `end` event; reopens a stream the server closed early.
async fn follow(client: &ApiClient, id: TaskId, mut query: LogQuery, json: bool) -> Result<ExitCode, CliError> {
    let mut tries = 0;
    loop {
        let mut stream = client.follow_logs(id, &query).await?;
        let cut = loop {
            match stream.next().await {
                Ok(Some(LogEvent::Entry(entry))) => {
                    tries = 0;
                    query.after_id = Some(entry.id);
                    print_entry(&entry, json)?;
                }
                Ok(Some(LogEvent::End(status))) => {
                    eprintln!("task {id} ended: {status}");
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(Some(LogEvent::Error(message))) => {
                    return Err(anyhow!("the server stopped the log stream: {message}").into());
                }
                Ok(Some(other)) => return Err(anyhow!("unexpected log stream event {other:?}").into()),
                Ok(None) => break CliError::Other(anyhow!("the server closed the log stream before the task ended")),
                Err(error) => break error.into(),
            }
        };
        tries += 1;
        if tries > RECONNECTS {
            return Err(cut);
        }
        eprintln!("{}; reconnecting", cut.describe().trim_start_matches("error: "));
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
