//! The clock of a [`MemoryStore`](super::MemoryStore).
//!
//! Store time is the wall-clock instant captured when the store was built,
//! plus the time elapsed since then on tokio's clock, plus an explicit skew.
//! Tying it to [`tokio::time::Instant`] means a test that pauses tokio's clock
//! (`#[tokio::test(start_paused = true)]` and `tokio::time::advance`) drives
//! every lease, timeout and liveness rule of the store without sleeping; the
//! skew ([`StoreClock::advance`]) does the same on any runtime, including a
//! multi-threaded one where tokio's clock cannot be paused.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Wall-clock time driven by tokio's (possibly paused) clock.
#[derive(Debug)]
pub(crate) struct StoreClock {
    base_utc: DateTime<Utc>,
    base_instant: Instant,
    skew_nanos: AtomicU64,
}

impl StoreClock {
    /// A clock reading the current wall-clock time.
    pub(crate) fn new() -> Self {
        Self {
            base_utc: Utc::now(),
            base_instant: Instant::now(),
            skew_nanos: AtomicU64::new(0),
        }
    }

    /// The store's current time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let skew = Duration::from_nanos(self.skew_nanos.load(Ordering::Acquire));
        later(self.base_utc, self.base_instant.elapsed().saturating_add(skew))
    }

    /// Moves the clock forward by `by` (saturating).
    pub(crate) fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // The closure always returns Some, so the update cannot fail.
        let _ = self
            .skew_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |skew| {
                Some(skew.saturating_add(by))
            });
    }
}

fn delta(by: Duration) -> TimeDelta {
    TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX)
}

/// `at + by`, saturating at the largest representable instant.
pub(crate) fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(delta(by)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at - by`, saturating at the smallest representable instant.
pub(crate) fn earlier(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_sub_signed(delta(by)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_clock_drives_store_time() {
        let clock = StoreClock::new();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - t0, TimeDelta::seconds(90));
    }

    #[tokio::test(start_paused = true)]
    async fn skew_adds_to_tokio_time() {
        let clock = StoreClock::new();
        let t0 = clock.now();
        clock.advance(Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.now() - t0, TimeDelta::seconds(6));
    }

    #[test]
    fn shifting_saturates() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(earlier(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(later(now, Duration::from_secs(1)) - now, TimeDelta::seconds(1));
    }
}
