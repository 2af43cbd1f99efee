//! [`ApiClient::follow_logs`]: a task's log as it is written, over
//! `GET /tasks/{id}/logs?follow=true` (Server-Sent Events: one `log` event per
//! entry, then `end` with the task's terminal status, or `error` when the
//! server stops the stream).
//!
//! The stream has no overall timeout (a run may take hours), but the server
//! sends a keep-alive every 15 s, so a connection silent for
//! [`FOLLOW_SILENCE`] counts as lost and fails as
//! [`StoreError::Unavailable`]. A stream that closes without `end` (the
//! server shut down) reads as its end with no status: the caller may follow
//! again from the last entry it saw (`LogQuery::after_id`).

use std::time::Duration;

use aiopslab_core::{LogEntry, LogQuery, StoreError, TaskId, TaskStatus};
use reqwest::{Method, Response};

use super::error::{transport_error, Subject};
use super::sse::{SseEvent, SseParser};
use super::wire::{log_query_params, WireLogEntry};
use super::{ApiClient, ApiResult};

/// How long a followed log may stay silent before the connection counts as
/// lost: three of the server's 15 s keep-alives.
pub const FOLLOW_SILENCE: Duration = Duration::from_secs(45);

/// One event of a followed log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LogEvent {
    /// A log entry, in append order.
    Entry(LogEntry),
    /// The task is terminal, in this status; the stream ends.
    End(TaskStatus),
    /// The server stopped the stream, saying why (the task was deleted, a
    /// store error); the stream ends.
    Error(String),
}

/// A followed task log: read it with [`next`](LogFollow::next) until it
/// returns `None`.
#[derive(Debug)]
pub struct LogFollow {
    task_id: TaskId,
    response: Response,
    parser: SseParser,
    /// Parsed events not yet handed out.
    ready: std::collections::VecDeque<SseEvent>,
    /// The last event handed out ended the stream.
    ended: bool,
}

impl LogFollow {
    /// The next event: `Some(LogEvent::End(..))` or `Some(LogEvent::Error(..))`
    /// is the last, then `None`. `None` without either means the server closed
    /// the stream early (it is shutting down). An entry the client cannot read
    /// fails with `StoreError::Internal`; a lost connection with
    /// `StoreError::Unavailable`.
    pub async fn next(&mut self) -> ApiResult<Option<LogEvent>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(event) = self.ready.pop_front() {
                match self.decode(event)? {
                    Some(event) => {
                        self.ended = !matches!(event, LogEvent::Entry(_));
                        return Ok(Some(event));
                    }
                    None => continue,
                }
            }
            let chunk = match tokio::time::timeout(FOLLOW_SILENCE, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => {
                    self.ended = true;
                    return Ok(None);
                }
                Ok(Err(error)) => return Err(transport_error(&error).into()),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "the log stream of task {} was silent for {} s",
                        self.task_id,
                        FOLLOW_SILENCE.as_secs()
                    ))
                    .into())
                }
            };
            self.ready.extend(self.parser.push(&chunk));
        }
    }

    /// The event an SSE event stands for; `None` for one this client does not know.
    fn decode(&self, event: SseEvent) -> ApiResult<Option<LogEvent>> {
        let unexpected = |what: String| StoreError::Internal(format!("unexpected log stream event: {what}"));
        Ok(Some(match event.event.as_str() {
            "log" => {
                let entry: WireLogEntry =
                    serde_json::from_str(&event.data).map_err(|e| unexpected(format!("{e}: {}", event.data)))?;
                LogEvent::Entry(entry.into_entry(self.task_id))
            }
            "end" => LogEvent::End(
                event
                    .data
                    .trim()
                    .parse()
                    .map_err(|_| unexpected(format!("end with status {:?}", event.data)))?,
            ),
            "error" => LogEvent::Error(event.data),
            _ => return Ok(None),
        }))
    }
}

impl ApiClient {
    /// Follows a task's log (`GET /tasks/{id}/logs?follow=true`): the entries
    /// `query` selects that exist, then each new one as it is written, until
    /// the task is terminal. An unknown task fails here (404), before the
    /// stream starts.
    pub async fn follow_logs(&self, task_id: TaskId, query: &LogQuery) -> ApiResult<LogFollow> {
        let mut params = log_query_params(query);
        params.push(("follow", "true".to_string()));
        let request = self
            .http
            .stream_request(Method::GET, &["tasks", &task_id.to_string(), "logs"])?
            .query(&params)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        // The answer's head must come within the usual timeout; the body may take as long as the run.
        let response = self.http.open_stream(request, &Subject::task(task_id)).await?;
        Ok(LogFollow {
            task_id,
            response,
            parser: SseParser::default(),
            ready: Default::default(),
            ended: false,
        })
    }
}
