//! Wake-ups a store can push to waiting workers, so they need not wait for
//! the next poll (PostgreSQL sends them with LISTEN/NOTIFY).

use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// Something a worker may want to react to at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreEvent {
    /// A task became claimable (created or requeued) for this backend type.
    TaskAvailable {
        /// The backend type of the task.
        backend_type: String,
    },
    /// A client asked to cancel a running task.
    CancelRequested {
        /// The task.
        task_id: TaskId,
    },
    /// Wake-ups may have been missed (the store's channel dropped, or is down): check the queue now. Sent after a
    /// reconnection and, while the channel is down, every [`RESYNC_WHILE_DOWN`], so a worker that polls slowly
    /// because it is pushed to still polls at the usual pace while it is not.
    Resync,
}

/// How often a store whose push channel is down sends [`StoreEvent::Resync`]: the usual poll interval.
pub const RESYNC_WHILE_DOWN: std::time::Duration = std::time::Duration::from_secs(2);
