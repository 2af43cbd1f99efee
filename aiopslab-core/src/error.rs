//! Errors shared by every store, scheduler and backend.
//!
//! Stores classify their failures so callers can decide what to do without
//! knowing the backend: a [`StoreError::Unavailable`] is worth retrying, a
//! [`StoreError::LeaseLost`] means the caller must stop writing for that task.

use crate::task::{TaskId, TaskStatus};

/// A request field that failed validation, naming the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as it is spelled on the wire (`max_steps`).
    pub field: String,
    /// What was wrong, including the bound (`must be between 1 and 1000, got 0`).
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field` with a human-readable `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a [`TaskStore`](crate::TaskStore) call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such task or worker.
    #[error("{entity} {id} not found")]
    NotFound {
        /// `"task"`, `"worker"` or `"webhook"`.
        entity: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The task is in a terminal status, so the requested transition is refused.
    #[error("task {task_id} is already {status}")]
    AlreadyTerminal {
        /// The task.
        task_id: TaskId,
        /// Its terminal status.
        status: TaskStatus,
    },
    /// A live worker already holds this id.
    #[error("worker {0} is already registered and alive")]
    WorkerAlive(String),
    /// Another instance of this worker id registered since this one did
    /// (see [`WorkerRegistration::instance_id`](crate::WorkerRegistration::instance_id)):
    /// this instance must stop; the tasks it held were handed back.
    #[error("worker {worker_id} was taken over by another instance (registered as {current_instance}); this instance must stop")]
    WorkerSuperseded {
        /// The worker id.
        worker_id: String,
        /// The instance that holds the id now.
        current_instance: String,
    },
    /// The lease token is stale: the task is no longer running under this
    /// attempt (it finished, was requeued, timed out or was cancelled). The
    /// caller must stop writing for it.
    #[error("lease lost for task {task_id} attempt {attempt}")]
    LeaseLost {
        /// The task.
        task_id: TaskId,
        /// The attempt the caller holds.
        attempt: u32,
    },
    /// An `Idempotency-Key` came back with a different request than the one
    /// it was first used with; nothing was created.
    #[error("idempotency key {key} was already used with a different request")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The request was invalid.
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    /// The store could not be reached or the operation hit a transient
    /// failure (connection lost, serialization failure, server restarting).
    /// Retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The caller is not allowed to do this (wrong or missing token).
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// A permanent failure inside the store (a bug, a corrupted row).
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Shorthand for a missing task.
    pub fn task_not_found(id: TaskId) -> Self {
        StoreError::NotFound {
            entity: "task",
            id: id.to_string(),
        }
    }

    /// Shorthand for a missing worker.
    pub fn worker_not_found(id: &str) -> Self {
        StoreError::NotFound {
            entity: "worker",
            id: id.to_string(),
        }
    }

    /// The refusal of a claim by a worker that is registered but not live: it
    /// deregistered, or sent no heartbeat for longer than `offline_after`.
    /// ([`StoreError::Invalid`] naming `worker_id`, so HTTP answers 400.)
    pub fn worker_offline(id: &str, offline_after: std::time::Duration) -> Self {
        StoreError::Invalid(ValidationError::new(
            "worker_id",
            format!(
                "worker {id} is offline (it deregistered, or sent no heartbeat for more than {} s): send a \
                 heartbeat or register again before claiming",
                offline_after.as_secs()
            ),
        ))
    }
}

/// A failure of a [`ClusterBackend`](crate::ClusterBackend) outside a task run
/// (preparing, resetting or shutting down the cluster).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What went wrong, phrased for an operator (what is missing, how to fix it).
    pub message: String,
}

impl BackendError {
    /// Builds a backend error from a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
