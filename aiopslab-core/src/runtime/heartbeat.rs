//! The heartbeat: the worker's sign of life, which also keeps its leases.
//!
//! Every `heartbeat_interval`, and soon after a run starts or ends, the
//! worker tells the store it is `idle` (a
//! slot is free) or `busy` (none is, or it is shutting down), and which task
//! it runs. The store extends the leases of the tasks it lists and
//! answers with the ids of tasks a client cancelled (their runs are stopped)
//! and possibly a task already claimed for it (run in a free slot).
//!
//! Each beat lists every task the worker holds (`running_task_ids`, from
//! claim to the end of its report) and names this process's instance. The
//! store renews those leases and hands back any other task running under
//! our id — one whose claim reply never reached us — so it does not sit
//! `running` until it times out. Claims hold the claim gate for reading and
//! a beat holds it for writing, so no beat misses a task being claimed. A
//! beat refused as `WorkerSuperseded` (another instance registered under
//! our id) stops the worker: every run ends without reporting.
//!
//! The answer also names the listed tasks that no longer run under us
//! (`lost_task_ids`): a run still going for one of them lost its lease (the
//! sweep requeued or timed it out while we were unreachable) and is stopped
//! without writing anything more — unless its outcome is already being
//! reported, in which case our own `finish` ended the lease and there is
//! nothing to say. One request per beat, whatever the number of runs (each
//! run used to be checked with a lease extension of its own).
//! Failed beats are not retried in place: the next tick is the retry.
//!
//! The beat after a run starts or ends goes out at once when the last such
//! beat is at least [`STATUS_BEAT_SPACING`] old, else when it is: a busy
//! worker of many short runs would otherwise send two beats per task (each
//! a store write renewing every lease it holds), which measured as a third
//! of its store traffic while draining a queue.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::slots::StopReason;
use super::task_run::run_task;
use super::Shared;
use crate::error::StoreError;
use crate::task::Task;
use crate::worker::{WorkerHeartbeat, WorkerStatus};

/// The least time between two beats sent because a run started or ended (see the module docs).
pub(crate) const STATUS_BEAT_SPACING: Duration = Duration::from_secs(1);

/// Beats every interval until `stop` fires.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let period = shared.config.heartbeat_interval;
    // Registration just counted as a sign of life: the first beat is one period later.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status_beat: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
            // A run started or ended: report the new status, at most once per spacing.
            _ = shared.beat_now.notified() => {
                if let Some(due) = last_status_beat.map(|at| at + STATUS_BEAT_SPACING) {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                last_status_beat = Some(tokio::time::Instant::now());
                ticker.reset();
            }
        }
        beat(&shared).await;
    }
}

/// One heartbeat and the handling of its answer.
pub(crate) async fn beat(shared: &Arc<Shared>) {
    let status = if shared.stopping.is_cancelled() || !shared.slots.has_free_slot() {
        WorkerStatus::Busy
    } else {
        WorkerStatus::Idle
    };
    // No claim is in flight while we beat: the list below is every task we hold.
    let _gate = shared.claim_gate.write().await;
    let heartbeat = WorkerHeartbeat {
        worker_id: shared.config.worker_id.clone(),
        status,
        current_task_id: shared.slots.current_task(),
        running_task_ids: Some(shared.slots.held_ids()),
        instance_id: Some(shared.config.instance_id.clone()),
    };
    match shared.store.heartbeat(&heartbeat).await {
        Ok(ack) => {
            for task_id in ack.requeued_task_ids {
                tracing::warn!(%task_id, "the store handed back a task held under our id that we never got");
            }
            for task_id in ack.lost_task_ids {
                lease_gone(shared, task_id);
            }
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
        Err(error @ StoreError::WorkerSuperseded { .. }) => {
            tracing::error!(
                %error,
                "another instance took over this worker id: stopping every run without reporting and exiting"
            );
            let _ = shared.superseded.set(error);
            shared.slots.stop_all(StopReason::LeaseLost);
            shared.stopping.cancel();
            shared.grace_over.cancel();
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
    let guard = shared.slots.track(task.id);
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

/// The store says a task we listed no longer runs under us. A run that is
/// reporting its outcome expects that (its own `finish` ended the lease), as
/// does one that ended while the beat was in flight: nothing to say. Any
/// other run lost its lease (the sweep requeued or timed it out while we
/// were unreachable, or it was taken over) and stops without writing more.
fn lease_gone(shared: &Shared, task_id: crate::task::TaskId) {
    let Some(handle) = shared.slots.handles().into_iter().find(|h| h.lease.task_id == task_id) else {
        tracing::debug!(%task_id, "lease ended with the run (it is over)");
        return;
    };
    if handle.is_reporting() {
        tracing::debug!(%task_id, "lease ended by our own report");
        return;
    }
    tracing::warn!(%task_id, "lease lost; stopping the run without reporting");
    handle.stop(StopReason::LeaseLost);
}
