//! Task log entries: what a run printed, streamed in batches by the worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

use crate::error::ValidationError;
use crate::task::TaskId;

/// Severity of a log entry, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something odd that did not stop the run.
    Warning,
    /// Something failed.
    Error,
    /// The run cannot go on.
    Critical,
}

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "level",
                    format!("unknown level {s:?}; expected one of debug, info, warning, error, critical"),
                )
            })
    }
}

/// Where in the episode a log entry was written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LogContext {
    /// The agent step, when the entry belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The action being run (`exec_shell`, `submit`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Anything else worth keeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A log entry as a worker submits it; the store assigns id and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct NewLogEntry {
    /// Severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// Where in the episode.
    #[serde(default)]
    pub context: LogContext,
}

impl NewLogEntry {
    /// An entry with an empty context.
    pub fn new(level: LogLevel, message: impl Into<String>) -> Self {
        Self {
            level,
            message: message.into(),
            context: LogContext::default(),
        }
    }

    /// The same entry, attached to an agent step.
    pub fn at_step(mut self, step: u32) -> Self {
        self.context.step = Some(step);
        self
    }

    /// The same entry, naming an action.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.context.action = Some(action.into());
        self
    }
}

/// A stored log entry. Ids increase in append order within a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// Position in the store's log; increases in append order.
    pub id: i64,
    /// The task it belongs to.
    #[cfg_attr(feature = "utoipa", schema(value_type = uuid::Uuid))]
    pub task_id: TaskId,
    /// When the store received it (store clock).
    pub timestamp: DateTime<Utc>,
    /// Severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// Where in the episode.
    pub context: LogContext,
}

/// Filters for reading a task's log. Entries come back in append order.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LogQuery {
    /// Only entries at this level or more severe.
    pub min_level: Option<LogLevel>,
    /// Only entries with a timestamp at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with an id greater than this (for following a live log).
    pub after_id: Option<i64>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

/// Builders: each field, one call (the struct is non-exhaustive).
impl LogQuery {
    /// The same value with `min_level` set (only entries at this level or more severe).
    pub fn with_min_level(mut self, min_level: Option<LogLevel>) -> Self {
        self.min_level = min_level;
        self
    }

    /// The same value with `since` set (only entries with a timestamp at or after this instant).
    pub fn with_since(mut self, since: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self
    }

    /// The same value with `after_id` set (only entries with an id greater than this (for following a live log)).
    pub fn with_after_id(mut self, after_id: Option<i64>) -> Self {
        self.after_id = after_id;
        self
    }

    /// The same value with `limit` set (at most this many entries).
    pub fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }
}
