//! Moves a run's log entries from its [`LogSink`](crate::LogSink) into the
//! store, in batches.
//!
//! One store call per entry would swamp the store with a chatty run, and
//! holding entries back too long would make the live log lag; so entries are
//! sent when a batch is full or when the oldest waiting entry has waited the
//! flush interval. Transient store errors are retried; a batch that still
//! cannot be stored is dropped with a warning (the run goes on: its result
//! matters more than its log). A lost lease stops the run, since nothing it
//! writes can be stored any more. When the run ends the runtime asks for a
//! final flush of whatever is still buffered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::slots::{RunHandle, StopReason};
use crate::error::StoreError;
use crate::log::NewLogEntry;
use crate::retry::{retry_transient, RetryPolicy};
use crate::store::TaskStore;

/// What the forwarder needs besides the entries.
pub(crate) struct ForwarderSettings {
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait of an entry for its batch.
    pub flush_interval: Duration,
    /// Backoff for transient errors.
    pub retry: RetryPolicy,
}

/// What the forwarder did, for the run's final log line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForwarderStats {
    /// Entries the store accepted.
    pub stored: usize,
    /// Entries dropped (store unavailable past the retries, or lease lost).
    pub dropped: usize,
}

/// Forwards entries until the sink is closed or `finish` fires (then it
/// sends what is buffered and returns).
pub(crate) async fn forward_logs(
    store: Arc<dyn TaskStore>,
    handle: RunHandle,
    mut receiver: mpsc::Receiver<NewLogEntry>,
    settings: ForwarderSettings,
    finish: CancellationToken,
) -> ForwarderStats {
    let mut stats = ForwarderStats::default();
    let mut batch: Vec<NewLogEntry> = Vec::with_capacity(settings.batch_size);
    let mut lease_lost = false;
    loop {
        // Wait for the first entry of a batch.
        let mut closing = false;
        tokio::select! {
            biased;
            entry = receiver.recv() => match entry {
                Some(entry) => batch.push(entry),
                None => closing = true,
            },
            _ = finish.cancelled() => closing = true,
        }
        // Fill the batch until it is full or has waited long enough.
        let flush_at = Instant::now() + settings.flush_interval;
        while !closing && batch.len() < settings.batch_size {
            tokio::select! {
                biased;
                entry = receiver.recv() => match entry {
                    Some(entry) => batch.push(entry),
                    None => closing = true,
                },
                _ = finish.cancelled() => closing = true,
                _ = tokio::time::sleep_until(flush_at) => break,
            }
        }
        if closing {
            while let Ok(entry) = receiver.try_recv() {
                batch.push(entry);
            }
        }
        for chunk in batch.chunks(settings.batch_size) {
            if lease_lost {
                stats.dropped += chunk.len();
                continue;
            }
            let sent = retry_transient(&settings.retry, "append_logs", || {
                store.append_logs(handle.lease, chunk.to_vec())
            })
            .await;
            match sent {
                Ok(()) => stats.stored += chunk.len(),
                Err(error @ (StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                    tracing::warn!(%error, "log write refused: the lease is gone; stopping the run");
                    handle.stop(StopReason::LeaseLost);
                    lease_lost = true;
                    stats.dropped += chunk.len();
                }
                Err(error) => {
                    tracing::warn!(%error, entries = chunk.len(), "could not store log entries; dropped them");
                    stats.dropped += chunk.len();
                }
            }
        }
        batch.clear();
        if closing {
            return stats;
        }
    }
}
