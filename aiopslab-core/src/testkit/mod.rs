//! The store conformance suite (feature `testkit`).
//!
//! Any [`TaskStore`] proves it keeps the rules of the trait by running these
//! checks. A store crate provides a [`StoreHarness`] (how to make a fresh,
//! empty store and how to move its clock forward) and expands the suite's
//! macro in one of its test files.

use async_trait::async_trait;
use std::time::Duration;

use crate::policy::LeasePolicy;
use crate::store::TaskStore;

/// How the suite gets stores to test.
#[async_trait]
pub trait StoreHarness: Send + Sync + 'static {
    /// The store under test.
    type Store: TaskStore;

    /// A fresh, empty store (no tasks, no workers) enforcing `policy`.
    async fn store(&self, policy: LeasePolicy) -> Self::Store;

    /// Moves `store`'s clock forward by `by`, so lease, timeout and liveness
    /// rules can be tested without waiting. (MemoryStore: tokio's paused
    /// clock; PostgreSQL: shift the stored timestamps back.)
    async fn advance_clock(&self, store: &Self::Store, by: Duration);
}
