//! [`MemoryOptions`]: how much a [`MemoryStore`](super::MemoryStore) keeps.

/// Settings of a [`MemoryStore`](super::MemoryStore) besides its lease policy.
///
/// ```
/// use aiopslab_core::{LeasePolicy, MemoryOptions, MemoryStore};
///
/// let store = MemoryStore::with_options(
///     LeasePolicy::default(),
///     MemoryOptions::default().with_max_finished_tasks(Some(1_000)),
/// );
/// # let _ = store;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryOptions {
    /// Most finished (terminal: completed, failed, timeout, cancelled) tasks kept. Past it, the tasks that
    /// finished first are dropped with their logs, trajectories and finished webhook deliveries (a delivery still
    /// being retried is kept until it ends): reads of them answer not found, listings, totals and stats no longer
    /// count them. Pending and running tasks are never dropped. `None`: keep everything (memory grows with every
    /// task, ~20 KB per finished simulated episode). Default
    /// [`MemoryOptions::DEFAULT_MAX_FINISHED_TASKS`].
    pub max_finished_tasks: Option<usize>,
}

impl MemoryOptions {
    /// The default bound on finished tasks: about 200 MB of simulated episodes (5 steps, with their logs and
    /// trajectories), and a listing of them stays a few milliseconds.
    pub const DEFAULT_MAX_FINISHED_TASKS: usize = 10_000;

    /// The same options with [`max_finished_tasks`](Self::max_finished_tasks) set (`None`: unbounded).
    pub fn with_max_finished_tasks(mut self, max: Option<usize>) -> Self {
        self.max_finished_tasks = max;
        self
    }
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            max_finished_tasks: Some(Self::DEFAULT_MAX_FINISHED_TASKS),
        }
    }
}
