//! Announcing new tasks to listening workers, off the create path.
//!
//! A transaction that sends NOTIFY holds a database-wide lock from its pre-commit until its commit record is
//! flushed, so notifying inside each task INSERT would let only one create commit per WAL flush (measured: the
//! task rate stalled at the single-connection commit rate). Instead the store records the backend type of each
//! committed create here, and a background task sends the notifications in a statement of its own, which writes
//! nothing and so commits without waiting for a flush. Announcements that pile up while one is being sent are
//! coalesced into one `pg_notify` per backend type: a notification reaches every listener, so one wakes every
//! idle worker of that type. If sending fails the workers still find the tasks by polling.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::connections::Connections;
use crate::sql;

/// Backend types waiting to be announced, and the background sender.
pub(crate) struct Announcer {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl Announcer {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared::default()),
            task: Mutex::new(None),
        }
    }

    /// Queues an announcement for these backend types (sent shortly, in the background).
    pub(crate) fn announce<'a>(
        &self,
        connections: &Arc<Connections>,
        backend_types: impl IntoIterator<Item = &'a str>,
    ) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            for backend_type in backend_types {
                if !pending.contains(backend_type) {
                    pending.insert(backend_type.to_string());
                }
            }
        }
        if let Ok(mut task) = self.task.lock() {
            if task.is_none() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        *task = Some(runtime.spawn(send_loop(self.shared.clone(), Arc::downgrade(connections))));
                    }
                    Err(_) => tracing::debug!("no runtime to announce new tasks from; workers will poll"),
                }
            }
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }
}

async fn send_loop(shared: Arc<Shared>, connections: Weak<Connections>) {
    loop {
        shared.wake.notified().await;
        let backend_types: Vec<String> = match shared.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending).into_iter().collect(),
            Err(_) => return,
        };
        if backend_types.is_empty() {
            continue;
        }
        let Some(connections) = connections.upgrade() else {
            return;
        };
        let sent = match connections.get("announce").await {
            Ok(mut conn) => {
                let result = sqlx::query(sql::NOTIFY_TASKS_AVAILABLE)
                    .bind(&backend_types)
                    .execute(conn.raw())
                    .await;
                conn.done("announce", result).map(|_| ())
            }
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "could not notify workers of new tasks; they will find them by polling");
        }
    }
}
