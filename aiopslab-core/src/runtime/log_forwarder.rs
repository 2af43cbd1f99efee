//! Moves a run's log entries from its [`LogSink`](crate::LogSink) into the
//! store, in batches, holding them while the store cannot take them.
//!
//! One store call per entry would swamp the store with a chatty run, and
//! holding entries back too long would make the live log lag; so entries are
//! sent when a batch is full or when the oldest waiting entry has waited the
//! flush interval. Batches go out one at a time, in order, so the store sees
//! every entry once and in the order the run wrote it.
//!
//! **Outages.** A batch that fails with a transient error stays at the head
//! of the queue and is tried again, with backoff, for as long as it takes:
//! the run goes on writing and the forwarder goes on taking its entries,
//! holding them in memory up to a bound ([`BufferLimits`]: entries and
//! approximate bytes per run). Beyond the bound the **oldest** entries are
//! dropped; when delivery resumes the store first gets one `warning` entry
//! saying how many were dropped at that point of the log, and the worker
//! logs one warning with the same count. So an outage loses nothing within
//! the bound and, beyond it, exactly the oldest entries.
//!
//! **The end of the run.** The runtime asks for a final flush before it
//! reports the outcome, so the whole log lands before the task turns
//! terminal. The flush waits out a store outage like the report does, but
//! at most `flush_timeout` (then the entries still held are dropped with a
//! warning and the outcome is reported), and it gives up at once when
//! shutdown's report grace runs out.
//!
//! **The tail rides with the outcome.** When the store takes a run's end in
//! one write ([`FinalReports`](crate::FinalReports)), the entries still held
//! at the end (at most one batch, nothing in flight or failing) are handed
//! back instead of sent, and go with the outcome: one store call fewer per
//! run. If that write is refused, the runtime sends them on their own first.
//!
//! **Refusals.** A batch the store refuses for good (invalid input) is
//! dropped with a warning and the next one is sent. A lost lease stops the
//! run, since nothing it writes can be stored any more: everything held or
//! still to come is dropped, with one warning.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::slots::{RunHandle, StopReason};
use crate::error::StoreError;
use crate::log::{LogLevel, NewLogEntry};
use crate::retry::{Backoff, RetryPolicy};
use crate::store::WorkerQueue;

/// How much of a run's log a worker holds while the store cannot take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufferLimits {
    /// Most entries held.
    pub max_entries: usize,
    /// Most bytes held, counted as [`entry_size`] does. The newest entry is
    /// always kept, even when it alone is larger.
    pub max_bytes: usize,
}

/// What the forwarder needs besides the entries.
pub(crate) struct ForwarderSettings {
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait of an entry for its batch.
    pub flush_interval: Duration,
    /// Backoff between tries of a batch that failed transiently (its limit
    /// on tries is ignored: a batch is tried until the store takes it).
    pub retry: RetryPolicy,
    /// What is held during an outage.
    pub limits: BufferLimits,
    /// Once the final flush was asked for, how long held entries may wait
    /// for the store before they are dropped.
    pub flush_timeout: Duration,
    /// Hand the entries still held at the end back (see the module docs)
    /// instead of sending them.
    pub hand_back_tail: bool,
}

/// How the forwarder ended: what it did, and the entries it handed back.
#[derive(Debug, Default)]
pub(crate) struct ForwarderEnd {
    /// What the forwarder did.
    pub stats: ForwarderStats,
    /// Entries held at the end, in order, for the caller to send with the
    /// outcome (only with `hand_back_tail`).
    pub tail: Vec<NewLogEntry>,
}

/// What the forwarder did, for the run's final log line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForwarderStats {
    /// Entries of the run the store accepted (the gap notes not counted).
    pub stored: usize,
    /// Entries dropped, for any reason (overflow included).
    pub dropped: usize,
    /// Of those, the oldest entries dropped because the buffer was full.
    pub overflowed: usize,
}

/// The approximate size of an entry in memory and on the wire: its text,
/// plus its action and details. What [`BufferLimits::max_bytes`] counts.
pub(crate) fn entry_size(entry: &NewLogEntry) -> usize {
    let action = entry.context.action.as_ref().map_or(0, String::len);
    let details = entry
        .context
        .details
        .as_ref()
        .map_or(0, |details| serde_json::to_string(details).map_or(0, |text| text.len()));
    entry.message.len() + action + details
}

/// An entry waiting to be stored.
struct Held {
    entry: NewLogEntry,
    size: usize,
    arrived: Instant,
}

type AppendCall = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A batch on its way to the store.
struct InFlight {
    call: AppendCall,
    /// Entries of the queue's head it carries.
    entries: usize,
    /// Whether it starts with the note of a gap.
    with_gap_note: bool,
}

/// The forwarder's state between events.
struct Forwarder {
    store: Arc<dyn WorkerQueue>,
    handle: RunHandle,
    settings: ForwarderSettings,
    queue: VecDeque<Held>,
    queued_bytes: usize,
    /// Oldest entries dropped for room since the last delivered gap note.
    gap: usize,
    in_flight: Option<InFlight>,
    /// When the head batch may be tried again after a transient failure.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Failures in a row (the first one of a streak is logged as a warning).
    failures: u32,
    /// The lease is gone: nothing more is sent.
    lease_lost: bool,
    stats: ForwarderStats,
}

/// Forwards entries until the sink is closed or `finish` fires, then sends
/// what is held (see the module docs) and returns. `abandon` (shutdown's
/// report grace ran out) drops whatever is still held at once.
pub(crate) async fn forward_logs(
    store: Arc<dyn WorkerQueue>,
    handle: RunHandle,
    mut receiver: mpsc::Receiver<NewLogEntry>,
    settings: ForwarderSettings,
    finish: CancellationToken,
    abandon: CancellationToken,
) -> ForwarderEnd {
    let mut forwarder = Forwarder {
        store,
        handle,
        backoff: settings.retry.unbounded().backoff(),
        settings,
        queue: VecDeque::new(),
        queued_bytes: 0,
        gap: 0,
        in_flight: None,
        retry_at: None,
        failures: 0,
        lease_lost: false,
        stats: ForwarderStats::default(),
    };
    let mut receiving = true;
    // Set once the final flush was asked for: held entries wait until then.
    let mut flush_deadline: Option<Instant> = None;
    loop {
        if !forwarder.lease_lost && forwarder.handle.reason() == Some(StopReason::LeaseLost) {
            forwarder.lose_lease(None);
        }
        let closing = flush_deadline.is_some() || !receiving;
        if closing && forwarder.settings.hand_back_tail && forwarder.can_hand_back() {
            return forwarder.hand_back();
        }
        forwarder.start_send_if_due(closing);
        if !receiving && forwarder.is_idle() {
            return forwarder.end();
        }
        let wake_at = forwarder.next_wake(closing).into_iter().chain(flush_deadline).min();
        // While a batch is in flight the held entries cannot be trimmed
        // (the head is on its way), so a full buffer stops taking entries
        // until the call returns: the run waits instead of growing it.
        let take_entries = receiving && !(forwarder.in_flight.is_some() && forwarder.is_full());
        tokio::select! {
            biased;
            _ = abandon.cancelled() => {
                forwarder.give_up("shutting down: gave up storing the rest of the log");
                return forwarder.end();
            }
            result = async { (&mut forwarder.in_flight.as_mut().expect("guarded").call).await },
                if forwarder.in_flight.is_some() => forwarder.landed(result),
            entry = receiver.recv(), if take_entries => match entry {
                Some(entry) => forwarder.push(entry),
                None => receiving = false,
            },
            _ = finish.cancelled(), if flush_deadline.is_none() => {
                // The run is over: take what it wrote, then nothing more.
                receiver.close();
                while let Ok(entry) = receiver.try_recv() {
                    forwarder.push(entry);
                }
                receiving = false;
                flush_deadline = Some(Instant::now() + forwarder.settings.flush_timeout);
            }
            _ = sleep_until_some(wake_at) => {
                if flush_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    let timeout = forwarder.settings.flush_timeout;
                    forwarder.give_up(&format!(
                        "the store could not take the rest of the log within {} s of the run's end; \
                         dropped it to report the outcome",
                        timeout.as_secs_f64()
                    ));
                    return forwarder.end();
                }
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Forwarder {
    /// The end, with nothing handed back.
    fn end(self) -> ForwarderEnd {
        ForwarderEnd {
            stats: self.stats,
            tail: Vec::new(),
        }
    }

    /// True when what is held can go with the outcome: one batch at most,
    /// nothing on its way or waiting out a failure, no gap to note, the lease held.
    fn can_hand_back(&self) -> bool {
        self.in_flight.is_none()
            && self.retry_at.is_none()
            && self.gap == 0
            && !self.lease_lost
            && self.queue.len() <= self.settings.batch_size.max(1)
    }

    /// Ends, handing the held entries back.
    fn hand_back(mut self) -> ForwarderEnd {
        let tail = self.queue.drain(..).map(|held| held.entry).collect();
        ForwarderEnd {
            stats: self.stats,
            tail,
        }
    }

    fn is_full(&self) -> bool {
        let limits = self.settings.limits;
        self.queue.len() >= limits.max_entries || self.queued_bytes >= limits.max_bytes
    }

    /// Nothing held and nothing on its way.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_none() && (self.gap == 0 || self.lease_lost)
    }

    /// Takes one entry from the run.
    fn push(&mut self, entry: NewLogEntry) {
        if self.lease_lost {
            self.stats.dropped += 1;
            return;
        }
        let size = entry_size(&entry);
        self.queued_bytes += size;
        self.queue.push_back(Held {
            entry,
            size,
            arrived: Instant::now(),
        });
        if self.in_flight.is_none() {
            self.trim();
        }
    }

    /// Drops the oldest held entries beyond the bound.
    fn trim(&mut self) {
        let limits = self.settings.limits;
        while self.queue.len() > limits.max_entries || (self.queued_bytes > limits.max_bytes && self.queue.len() > 1) {
            let Some(oldest) = self.queue.pop_front() else { break };
            self.queued_bytes -= oldest.size;
            self.gap += 1;
            self.stats.dropped += 1;
            self.stats.overflowed += 1;
        }
    }

    /// When something is due without any event: the head batch's retry, or
    /// its flush interval running out.
    fn next_wake(&self, closing: bool) -> Option<Instant> {
        if self.in_flight.is_some() || self.lease_lost {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        match self.queue.front() {
            Some(_) if closing || self.queue.len() >= self.settings.batch_size => Some(Instant::now()),
            Some(oldest) => Some(oldest.arrived + self.settings.flush_interval),
            None => None,
        }
    }

    /// Sends the head batch when it is due and nothing else is on its way.
    fn start_send_if_due(&mut self, closing: bool) {
        if self.in_flight.is_some() || self.lease_lost || (self.queue.is_empty() && self.gap == 0) {
            return;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let due = self.retry_at.is_some()
            || closing
            || self.gap > 0
            || self.queue.len() >= self.settings.batch_size
            || self
                .queue
                .front()
                .is_some_and(|oldest| now >= oldest.arrived + self.settings.flush_interval);
        if !due {
            return;
        }
        let with_gap_note = self.gap > 0;
        let room = self.settings.batch_size.max(1) - usize::from(with_gap_note);
        let count = self.queue.len().min(room);
        let mut batch = Vec::with_capacity(count + 1);
        if with_gap_note {
            batch.push(gap_note(self.gap, self.settings.limits));
        }
        batch.extend(self.queue.iter().take(count).map(|held| held.entry.clone()));
        let store = Arc::clone(&self.store);
        let lease = self.handle.lease;
        self.in_flight = Some(InFlight {
            call: Box::pin(async move { store.append_logs(lease, batch).await }),
            entries: count,
            with_gap_note,
        });
    }

    /// Handles the answer to the batch in flight.
    fn landed(&mut self, result: Result<(), StoreError>) {
        let Some(sent) = self.in_flight.take() else { return };
        match result {
            Ok(()) => {
                self.pop_sent(sent.entries);
                self.stats.stored += sent.entries;
                if self.failures > 0 {
                    tracing::info!(
                        failed_tries = self.failures,
                        "the store takes log entries again; sending the ones held"
                    );
                }
                if sent.with_gap_note {
                    self.report_gap();
                }
                self.settle();
            }
            Err(error @ (StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                self.lose_lease(Some(error));
            }
            Err(error) if error.is_transient() => {
                self.failures += 1;
                let delay = self.backoff.next_delay();
                self.retry_at = Some(Instant::now() + delay);
                let limits = self.settings.limits;
                if self.failures == 1 {
                    tracing::warn!(
                        %error,
                        held = self.queue.len(),
                        max_entries = limits.max_entries,
                        max_bytes = limits.max_bytes,
                        "could not store log entries; holding them and retrying until the store takes them \
                         (beyond the bound the oldest are dropped)"
                    );
                } else {
                    tracing::debug!(%error, tries = self.failures, retry_in_ms = delay.as_millis() as u64, "log entries still not stored");
                }
                // Now that the head is back in the queue, the bound applies to it too.
                self.trim();
            }
            Err(error) => {
                tracing::warn!(%error, entries = sent.entries, "the store refused log entries; dropped them");
                self.pop_sent(sent.entries);
                self.stats.dropped += sent.entries;
                if sent.with_gap_note {
                    self.report_gap();
                }
                self.settle();
            }
        }
    }

    /// Forgets the head entries a call carried.
    fn pop_sent(&mut self, entries: usize) {
        for held in self.queue.drain(..entries) {
            self.queued_bytes -= held.size;
        }
    }

    /// The batch in flight was answered for good: the next one starts afresh.
    fn settle(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.backoff = self.settings.retry.unbounded().backoff();
        self.trim();
    }

    /// The one warning for a gap, once its note is in the store.
    fn report_gap(&mut self) {
        let limits = self.settings.limits;
        tracing::warn!(
            dropped = self.gap,
            max_entries = limits.max_entries,
            max_bytes = limits.max_bytes,
            "the log buffer overflowed while the store could not take entries: dropped the {} oldest",
            self.gap
        );
        self.gap = 0;
    }

    /// The store no longer holds our lease: drop everything, stop the run.
    fn lose_lease(&mut self, error: Option<StoreError>) {
        // The batch in flight is the queue's head: counted with it.
        let held = self.queue.len();
        self.in_flight = None;
        self.stats.dropped += held;
        self.queue.clear();
        self.queued_bytes = 0;
        self.lease_lost = true;
        match error {
            Some(error) => tracing::warn!(
                %error,
                dropped = held,
                "log write refused: the lease is gone; stopping the run and dropping its held log entries"
            ),
            None if held > 0 => {
                tracing::warn!(dropped = held, "the lease is gone; dropping the run's held log entries")
            }
            None => {}
        }
        self.handle.stop(StopReason::LeaseLost);
    }

    /// Drops everything still held, with one warning.
    fn give_up(&mut self, why: &str) {
        let held = self.queue.len();
        self.in_flight = None;
        self.stats.dropped += held;
        self.queue.clear();
        self.queued_bytes = 0;
        if held > 0 || self.gap > 0 {
            tracing::warn!(dropped = held, earlier_overflow = self.gap, "{why}");
        }
        self.gap = 0;
    }
}

/// The entry that marks a gap in the stored log.
fn gap_note(dropped: usize, limits: BufferLimits) -> NewLogEntry {
    let mut note = NewLogEntry::new(
        LogLevel::Warning,
        format!(
            "{dropped} log entries were dropped here: the store could not take them for a while and the worker \
             holds at most {} entries ({} bytes) of a run's log",
            limits.max_entries, limits.max_bytes
        ),
    );
    note.context.details = Some(serde_json::json!({ "dropped_entries": dropped }));
    note
}
