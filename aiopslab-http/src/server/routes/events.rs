//! `GET /workers/{id}/events`: the store's wake-ups pushed to a remote
//! worker, so an idle worker over HTTP claims new work, and stops a cancelled
//! run, at once rather than at its next poll or heartbeat.
//!
//! Server-Sent Events, one `store` event per wake-up (data = the
//! [`StoreEvent`] as JSON: `{"event":"task_available","backend_type":...}`,
//! `{"event":"cancel_requested","task_id":...}` or `{"event":"resync"}`,
//! which says wake-ups may have been missed), and a comment every
//! [`KEEP_ALIVE`] so both ends notice a dead connection. SSE rather than
//! WebSocket or long-poll: the events flow one way, it is plain HTTP through
//! every proxy, and the server already serves SSE (`?follow=true` logs).
//!
//! A new task wakes only a few streams (see `wakeups.rs`: dealt, idle workers
//! first, so a fleet does not claim all at once); cancels go to every stream.
//! A lagging reader gets a `lagged` event (data = how many it missed) and
//! should check the queue itself. A store that pushes nothing (it has no
//! `subscribe`) keeps the stream open with keep-alives only: the worker's
//! polling covers it. The stream ends when the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use aiopslab_core::StoreEvent;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};

use crate::server::error::{ApiError, ApiResult, ErrorBody};
use crate::server::extract::WorkerIdPath;
use crate::server::state::ApiState;
use crate::server::wakeups::Wake;

/// How often an idle stream carries a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Streams the store's wake-ups to a worker.
#[utoipa::path(
    get, path = "/workers/{id}/events", tag = "worker protocol",
    params(("id" = String, Path, min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._-]{1,128}$",
        description = "The listening worker's id (the worker-id pattern)")),
    responses(
        (status = 200, description = "text/event-stream: one `store` event per wake-up (data = `{\"event\":\"task_available\",\"backend_type\":...}`, dealt to a few idle workers' streams, `{\"event\":\"cancel_requested\",\"task_id\":...}` or `{\"event\":\"resync\"}`: check the queue), a `lagged` event (data = how many were missed) when the reader fell behind, keep-alive comments every 15 s", content_type = "text/event-stream"),
        (status = 400, description = "Invalid worker id", body = ErrorBody),
        (status = 401, description = "Missing or invalid worker token", body = ErrorBody),
        (status = 403, description = "Client token used on a worker route", body = ErrorBody),
    ),
    security((), ("worker_token" = []))
)]
pub async fn worker_events(
    State(state): State<ApiState>,
    WorkerIdPath(id): WorkerIdPath,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    aiopslab_core::worker::validate_worker_id("id", &id).map_err(|e| ApiError::validation(&e))?;
    tracing::debug!(worker_id = %id, "worker listening for store events");
    // The backend type decides which new tasks may wake this stream; a worker not (yet) known hears of all.
    let backend_type = state.fleet.get_worker(&id).await.ok().map(|worker| worker.backend_type);
    let shutdown = state.shutdown.clone();
    let subscription = state.wakeups.listen(&id, backend_type, &shutdown);
    let events = stream::unfold((subscription, shutdown), |(mut subscription, shutdown)| async move {
        let Some(wakeups) = subscription.as_mut() else {
            // Nothing to push: keep-alives until the server stops.
            shutdown.cancelled().await;
            return None;
        };
        let wake = tokio::select! {
            _ = shutdown.cancelled() => return None,
            wake = wakeups.receiver.recv() => wake?,
        };
        let sse = match wake {
            Wake::Store(event) => store_event(&event),
            Wake::Lagged(missed) => Event::default().event("lagged").data(missed.to_string()),
        };
        Some((Ok(sse), (subscription, shutdown)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One wake-up as an SSE `store` event.
fn store_event(event: &StoreEvent) -> Event {
    match serde_json::to_string(event) {
        Ok(json) => Event::default().event("store").data(json),
        // A wake-up always serializes; if one ever did not, say "check the queue".
        Err(_) => Event::default().event("lagged").data("1"),
    }
}
