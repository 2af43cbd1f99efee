//! Run slots and the registry of running tasks.
//!
//! A worker runs at most `max_parallel_tasks` tasks at once: each run holds
//! a permit of a semaphore from claim to the end of the backend reset that
//! follows it. The registry maps each running task to its [`RunHandle`],
//! through which the heartbeat, store events and shutdown stop a run and
//! say why, so the run can report the matching status. An activity counter
//! ([`RunGuard`]) lets shutdown wait until every run, including reports
//! still being delivered, has ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::task::{LeaseToken, TaskId};

/// Why a run was stopped before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A client cancelled the task: report `cancelled`.
    ClientCancel,
    /// The worker is shutting down and the grace period ran out: report
    /// `failed` with code `worker_shutdown` (the store requeues it if retries remain).
    Shutdown,
    /// The store no longer holds our lease (requeued, timed out, or taken
    /// over): stop and write nothing more.
    LeaseLost,
    /// The run passed its deadline and the backend did not report it.
    Deadline,
}

/// The runtime's grip on one running task.
#[derive(Debug, Clone)]
pub(crate) struct RunHandle {
    /// The lease the run holds.
    pub lease: LeaseToken,
    /// Given to the backend as `RunContext::cancel`.
    pub cancel: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
    /// Set once the outcome is being sent to the store: from then on the
    /// lease ends because of our own report, so a lease check that finds
    /// it gone is no news (see [`RunHandle::is_reporting`]).
    reporting: Arc<AtomicBool>,
    started: Instant,
}

impl RunHandle {
    /// Stops the run for `reason`; the first reason given is the one kept.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    /// Marks the run as reporting its outcome: the `finish` call is about
    /// to be sent (and, once it lands, ends the lease).
    pub fn mark_reporting(&self) {
        self.reporting.store(true, Ordering::SeqCst);
    }

    /// True once the outcome is being (or has been) reported. A lease
    /// check answered `LeaseLost` after this point most likely raced our
    /// own `finish`; if the lease really was lost, the report itself gets
    /// `LeaseLost` and says so.
    pub fn is_reporting(&self) -> bool {
        self.reporting.load(Ordering::SeqCst)
    }
}

/// Counts a run in progress and keeps its task in the held set (what the
/// heartbeat lists) from the moment it was claimed; dropping it marks the
/// run as over.
#[derive(Debug)]
pub(crate) struct RunGuard {
    active: watch::Sender<usize>,
    held: Arc<Mutex<HashMap<TaskId, usize>>>,
    task_id: TaskId,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.task_id) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.task_id);
            }
        }
        drop(held);
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Slots, running tasks, and the activity counter.
#[derive(Debug)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    running: Mutex<HashMap<TaskId, RunHandle>>,
    active: watch::Sender<usize>,
    /// Tasks claimed or handed to us and not yet fully reported, with how
    /// many guards hold each (a duplicate hand-over holds one briefly).
    held: Arc<Mutex<HashMap<TaskId, usize>>>,
}

impl Slots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity.max(1) as usize)),
            running: Mutex::new(HashMap::new()),
            active: watch::Sender::new(0),
            held: Arc::default(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, RunHandle>> {
        // The map stays consistent even if a holder panicked: every update is one insert or remove.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; if it were, no slot would ever free up.
            Err(_) => std::future::pending().await,
        }
    }

    /// A free slot right now, without waiting; `None` when every slot is taken.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// True when a slot is free right now.
    pub fn has_free_slot(&self) -> bool {
        self.permits.available_permits() > 0
    }

    /// Counts the run of `task_id` as in progress, and the task as held,
    /// until the guard drops. Taken as soon as the store hands the task
    /// over, before anything awaits, so no heartbeat misses it.
    pub fn track(&self, task_id: TaskId) -> RunGuard {
        *self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(task_id)
            .or_insert(0) += 1;
        self.active.send_modify(|n| *n += 1);
        RunGuard {
            active: self.active.clone(),
            held: Arc::clone(&self.held),
            task_id,
        }
    }

    /// Every task this worker holds, in id order: what its heartbeat lists.
    pub fn held_ids(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// Waits until no run is in progress.
    pub async fn wait_idle(&self) {
        let mut receiver = self.active.subscribe();
        let _ = receiver.wait_for(|n| *n == 0).await;
    }

    /// Runs in progress (claimed or handed to us, not yet fully reported).
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// Records a running task and returns its handle; `None` if it is
    /// already running here (a duplicate hand-over).
    pub fn register(&self, lease: LeaseToken) -> Option<RunHandle> {
        let mut running = self.running();
        if running.contains_key(&lease.task_id) {
            return None;
        }
        let handle = RunHandle {
            lease,
            cancel: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
            reporting: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        };
        running.insert(lease.task_id, handle.clone());
        Some(handle)
    }

    /// Forgets a task whose run has ended.
    pub fn remove(&self, task_id: TaskId) {
        self.running().remove(&task_id);
    }

    /// True when this task runs here.
    pub fn contains(&self, task_id: TaskId) -> bool {
        self.running().contains_key(&task_id)
    }

    /// Stops one task if it runs here; returns whether it did.
    pub fn stop(&self, task_id: TaskId, reason: StopReason) -> bool {
        match self.running().get(&task_id) {
            Some(handle) => {
                handle.stop(reason);
                true
            }
            None => false,
        }
    }

    /// Stops every running task; returns how many.
    pub fn stop_all(&self, reason: StopReason) -> usize {
        let running = self.running();
        for handle in running.values() {
            handle.stop(reason);
        }
        running.len()
    }

    /// The handles of every running task, reports in progress included
    /// (their leases must last until the report lands).
    pub fn handles(&self) -> Vec<RunHandle> {
        self.running().values().cloned().collect()
    }

    /// The task running longest, reported as the worker's current task.
    pub fn current_task(&self) -> Option<TaskId> {
        self.running()
            .values()
            .min_by_key(|handle| handle.started)
            .map(|handle| handle.lease.task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn lease() -> LeaseToken {
        LeaseToken {
            task_id: Uuid::new_v4(),
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn first_stop_reason_wins_and_duplicates_are_refused() {
        let slots = Slots::new(2);
        let lease = lease();
        let handle = slots.register(lease).unwrap();
        assert!(slots.register(lease).is_none());
        assert!(slots.stop(lease.task_id, StopReason::ClientCancel));
        slots.stop_all(StopReason::Shutdown);
        assert!(handle.cancel.is_cancelled());
        assert_eq!(handle.reason(), Some(StopReason::ClientCancel));
        slots.remove(lease.task_id);
        assert!(!slots.stop(lease.task_id, StopReason::Shutdown));
    }

    #[tokio::test]
    async fn permits_and_activity_are_counted() {
        let slots = Slots::new(1);
        let permit = slots.acquire().await;
        assert!(!slots.has_free_slot());
        drop(permit);
        assert!(slots.has_free_slot());
        let guard = slots.track(lease().task_id);
        assert_eq!(slots.active(), 1);
        drop(guard);
        slots.wait_idle().await;
    }
}
