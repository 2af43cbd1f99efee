//! [`MemoryHarness`]: the conformance suite's harness for [`MemoryStore`].

use async_trait::async_trait;
use std::time::Duration;

use super::StoreHarness;
use crate::memory::MemoryStore;
use crate::policy::LeasePolicy;

/// Runs the suite on a fresh [`MemoryStore`] per check.
///
/// How it moves the clock is chosen at construction:
/// [`MemoryHarness::default`] uses [`MemoryStore::advance_clock`], which
/// works on any runtime (multi-threaded included);
/// [`MemoryHarness::tokio_clock`] uses `tokio::time::advance`, which needs a
/// paused clock (`#[tokio::test(start_paused = true)]`) and proves that
/// tokio's clock drives the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHarness {
    tokio_clock: bool,
}

impl MemoryHarness {
    /// A harness that advances tokio's paused clock (current-thread runtimes
    /// started with `start_paused = true` only).
    pub fn tokio_clock() -> Self {
        Self { tokio_clock: true }
    }
}

#[async_trait]
impl StoreHarness for MemoryHarness {
    type Store = MemoryStore;

    async fn store(&self, policy: LeasePolicy) -> MemoryStore {
        MemoryStore::with_policy(policy)
    }

    async fn advance_clock(&self, store: &MemoryStore, by: Duration) {
        if self.tokio_clock {
            tokio::time::advance(by).await;
        } else {
            store.advance_clock(by);
        }
    }
}
