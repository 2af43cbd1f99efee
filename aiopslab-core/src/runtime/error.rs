//! [`RuntimeError`]: why a worker stopped other than by a requested shutdown.

use crate::error::{BackendError, StoreError, ValidationError};

/// Why [`WorkerRuntime::run`](super::WorkerRuntime::run) returned an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is unusable.
    #[error("invalid worker configuration: {0}")]
    Config(#[from] ValidationError),
    /// The backend could not be made ready; its message says what to fix.
    #[error("backend {backend:?} failed to prepare: {source}")]
    Prepare {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        source: BackendError,
    },
    /// The store refused the registration for a reason retrying cannot fix.
    #[error("could not register worker {worker_id:?}: {source}")]
    Register {
        /// The worker id.
        worker_id: String,
        /// The store's answer.
        source: StoreError,
    },
    /// Another instance registered under this worker id (a second process
    /// configured with the same id, or this one was presumed restarted): this
    /// one stopped its runs without reporting (the store handed their tasks
    /// back) and did not deregister. Give each process its own id.
    #[error("worker stopped: {0}")]
    Superseded(StoreError),
    /// The backend failed to release its resources at shutdown (the worker
    /// had already stopped and deregistered).
    #[error("backend {backend:?} failed to shut down: {source}")]
    Shutdown {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        source: BackendError,
    },
    /// The worker's task panicked (a bug: the runtime reports errors, it does not panic); only
    /// [`WorkerPool::join`](super::WorkerPool::join) reports this.
    #[error("worker panicked: {0}")]
    Panicked(String),
}
