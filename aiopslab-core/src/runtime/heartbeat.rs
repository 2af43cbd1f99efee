//! The heartbeat: the worker's sign of life, which also keeps its leases.
//!
//! Every `heartbeat_interval`, and at once whenever a run starts or ends,
//! the worker tells the store it is `idle` (a
//! slot is free) or `busy` (none is, or it is shutting down), and which task
//! it runs. The store extends the leases of all its running tasks and
//! answers with the ids of tasks a client cancelled (their runs are stopped)
//! and possibly a task already claimed for it (run in a free slot).
//!
//! The heartbeat does not say which leases are still ours, so each beat also
//! extends every running task's lease by its token: `LeaseLost` there means
//! the store gave the task up (sweep requeued or timed it out while we were
//! unreachable) and the run is stopped without writing anything more —
//! unless the task's outcome is already being reported, in which case our
//! own `finish` ended the lease and there is nothing to say.
//! Failed beats are not retried in place: the next tick is the retry.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::slots::StopReason;
use super::task_run::run_task;
use super::Shared;
use crate::error::StoreError;
use crate::task::Task;
use crate::worker::{WorkerHeartbeat, WorkerStatus};

/// Beats every interval until `stop` fires.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let period = shared.config.heartbeat_interval;
    // Registration just counted as a sign of life: the first beat is one period later.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
            // A run started or ended: report the new status at once.
            _ = shared.beat_now.notified() => ticker.reset(),
        }
        beat(&shared).await;
        check_leases(&shared).await;
    }
}

/// One heartbeat and the handling of its answer.
pub(crate) async fn beat(shared: &Arc<Shared>) {
    let status = if shared.stopping.is_cancelled() || !shared.slots.has_free_slot() {
        WorkerStatus::Busy
    } else {
        WorkerStatus::Idle
    };
    let heartbeat = WorkerHeartbeat {
        worker_id: shared.config.worker_id.clone(),
        status,
        current_task_id: shared.slots.current_task(),
    };
    match shared.store.heartbeat(&heartbeat).await {
        Ok(ack) => {
            for task_id in ack.cancelled_task_ids {
                if shared.slots.stop(task_id, StopReason::ClientCancel) {
                    tracing::info!(%task_id, "cancel requested by a client; stopping the run");
                }
            }
            if let Some(task) = ack.next_task {
                accept_handed_task(shared, task);
            }
        }
        Err(StoreError::NotFound { .. }) => {
            tracing::warn!("the store does not know this worker any more; registering again");
            let registration = shared.config.registration(shared.backend.name());
            if let Err(error) = shared.store.register_worker(registration).await {
                tracing::warn!(%error, "re-registration failed; will retry on the next heartbeat");
            }
        }
        Err(error) => tracing::warn!(%error, "heartbeat failed; leases are not being extended"),
    }
}

/// Runs a task the heartbeat's answer handed us (it is already `running`
/// under our name) in the next free slot; if shutdown's grace runs out
/// before one frees up, it is handed back as `worker_shutdown`.
fn accept_handed_task(shared: &Arc<Shared>, task: Task) {
    if shared.slots.contains(task.id) {
        return;
    }
    tracing::info!(task_id = %task.id, "heartbeat handed us a task");
    let guard = shared.slots.track();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let permit = tokio::select! {
            biased;
            _ = shared.grace_over.cancelled() => None,
            permit = shared.slots.acquire() => Some(permit),
        };
        run_task(shared, task, permit, guard).await;
    });
}

/// Confirms each running task's lease; stops runs whose lease is gone or
/// whose cancel was requested.
///
/// A task whose outcome is being reported is still checked (its lease must
/// last until the report lands), but a `LeaseLost` for it is expected: the
/// check raced our own `finish`, which ends the lease. That is not a lost
/// lease, so nothing is stopped or logged above debug; had the lease really
/// been lost, the report gets `LeaseLost` itself and says so. The same goes
/// for a run that ended (and left the registry) while the check was in
/// flight: whatever became of its lease, the run already said it.
async fn check_leases(shared: &Shared) {
    for handle in shared.slots.handles() {
        let lease = handle.lease;
        match shared.store.extend_lease(lease).await {
            Ok(state) if state.cancel_requested && !handle.is_reporting() => {
                if shared.slots.stop(lease.task_id, StopReason::ClientCancel) {
                    tracing::info!(task_id = %lease.task_id, "cancel requested by a client; stopping the run");
                }
            }
            Ok(_) => {}
            Err(StoreError::LeaseLost { .. } | StoreError::NotFound { .. })
                if handle.is_reporting() || !shared.slots.holds(lease) =>
            {
                tracing::debug!(task_id = %lease.task_id, "lease ended by our own report (or the run is over)");
            }
            Err(error @ (StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                tracing::warn!(task_id = %lease.task_id, %error, "lease lost; stopping the run without reporting");
                handle.stop(StopReason::LeaseLost);
            }
            Err(error) => tracing::warn!(task_id = %lease.task_id, %error, "lease check failed"),
        }
    }
}
