//! [`Experiments`]: a store capability — experiments as a stored resource, their concurrency limits and counts.
//!
//! Why a capability: the fair-share claim itself is part of every store's claim (see
//! [`WorkerQueue::claim`](super::WorkerQueue::claim)), but keeping limits needs state of its own. A store that
//! keeps them offers this trait through [`TaskApi::experiments`](super::TaskApi::experiments); one that does not
//! (the default) treats every experiment as unlimited, and the HTTP server answers `PUT /experiments/{name}` with
//! 501 `not_implemented`.

use async_trait::async_trait;

use super::StoreResult;
use crate::experiment::{Experiment, ExperimentSettings};

/// Experiments as a resource: set an experiment's limit, read one, list them. Names are checked against
/// [`EXPERIMENT_NAME_PATTERN`](crate::experiment::EXPERIMENT_NAME_PATTERN) ([`StoreError::Invalid`](crate::StoreError::Invalid)
/// naming `name` otherwise).
///
/// Rules: a limit set here binds every claim that starts after the call returned — a claim never starts a task
/// of an experiment that already runs `max_running` of its tasks (counted across backend types), however many
/// claimers race, and lowering a limit below what runs stops new starts until enough of them end (running tasks
/// are never stopped). An experiment no one configured is unlimited. Checked by the fair-share conformance suite
/// (`fair_share_*`) against every store that offers it.
#[async_trait]
pub trait Experiments: Send + Sync {
    /// Creates or replaces the settings of experiment `name`, which need not have any task yet; returns it with
    /// its counts.
    async fn set_experiment(&self, name: &str, settings: ExperimentSettings) -> StoreResult<Experiment>;

    /// One experiment with its counts: one that was configured, or that has pending or running tasks;
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) (entity `"experiment"`) otherwise.
    async fn get_experiment(&self, name: &str) -> StoreResult<Experiment>;

    /// Every experiment that was configured or has pending or running tasks, by name.
    async fn list_experiments(&self) -> StoreResult<Vec<Experiment>>;
}
