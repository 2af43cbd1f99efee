//! [`WorkerPool`]: several workers in one process, started together and stopped together.

use std::collections::HashMap;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{RuntimeError, WorkerRuntime};

/// Workers running in this process, e.g. next to the HTTP API (`aiopslab serve --workers N`) or in a test.
///
/// Each [`WorkerRuntime`] runs on its own Tokio task under a child of the pool's shutdown token, so cancelling the
/// pool stops them all gracefully (each finishes or stops its runs within its `shutdown_grace`, reports, and
/// deregisters). [`WorkerPool::join`] waits for every one of them.
///
/// ```no_run
/// # async fn demo(runtimes: Vec<aiopslab_core::WorkerRuntime>) {
/// use aiopslab_core::runtime::WorkerPool;
/// use tokio_util::sync::CancellationToken;
///
/// let shutdown = CancellationToken::new();
/// let mut pool = WorkerPool::new(shutdown.clone());
/// for runtime in runtimes {
///     pool.spawn(runtime);
/// }
/// // ... later:
/// shutdown.cancel();
/// for (worker_id, error) in pool.join().await {
///     eprintln!("{worker_id}: {error}");
/// }
/// # }
/// ```
pub struct WorkerPool {
    shutdown: CancellationToken,
    workers: JoinSet<Result<(), RuntimeError>>,
    /// Each task's worker id, so a panic is reported under the worker that panicked.
    ids: HashMap<Id, String>,
}

impl WorkerPool {
    /// An empty pool whose workers stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            workers: JoinSet::new(),
            ids: HashMap::new(),
        }
    }

    /// Starts `runtime` on a task of its own. Must be called inside a Tokio runtime.
    pub fn spawn(&mut self, runtime: WorkerRuntime) {
        let worker_id = runtime.config().worker_id.clone();
        let token = self.shutdown.child_token();
        let task = self.workers.spawn(runtime.run(token));
        self.ids.insert(task.id(), worker_id);
    }

    /// How many workers were started and have not been joined.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the pool holds no worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Waits until every worker has stopped (cancel the shutdown token first, or this waits for as long as they
    /// run), and returns the ones that stopped with an error, each logged too. A worker that panicked is reported as
    /// [`RuntimeError::Panicked`].
    pub async fn join(mut self) -> Vec<(String, RuntimeError)> {
        let mut failed = Vec::new();
        while let Some(joined) = self.workers.join_next_with_id().await {
            let (task, result) = match joined {
                Ok((task, result)) => (task, result),
                Err(error) => (error.id(), Err(RuntimeError::Panicked(error.to_string()))),
            };
            let worker_id = self.ids.remove(&task).unwrap_or_default();
            if let Err(error) = result {
                tracing::error!(worker_id = %worker_id, "worker stopped with an error: {error}");
                failed.push((worker_id, error));
            }
        }
        failed
    }
}
