//! Flag values the client commands share, parsed by clap with the core's own spellings, so that a wrong value
//! is a usage error (exit 2) naming the accepted ones before anything is sent.

use aiopslab_core::catalog::{Application, TaskType};
use aiopslab_core::{LogLevel, Outcome, TaskSort, TaskStatus, WorkerStatus};
use aiopslab_http::client::Outcomes;
use chrono::{DateTime, Utc};
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// `--status`: pending, running, completed, failed, timeout or cancelled.
pub fn task_status() -> impl TypedValueParser<Value = TaskStatus> {
    PossibleValuesParser::new(TaskStatus::ALL.map(TaskStatus::as_str)).try_map(|s| s.parse::<TaskStatus>())
}

/// `--status` of workers: idle, busy or offline.
pub fn worker_status() -> impl TypedValueParser<Value = WorkerStatus> {
    PossibleValuesParser::new(WorkerStatus::ALL.map(WorkerStatus::as_str)).try_map(|s| s.parse::<WorkerStatus>())
}

/// `--sort`: created_at, -created_at, priority or -priority.
pub fn task_sort() -> impl TypedValueParser<Value = TaskSort> {
    PossibleValuesParser::new(["-created_at", "created_at", "-priority", "priority"]).try_map(|s| s.parse::<TaskSort>())
}

/// `--level`: debug, info, warning, error or critical.
pub fn log_level() -> impl TypedValueParser<Value = LogLevel> {
    PossibleValuesParser::new(LogLevel::ALL.map(LogLevel::as_str)).try_map(|s| s.parse::<LogLevel>())
}

/// The task types of the catalog, by their wire names.
const TASK_TYPES: [TaskType; 4] = [
    TaskType::Detection,
    TaskType::Localization,
    TaskType::Analysis,
    TaskType::Mitigation,
];

/// `--task-type`: detection, localization, analysis or mitigation.
pub fn task_type() -> impl TypedValueParser<Value = TaskType> {
    PossibleValuesParser::new(TASK_TYPES.map(TaskType::as_str)).try_map(|s| {
        TASK_TYPES
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown task type {s:?}"))
    })
}

/// The applications of the catalog, by their wire names.
const APPLICATIONS: [(&str, Application); 4] = [
    ("HotelReservation", Application::HotelReservation),
    ("SocialNetwork", Application::SocialNetwork),
    ("AstronomyShop", Application::AstronomyShop),
    ("Flower", Application::Flower),
];

/// `--application`: HotelReservation, SocialNetwork, AstronomyShop or Flower.
pub fn application() -> impl TypedValueParser<Value = Application> {
    PossibleValuesParser::new(APPLICATIONS.map(|(name, _)| name)).try_map(|s| {
        APPLICATIONS
            .into_iter()
            .find(|(name, _)| *name == s)
            .map(|(_, application)| application)
            .ok_or_else(|| format!("unknown application {s:?}"))
    })
}

/// An RFC 3339 instant (`2026-01-31T12:00:00Z`).
pub fn instant(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant such as 2026-01-31T12:00:00Z: {e}"))
}

/// `--outcome`: `all`, or a comma-separated list of valid, aborted, timeout, cancelled.
pub fn outcomes(raw: &str) -> Result<Outcomes, String> {
    if raw == "all" {
        return Ok(Outcomes::All);
    }
    raw.split(',')
        .map(|part| part.trim().parse::<Outcome>())
        .collect::<Result<Vec<_>, _>>()
        .map(Outcomes::Only)
        .map_err(|_| {
            format!("expected all, or a comma-separated list of valid, aborted, timeout, cancelled; got {raw:?}")
        })
}

/// `KEY=VALUE` (submit's metadata).
pub fn key_equals_value(raw: &str) -> Result<(String, String), String> {
    key_value(raw, '=')
}

/// `KEY:VALUE` (the export's metadata filter, as the server spells it).
pub fn key_colon_value(raw: &str) -> Result<(String, String), String> {
    key_value(raw, ':')
}

/// `KEY<separator>VALUE`, split at the first separator (the key non-empty; the value may hold the separator).
fn key_value(raw: &str, separator: char) -> Result<(String, String), String> {
    match raw.split_once(separator) {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY{separator}VALUE, got {raw:?}")),
    }
}
