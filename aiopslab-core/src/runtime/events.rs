//! Reacting to store events, when the store pushes them.
//!
//! `TaskAvailable` for our backend type wakes the claim loop at once instead
//! of at the next poll; `CancelRequested` for a task running here stops it
//! at once instead of at the next heartbeat. Events are an optimisation:
//! a lagging or closed subscription loses nothing that polling and
//! heartbeats would not catch. `Resync` (the store's channel dropped) and a
//! lag make the worker check the queue; a closed channel puts the worker
//! back on its usual poll interval.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::slots::StopReason;
use super::Shared;
use crate::events::StoreEvent;

/// Handles events until `stop` fires or the store closes the channel; while it handles them the claim loop
/// polls at `pushed_poll_interval` (see `WorkerConfig`).
pub(crate) async fn listen(shared: Arc<Shared>, mut events: broadcast::Receiver<StoreEvent>, stop: CancellationToken) {
    shared.pushed.store(true, std::sync::atomic::Ordering::SeqCst);
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(StoreEvent::TaskAvailable { backend_type }) if backend_type == shared.config.backend_type => {
                shared.wake.notify_one();
            }
            Ok(StoreEvent::TaskAvailable { .. }) => {}
            Ok(StoreEvent::CancelRequested { task_id }) => {
                if shared.slots.stop(task_id, StopReason::ClientCancel) {
                    tracing::info!(%task_id, "cancel requested by a client; stopping the run");
                }
            }
            Ok(StoreEvent::Resync) => {
                tracing::debug!("the store may have missed wake-ups; checking the queue");
                shared.wake.notify_one();
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "store events lagged; checking the queue");
                shared.wake.notify_one();
            }
            Err(RecvError::Closed) => {
                tracing::debug!("store event channel closed; relying on polling");
                shared.pushed.store(false, std::sync::atomic::Ordering::SeqCst);
                shared.wake.notify_one();
                return;
            }
        }
    }
}
