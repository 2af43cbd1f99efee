//! The client side of `GET /workers/{id}/events`: what
//! [`HttpStore::subscribe`](super::HttpStore) returns.
//!
//! One reader task per subscription connects once the store has registered
//! a worker (the stream is that worker's), parses the Server-Sent Events
//! and forwards each `store` event into a broadcast channel. The stream is
//! an optimisation over polling, so every failure falls back to it rather
//! than failing the worker:
//!
//! - a dropped or silent connection (no byte for three keep-alive
//!   intervals) is reopened with backoff (1 s doubling to 30 s); while it is
//!   down the worker gets [`StoreEvent::Resync`] every
//!   [`RESYNC_WHILE_DOWN`] (it polls slowly while pushed to, so this keeps its
//!   usual pace), and once more after each reopening, since wake-ups may have
//!   been missed (a `lagged` event does the same);
//! - a server without the route (404) or refusing the token ends the reader,
//!   which closes the channel: the runtime then relies on polling alone;
//! - the reader ends when its subscriber is gone.

use std::time::Duration;

use aiopslab_core::{StoreEvent, RESYNC_WHILE_DOWN};
use reqwest::{Method, StatusCode};
use tokio::sync::{broadcast, watch};

use super::sse::SseParser;
use super::Http;

/// How long a stream may stay silent before it counts as dead: three of
/// the server's 15 s keep-alives.
const SILENCE: Duration = Duration::from_secs(45);
/// Backoff between reconnections.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// Wake-ups a slow runtime may fall behind by.
const BUFFER: usize = 256;

/// Who the events are for: the worker the store registered last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listener {
    pub(super) worker_id: String,
    pub(super) backend_type: String,
}

/// Starts a reader for the worker `registered` names (once it names one);
/// `None` outside a tokio runtime.
pub(super) fn subscribe(
    http: Http,
    registered: watch::Receiver<Option<Listener>>,
) -> Option<broadcast::Receiver<StoreEvent>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (sender, receiver) = broadcast::channel(BUFFER);
    runtime.spawn(read(http, registered, sender));
    Some(receiver)
}

/// What one connection ended with.
enum End {
    /// Reconnect after a pause.
    Retry,
    /// Stop for good (no route, refused, nobody listening).
    Stop,
}

async fn read(http: Http, mut registered: watch::Receiver<Option<Listener>>, sender: broadcast::Sender<StoreEvent>) {
    let mut retry = FIRST_RETRY;
    let mut first = true;
    loop {
        let listener = match registered.wait_for(Option::is_some).await {
            Ok(listener) => listener.clone(),
            // The store is gone.
            Err(_) => return,
        };
        let Some(listener) = listener else { return };
        if !first {
            // Wake-ups may have been missed while disconnected: check the queue.
            let _ = sender.send(StoreEvent::Resync);
        }
        first = false;
        match connection(&http, &listener, &sender, &mut retry).await {
            End::Stop => return,
            End::Retry if sender.receiver_count() == 0 => return,
            End::Retry => {
                resync_while_down(&sender, retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// Waits `pause` before the next connection, telling the worker to check the queue every
/// [`RESYNC_WHILE_DOWN`] meanwhile (nothing is pushed to it while the stream is down).
async fn resync_while_down(sender: &broadcast::Sender<StoreEvent>, pause: Duration) {
    let until = tokio::time::Instant::now() + pause;
    loop {
        let _ = sender.send(StoreEvent::Resync);
        let next = tokio::time::Instant::now() + RESYNC_WHILE_DOWN;
        if next >= until {
            tokio::time::sleep_until(until).await;
            return;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// One connection: forwards its events until it ends.
async fn connection(
    http: &Http,
    listener: &Listener,
    sender: &broadcast::Sender<StoreEvent>,
    retry: &mut Duration,
) -> End {
    let Ok(request) = http.stream_request(Method::GET, &["workers", &listener.worker_id, "events"]) else {
        return End::Stop;
    };
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "cannot open the store event stream; polling meanwhile");
            return End::Retry;
        }
    };
    match response.status() {
        status if status.is_success() => {}
        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            tracing::info!(status = %response.status(), "the server pushes no store events to this worker; polling");
            return End::Stop;
        }
        status => {
            tracing::debug!(%status, "store event stream refused; retrying");
            return End::Retry;
        }
    }
    tracing::debug!(worker_id = %listener.worker_id, "listening for store events");
    *retry = FIRST_RETRY;
    let mut parser = Parser::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return End::Retry,
        };
        for block in parser.push(&chunk) {
            let event = match block {
                Block::Store(event) => event,
                Block::Lagged => StoreEvent::Resync,
            };
            if sender.send(event).is_err() {
                return End::Stop;
            }
        }
        if sender.receiver_count() == 0 {
            return End::Stop;
        }
    }
}

/// One parsed SSE event.
#[derive(Debug, PartialEq)]
enum Block {
    Store(StoreEvent),
    Lagged,
}

/// Reads the worker's stream: `store` events and `lagged` notices, the rest
/// (keep-alives, unknown events) skipped.
#[derive(Default)]
struct Parser {
    sse: SseParser,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) -> Vec<Block> {
        self.sse
            .push(bytes)
            .into_iter()
            .filter_map(|event| match event.event.as_str() {
                "store" => Some(match serde_json::from_str::<StoreEvent>(&event.data) {
                    Ok(event) => Block::Store(event),
                    // An event this client does not know: check the queue.
                    Err(_) => Block::Lagged,
                }),
                "lagged" => Some(Block::Lagged),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks_and_skips_keep_alives() {
        let mut parser = Parser::default();
        assert!(parser.push(b":\n\nevent: store\ndata: {\"event\":\"task_av").is_empty());
        // "é" split across two chunks.
        assert!(parser.push(b"ailable\",\"backend_type\":\"caf\xc3").is_empty());
        assert_eq!(
            parser.push(b"\xa9\"}\n\n"),
            vec![Block::Store(StoreEvent::TaskAvailable {
                backend_type: "caf\u{e9}".into()
            })]
        );
        assert!(parser.push(b"event: store\ndata: {\"event\":\"task_av").is_empty());
        let task_id = uuid::Uuid::nil();
        let blocks = parser.push(
            format!(
                "ailable\",\"backend_type\":\"default\"}}\n\nevent: lagged\ndata: 3\n\nevent: store\ndata: \
                 {{\"event\":\"cancel_requested\",\"task_id\":\"{task_id}\"}}\n\nevent: store\ndata: {{\"event\":\"new\"}}\n\n"
            )
            .as_bytes(),
        );
        assert_eq!(
            blocks,
            vec![
                Block::Store(StoreEvent::TaskAvailable {
                    backend_type: "default".into()
                }),
                Block::Lagged,
                Block::Store(StoreEvent::CancelRequested { task_id }),
                Block::Lagged,
            ]
        );
    }
}
