//! [`FleetView`] and [`Housekeeping`]: the operator's side of the store.

use async_trait::async_trait;

use super::StoreResult;
use crate::query::{StoreStats, SweepReport, WorkerFilter, WorkerPage};
use crate::worker::Worker;

/// What an operator reads: the workers and the counts behind `/stats` and
/// `/metrics`. Checked by the fleet conformance suite (`testkit`,
/// `fleet_conformance_suite!`).
#[async_trait]
pub trait FleetView: Send + Sync + 'static {
    /// Reads one worker; [`StoreError::NotFound`](crate::StoreError::NotFound) when unknown.
    async fn get_worker(&self, worker_id: &str) -> StoreResult<Worker>;

    /// Lists workers matching `filter`, by id.
    async fn list_workers(&self, filter: &WorkerFilter) -> StoreResult<WorkerPage>;

    /// Counts for `/stats` and `/metrics`.
    async fn stats(&self) -> StoreResult<StoreStats>;
}

/// The periodic sweep a server runs ([`run_sweeper`](crate::run_sweeper));
/// several replicas may run it at once. Checked with the fleet conformance
/// suite.
#[async_trait]
pub trait Housekeeping: Send + Sync + 'static {
    /// One pass of housekeeping: marks overdue running tasks `timeout`,
    /// requeues or fails tasks whose lease expired, marks silent workers
    /// offline. Safe to run concurrently from several processes.
    async fn sweep(&self) -> StoreResult<SweepReport>;
}
