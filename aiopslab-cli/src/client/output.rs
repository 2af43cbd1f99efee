//! What the client commands print, in one place: aligned tables (comfy-table), JSON for `--json`, the colours of
//! statuses and log levels (anstyle, written through anstream, which drops them when stdout is not a terminal or
//! `NO_COLOR` is set), and the few text forms of times, rewards and ids the commands share.

use std::io::{IsTerminal, Write};

use aiopslab_core::{LogEntry, LogLevel, TaskStatus};
use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use comfy_table::{presets, Table};
use serde::Serialize;

use super::CliError;

/// Whether stdout is a terminal: bars and colours for a person, plain lines for a pipe.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints one line on stdout for a person: styles are kept on a terminal and dropped otherwise (anstream).
/// A closed pipe (`aiopslab tasks | head -1`) is an error the caller passes up, which ends the command quietly.
pub fn say(line: impl std::fmt::Display) -> Result<(), CliError> {
    writeln!(anstream::stdout().lock(), "{line}")?;
    Ok(())
}

/// A table with these column headers (none: no header line), drawn as aligned columns without borders (like
/// `kubectl get`).
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    if !headers.is_empty() {
        table.set_header(headers.iter().copied());
    }
    table
}

/// `1 task`, `3 tasks`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Prints a table on stdout, without the padding column before its first cell.
pub fn print_table(table: &Table) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for line in table.lines() {
        writeln!(out, "{}", line.strip_prefix(' ').unwrap_or(&line).trim_end())?;
    }
    Ok(())
}

/// Prints `value` as pretty JSON on stdout (the `--json` output of a command).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.into()))?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Prints `value` as one line of JSON on stdout (JSON Lines, for streams).
pub fn print_json_line<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(|e| CliError::Other(e.into()))?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// `text` in `style`, for anstream's writers (which strip the style when they do not write to a terminal).
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// The colour of a task status: green done, red failed, yellow stopped, cyan running.
pub fn status_style(status: TaskStatus) -> Style {
    let colour = match status {
        TaskStatus::Completed => AnsiColor::Green,
        TaskStatus::Failed => AnsiColor::Red,
        TaskStatus::Timeout | TaskStatus::Cancelled => AnsiColor::Yellow,
        TaskStatus::Running => AnsiColor::Cyan,
        TaskStatus::Pending => return Style::new().dimmed(),
    };
    Style::new().fg_color(Some(colour.into()))
}

/// The colour of a log level.
pub fn level_style(level: LogLevel) -> Style {
    match level {
        LogLevel::Debug => Style::new().dimmed(),
        LogLevel::Info => Style::new().fg_color(Some(AnsiColor::Green.into())),
        LogLevel::Warning => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        LogLevel::Error => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        LogLevel::Critical => Style::new()
            .fg_color(Some(AnsiColor::White.into()))
            .bg_color(Some(AnsiColor::Red.into()))
            .bold(),
    }
}

/// One log entry as a line: time, level (coloured on a terminal), message.
pub fn log_line(entry: &LogEntry) -> String {
    let level = format!("{:<8}", entry.level.as_str().to_uppercase());
    format!(
        "{} {} {}",
        entry.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        paint(level_style(entry.level), &level),
        entry.message
    )
}

/// An instant as the tables show it (UTC, to the second).
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional instant, `-` when absent.
pub fn maybe_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_string(), time)
}

/// A reward as shown to people (`1.00`), `-` when there is none.
pub fn reward(reward: Option<f64>) -> String {
    reward.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

/// Counts per status as `2 completed, 1 running` (statuses with none left out), in lifecycle order.
pub fn status_counts(counts: impl Fn(TaskStatus) -> usize) -> String {
    let parts: Vec<String> = TaskStatus::ALL
        .into_iter()
        .filter_map(|status| match counts(status) {
            0 => None,
            n => Some(format!("{n} {status}")),
        })
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}
