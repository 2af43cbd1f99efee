//! Wake-ups over LISTEN/NOTIFY.
//!
//! `aiopslab_task_available` (payload: backend type) is notified when a task becomes claimable: by the store
//! right after a create commits, and by a trigger when a task is requeued; `aiopslab_cancel` (payload: task id) is
//! notified by a trigger when a client asks to cancel a running task. A background task holds one dedicated connection that LISTENs on both channels and
//! forwards each notification to a broadcast channel as a [`StoreEvent`].
//!
//! When that connection drops, the task logs it and reconnects with exponential backoff; notifications sent in
//! the gap are lost, so it sends [`StoreEvent::Resync`] when the connection drops, after each failed attempt
//! (at most 5 s apart) and once it listens again: workers, which poll slowly while they are pushed to, check the
//! queue then.

use std::time::Duration;

use aiopslab_core::StoreEvent;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::sql::{CANCEL_CHANNEL, TASK_AVAILABLE_CHANNEL};

/// Events buffered per subscriber before it lags (a lagging subscriber just polls).
const CAPACITY: usize = 1024;
/// First and longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// The running listener; stopping is dropping.
pub(crate) struct Listener {
    sender: broadcast::Sender<StoreEvent>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening on a connection of its own. `None` outside a tokio runtime.
    pub(crate) fn start(options: &PgConnectOptions) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let options = options.clone();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options);
        let task = runtime.spawn(run(listen_pool, sender.clone()));
        Some(Self { sender, task })
    }

    /// A new receiver of events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.sender.subscribe()
    }
}

/// Connects, listens and forwards until aborted, reconnecting with backoff.
async fn run(pool: PgPool, sender: broadcast::Sender<StoreEvent>) {
    let mut backoff = BACKOFF.0;
    let mut first = true;
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                tracing::info!("listening for task and cancel notifications");
                if !first {
                    // Notifications of the gap are lost: have workers check the queue.
                    let _ = sender.send(StoreEvent::Resync);
                }
                first = false;
                backoff = BACKOFF.0;
                let error = forward(&mut listener, &sender).await;
                let _ = sender.send(StoreEvent::Resync);
                tracing::warn!(%error, "notification listener failed; reconnecting (workers poll meanwhile)");
            }
            Err(error) => {
                let _ = sender.send(StoreEvent::Resync);
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "notification listener cannot connect; workers poll meanwhile");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([TASK_AVAILABLE_CHANNEL, CANCEL_CHANNEL]).await?;
    Ok(listener)
}

/// Forwards notifications until the listener fails for good, and returns that error.
async fn forward(listener: &mut PgListener, sender: &broadcast::Sender<StoreEvent>) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if let Some(event) = to_event(&notification) {
                    // No receiver is fine: nobody is waiting right now.
                    let _ = sender.send(event);
                }
            }
            // The connection dropped and sqlx reconnected (and re-ran LISTEN) before returning: notifications of the
            // gap are lost.
            Ok(None) => {
                tracing::warn!("notification listener connection was lost and re-established");
                let _ = sender.send(StoreEvent::Resync);
            }
            Err(error) => return error,
        }
    }
}

fn to_event(notification: &PgNotification) -> Option<StoreEvent> {
    match notification.channel() {
        TASK_AVAILABLE_CHANNEL => Some(StoreEvent::TaskAvailable {
            backend_type: notification.payload().to_string(),
        }),
        CANCEL_CHANNEL => match notification.payload().parse() {
            Ok(task_id) => Some(StoreEvent::CancelRequested { task_id }),
            Err(_) => {
                tracing::warn!(
                    payload = notification.payload(),
                    "ignoring a cancel notification without a task id"
                );
                None
            }
        },
        _ => None,
    }
}
