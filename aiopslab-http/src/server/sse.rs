//! The follow mode of `GET /tasks/{id}/logs?follow=true`: a Server-Sent
//! Events stream with one `log` event per entry (data = the entry as JSON,
//! event id = the entry id, so a reconnecting `EventSource` resumes with
//! `Last-Event-ID`) and a final `end` event whose data is the task's terminal
//! status.
//!
//! The store has no log wake-ups, so the stream polls it with `after_id`
//! every [`ApiConfig::follow_poll_interval`](super::ApiConfig) while there is
//! nothing new. Once the task is terminal it reads the log one last time (a
//! worker appends its last entries before it finishes) and ends. When the
//! server shuts down ([`ApiState::shutdown`](super::ApiState)) the stream
//! closes without an `end` event, so the client reconnects elsewhere.

use std::collections::VecDeque;
use std::convert::Infallible;

use aiopslab_core::{LogEntry, LogQuery, StoreError, TaskId, TaskStatus};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};

use super::state::ApiState;

struct Follow {
    state: ApiState,
    task_id: TaskId,
    query: LogQuery,
    pending: VecDeque<LogEntry>,
    end: Option<TaskStatus>,
    done: bool,
}

enum Poll {
    /// New entries were queued, or the end was reached.
    Progress,
    /// Nothing new yet.
    Idle,
    /// The stream must stop with this message.
    Fail(String),
}

impl Follow {
    async fn fetch(&mut self) -> Result<usize, StoreError> {
        let entries = self.state.tasks.get_logs(self.task_id, &self.query).await?;
        if let Some(last) = entries.last() {
            self.query.after_id = Some(last.id);
        }
        let n = entries.len();
        self.pending.extend(entries);
        Ok(n)
    }

    async fn poll(&mut self) -> Poll {
        match self.fetch().await {
            Ok(n) if n > 0 => return Poll::Progress,
            Ok(_) => {}
            Err(error) => return self.failed(error),
        }
        match self.state.tasks.get_task(self.task_id).await {
            Ok(task) if task.status.is_terminal() => {
                // Entries appended between the read above and the finish.
                if let Err(error) = self.fetch().await {
                    return self.failed(error);
                }
                self.end = Some(task.status);
                Poll::Progress
            }
            Ok(_) => Poll::Idle,
            Err(error) => self.failed(error),
        }
    }

    fn failed(&self, error: StoreError) -> Poll {
        if error.is_transient() {
            tracing::debug!(task_id = %self.task_id, %error, "log follow: store unavailable, retrying");
            return Poll::Idle;
        }
        tracing::warn!(task_id = %self.task_id, %error, "log follow stopped");
        match error {
            StoreError::NotFound { .. } => Poll::Fail("the task no longer exists".to_string()),
            _ => Poll::Fail("the log stream stopped on a server error".to_string()),
        }
    }
}

fn log_event(entry: &LogEntry) -> Option<Event> {
    Event::default()
        .event("log")
        .id(entry.id.to_string())
        .json_data(entry)
        .map_err(|error| tracing::error!(%error, "cannot serialize a log entry"))
        .ok()
}

async fn next_event(mut follow: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if follow.done {
            return None;
        }
        if let Some(entry) = follow.pending.pop_front() {
            match log_event(&entry) {
                Some(event) => return Some((Ok(event), follow)),
                None => continue,
            }
        }
        if let Some(status) = follow.end {
            follow.done = true;
            return Some((Ok(Event::default().event("end").data(status.as_str())), follow));
        }
        if follow.state.shutdown.is_cancelled() {
            // The client's EventSource reconnects (with Last-Event-ID) to a live server.
            return None;
        }
        match follow.poll().await {
            Poll::Progress => {}
            Poll::Idle => {
                let shutdown = follow.state.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(follow.state.config.follow_poll_interval) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            Poll::Fail(message) => {
                follow.done = true;
                return Some((Ok(Event::default().event("error").data(message)), follow));
            }
        }
    }
}

/// The event stream following `task_id`'s log from `query` on.
pub fn follow_logs(
    state: ApiState,
    task_id: TaskId,
    query: LogQuery,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let follow = Follow {
        state,
        task_id,
        query,
        pending: VecDeque::new(),
        end: None,
        done: false,
    };
    Sse::new(stream::unfold(follow, next_event)).keep_alive(KeepAlive::default())
}
