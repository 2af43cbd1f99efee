//! One task, from the claim to the reset after it.
//!
//! The run goes: register the task as running here, start forwarding its
//! logs, call the backend (in its own tokio task, so a panic or a hang
//! cannot take the worker down), watch its deadline and its stop signal,
//! then flush the log, save the trajectory, report the outcome, and reset
//! the backend.
//!
//! The log is flushed first so the task's whole log is in the store before
//! it turns terminal: entries held during a store outage wait for it like
//! the report does (bounded, see `log_forwarder.rs`).
//!
//! A store that takes a run's end in one write ([`FinalReports`]) gets the
//! log's tail, the trajectory and the outcome in one call, all or nothing;
//! if it refuses that write, the parts are sent one by one as below, which
//! tells which part was refused and keeps the rules that follow.
//!
//! Reporting never drops a finished result while the lease is valid: the
//! trajectory save and the finish are retried on transient errors without a
//! limit on tries, with capped backoff, until the store acknowledges them or
//! answers that the lease is gone (`LeaseLost`/`NotFound`: the task was
//! requeued, timed out or cancelled meanwhile, and a newer state must not be
//! overwritten). If the store stays unreachable, our heartbeats stop too, the
//! lease expires and the store's sweep resolves the task, after which the
//! retry gets `LeaseLost` and ends; so the retry is bounded by the store's
//! own verdict. The one exception is shutdown: past its report grace the
//! runtime gives up (logging the lost outcome) so the process can exit.
//! A trajectory the store refuses outright (too large, invalid) is never
//! followed by a `completed` report: the run is reported `failed` with code
//! `trajectory_refused`, since an episode without its trajectory is no
//! episode for training.
//!
//! A failed reset keeps the slot closed and is retried with backoff until
//! it succeeds: a cluster that could not be cleaned would fail (and burn
//! the retries of) every task after it, so the worker stops taking work on
//! that slot instead and says so in its log (and shows `busy`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::log_forwarder::{forward_logs, BufferLimits, ForwarderSettings};
use super::slots::{RunGuard, RunHandle, StopReason};
use super::Shared;
use crate::backend::{LogSink, RunContext, RunReport};
use crate::error::StoreError;
use crate::log::NewLogEntry;
use crate::retry::retry_transient;
use crate::store::{FinalReport, FinalReports};
use crate::task::{ErrorDetails, Task, TaskOutcome, TaskStatus, TerminalStatus};

/// Runs `task` (already `running` under our name) and reports it. `permit`
/// is the slot it occupies; `None` when the worker's shutdown grace ran out
/// before a slot freed up: the task is then handed back unstarted, reported
/// `failed` with code `worker_shutdown` (requeued if its retries allow). A
/// task claimed while shutdown is under way still runs, within the grace.
pub(crate) async fn run_task(shared: Arc<Shared>, task: Task, permit: Option<OwnedSemaphorePermit>, guard: RunGuard) {
    let span = tracing::info_span!(
        "task",
        task_id = %task.id,
        worker_id = %shared.config.worker_id,
        problem_id = %task.problem_id,
        attempt = task.attempt,
    );
    async move {
        let Some(handle) = shared.slots.register(task.lease_token()) else {
            tracing::debug!("task already runs here; ignoring the duplicate");
            return;
        };
        if task.cancel_requested {
            handle.stop(StopReason::ClientCancel);
        }
        if shared.grace_over.is_cancelled() || permit.is_none() {
            handle.stop(StopReason::Shutdown);
            let report = RunReport::failed(
                "worker_shutdown",
                format!(
                    "worker {} was shutting down and handed the task back unstarted",
                    shared.config.worker_id
                ),
            );
            deliver(&shared, &task, &handle, report, Vec::new()).await;
            shared.slots.remove(task.id);
            return;
        }
        tracing::info!("run starting");
        shared.beat_now.notify_one();
        let (report, log_tail) = execute(&shared, &task, &handle).await;
        tracing::info!(status = ?report.status, "run ended");
        deliver(&shared, &task, &handle, report, log_tail).await;
        shared.slots.remove(task.id);
        reset(&shared).await;
        drop(permit);
        drop(guard);
        shared.beat_now.notify_one();
    }
    .instrument(span)
    .await
}

/// Runs the backend under the deadline and the stop signal; returns the
/// report to deliver, reconciled with the reason the run was stopped, and
/// the log entries still to send with it (only when the store takes final
/// reports; otherwise the whole log is stored by then).
async fn execute(shared: &Arc<Shared>, task: &Task, handle: &RunHandle) -> (RunReport, Vec<NewLogEntry>) {
    let config = &shared.config;
    let (sink, receiver) = LogSink::channel(config.log_batch_size.saturating_mul(4));
    let flush = tokio_util::sync::CancellationToken::new();
    let forwarder = tokio::spawn(
        forward_logs(
            Arc::clone(&shared.store),
            handle.clone(),
            receiver,
            ForwarderSettings {
                batch_size: config.log_batch_size,
                flush_interval: config.log_flush_interval,
                retry: config.retry,
                limits: BufferLimits {
                    max_entries: config.log_buffer_entries,
                    max_bytes: config.log_buffer_bytes,
                },
                flush_timeout: config.log_flush_timeout,
                hand_back_tail: shared.store.final_reports().is_some(),
            },
            flush.clone(),
            shared.hard_stop.clone(),
        )
        .in_current_span(),
    );

    let timeout = Duration::from_secs(u64::from(task.parameters.timeout_minutes) * 60);
    let deadline = Instant::now() + timeout;
    let ctx = RunContext {
        worker_id: config.worker_id.clone(),
        lease: handle.lease,
        logs: sink,
        cancel: handle.cancel.clone(),
        deadline,
    };
    let backend = Arc::clone(&shared.backend);
    let owned = task.clone();
    let mut run = tokio::spawn(async move { backend.run(&owned, ctx).await }.in_current_span());

    let grace = config.cancel_grace;
    let finished = tokio::select! {
        biased;
        joined = &mut run => Some(joined),
        _ = handle.cancel.cancelled() => None,
        _ = tokio::time::sleep_until(deadline + grace) => {
            tracing::warn!("deadline passed and the backend did not report; stopping the run");
            handle.stop(StopReason::Deadline);
            None
        }
    };
    let joined = match finished {
        Some(joined) => Some(joined),
        None => match tokio::time::timeout(grace, &mut run).await {
            Ok(joined) => Some(joined),
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs_f64(),
                    "backend did not return after being stopped; abandoning the run"
                );
                run.abort();
                None
            }
        },
    };
    let report = match joined {
        Some(Ok(report)) => report,
        Some(Err(error)) if error.is_panic() => {
            tracing::error!("backend panicked while running the task");
            RunReport::failed(
                "backend_panic",
                format!("the {} backend panicked during the run", shared.backend.name()),
            )
        }
        Some(Err(error)) => RunReport::failed("backend_error", format!("the run was aborted: {error}")),
        None => RunReport::failed(
            "backend_unresponsive",
            format!(
                "the {} backend did not return after the run was stopped",
                shared.backend.name()
            ),
        ),
    };

    // The whole log lands before the outcome is reported (see log_forwarder.rs).
    flush.cancel();
    let tail = match forwarder.await {
        // Each loss was warned about when it happened.
        Ok(end) if end.stats.dropped > 0 => {
            tracing::info!(
                stored = end.stats.stored,
                dropped = end.stats.dropped,
                overflowed = end.stats.overflowed,
                "log flushed; some entries were lost"
            );
            end.tail
        }
        Ok(end) => {
            tracing::debug!(stored = end.stats.stored, tail = end.tail.len(), "log flushed");
            end.tail
        }
        Err(error) => {
            tracing::error!(%error, "log forwarder failed");
            Vec::new()
        }
    };
    (reconcile(report, handle, shared, task), tail)
}

/// Adjusts the backend's report to why the run was stopped. A run that
/// completed is kept as completed whatever happened around it; otherwise a
/// client cancel reports `cancelled`, a shutdown `failed`/`worker_shutdown`,
/// and a passed deadline `timeout`. What the run produced is kept.
fn reconcile(mut report: RunReport, handle: &RunHandle, shared: &Shared, task: &Task) -> RunReport {
    if report.status == TerminalStatus::Completed {
        return report;
    }
    let (status, code, message) = match handle.reason() {
        None | Some(StopReason::LeaseLost) => return report,
        Some(StopReason::ClientCancel) => (
            TerminalStatus::Cancelled,
            "cancelled",
            "cancelled at a client's request".to_string(),
        ),
        Some(StopReason::Shutdown) => (
            TerminalStatus::Failed,
            "worker_shutdown",
            format!(
                "worker {} shut down before the run finished (shutdown grace {} s)",
                shared.config.worker_id,
                shared.config.shutdown_grace.as_secs()
            ),
        ),
        Some(StopReason::Deadline) => (
            TerminalStatus::Timeout,
            "timeout",
            format!(
                "the run exceeded its limit of {} minutes",
                task.parameters.timeout_minutes
            ),
        ),
    };
    if report.status != status || report.error.is_none() {
        report.status = status;
        report.error = Some(ErrorDetails::new(code, message));
    }
    report
}

/// How a report attempt ended.
enum Persisted<T> {
    Done(T),
    /// The store no longer holds our lease: stop writing.
    LeaseGone(StoreError),
    /// A permanent refusal.
    Refused(StoreError),
    /// Shutdown's report grace ran out.
    GaveUp,
}

/// Retries a report call on transient errors until it lands, the lease is
/// gone, or shutdown's report grace runs out.
async fn persist<T, F, Fut>(shared: &Shared, op_name: &str, op: F) -> Persisted<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let policy = shared.config.retry.unbounded();
    tokio::select! {
        biased;
        result = retry_transient(&policy, op_name, op) => match result {
            Ok(value) => Persisted::Done(value),
            Err(error @ (StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => Persisted::LeaseGone(error),
            Err(error) => Persisted::Refused(error),
        },
        _ = shared.hard_stop.cancelled() => Persisted::GaveUp,
    }
}

/// Reports the run: the log's tail, the trajectory and the outcome, in one
/// write when the store takes final reports, else (or when it refuses that
/// write) one by one (see the module docs).
async fn deliver(shared: &Shared, task: &Task, handle: &RunHandle, report: RunReport, log_tail: Vec<NewLogEntry>) {
    // Another instance holds our worker id now: nothing we hold is ours to
    // report, not even a run claimed after the takeover but before our
    // heartbeat learnt of it (the new instance's heartbeat hands it back).
    if shared.superseded.get().is_some() {
        tracing::warn!(status = ?report.status, "this worker id was taken over: the outcome is not reported");
        return;
    }
    if handle.reason() == Some(StopReason::LeaseLost) {
        tracing::warn!(
            status = ?report.status,
            "lease lost (the task was requeued, timed out or taken over): the outcome is not reported"
        );
        return;
    }
    let model_version = crate::outcome::model_version_of(&task.parameters.agent_config);
    let trajectory = report.trajectory.map(|mut trajectory| {
        trajectory.task_id = task.id;
        // Every call served this task's policy: stamp its version where the backend did not.
        for call in &mut trajectory.llm_calls {
            call.model_version = call.model_version.or(model_version);
        }
        trajectory
    });
    let outcome = TaskOutcome {
        status: report.status,
        result: report.result,
        error: report.error,
    };
    let parts = FinalReport::new(outcome)
        .with_logs(log_tail)
        .with_trajectory(trajectory);
    if let Some(reports) = shared.store.final_reports() {
        match deliver_at_once(shared, reports, handle, &parts).await {
            Persisted::Refused(error) => {
                tracing::debug!(%error, "the store refused the final report as a whole; sending its parts one by one")
            }
            finished => return log_finish(finished, &parts.outcome),
        }
    }
    deliver_parts(shared, handle, parts).await;
}

/// The run's end in one all-or-nothing write.
async fn deliver_at_once(
    shared: &Shared,
    reports: &dyn FinalReports,
    handle: &RunHandle,
    parts: &FinalReport,
) -> Persisted<Task> {
    // The finish is part of this write: from here on the lease ends by our
    // own hand, so a lease check that finds it gone is not news (heartbeat.rs).
    handle.mark_reporting();
    persist(shared, "final_report", || {
        reports.finish_run(handle.lease, parts.clone())
    })
    .await
}

/// The log's tail, the trajectory and the finish, each on its own.
async fn deliver_parts(shared: &Shared, handle: &RunHandle, parts: FinalReport) {
    let lease = handle.lease;
    let FinalReport {
        logs,
        trajectory,
        mut outcome,
        ..
    } = parts;
    if !logs.is_empty() {
        let count = logs.len();
        match persist(shared, "append_logs", || shared.store.append_logs(lease, logs.clone())).await {
            Persisted::Done(()) => {}
            Persisted::LeaseGone(error) => {
                tracing::warn!(%error, "lease gone before the log was stored: the outcome is not reported");
                return;
            }
            Persisted::Refused(error) => {
                tracing::warn!(%error, dropped = count, "store refused the last log entries; they are dropped")
            }
            Persisted::GaveUp => {
                tracing::error!("shutting down: gave up storing the log; the store's sweep will resolve the task");
                return;
            }
        }
    }
    if let Some(trajectory) = trajectory {
        match persist(shared, "save_trajectory", || {
            shared.store.save_trajectory(lease, trajectory.clone())
        })
        .await
        {
            Persisted::Done(()) => {}
            Persisted::LeaseGone(error) => {
                tracing::warn!(%error, "lease gone before the trajectory was saved: the outcome is not reported");
                return;
            }
            Persisted::Refused(error) => {
                tracing::error!(%error, "store refused the trajectory; the run is reported failed, not completed");
                refused_trajectory(&mut outcome, &error);
            }
            Persisted::GaveUp => {
                tracing::error!(
                    "shutting down: gave up saving the trajectory; the store's sweep will resolve the task"
                );
                return;
            }
        }
    }
    // From here on the lease ends by our own hand: a lease check that finds
    // it gone is not news (heartbeat.rs).
    handle.mark_reporting();
    let finished = persist(shared, "finish", || shared.store.finish(lease, outcome.clone())).await;
    log_finish(finished, &outcome);
}

/// Says how reporting the outcome ended.
fn log_finish(finished: Persisted<Task>, outcome: &TaskOutcome) {
    match finished {
        Persisted::Done(stored) if stored.status == TaskStatus::Pending => tracing::info!(
            error = ?outcome.error,
            "run failed; the store requeued the task for another attempt"
        ),
        Persisted::Done(stored) => tracing::info!(status = %stored.status, "outcome reported"),
        Persisted::LeaseGone(error) => tracing::warn!(
            %error,
            status = ?outcome.status,
            "the store no longer holds our lease (requeued, timed out or cancelled meanwhile); outcome not recorded"
        ),
        Persisted::Refused(error) => tracing::error!(%error, ?outcome, "store refused the outcome; it is lost"),
        Persisted::GaveUp => tracing::error!(
            ?outcome,
            "shutting down: gave up reporting the outcome; the store's sweep will requeue or fail the task"
        ),
    }
}

/// An episode without its trajectory is no episode for training: a run that
/// completed is reported `failed` with code `trajectory_refused` (naming the
/// store's answer) instead, so nobody reads it as a complete episode. Its
/// result (evaluation, metrics) is kept.
fn refused_trajectory(outcome: &mut TaskOutcome, error: &StoreError) {
    if outcome.status == TerminalStatus::Completed {
        outcome.status = TerminalStatus::Failed;
    }
    outcome.error = Some(ErrorDetails::new(
        "trajectory_refused",
        format!("the store refused the run's trajectory, so the episode is incomplete: {error}"),
    ));
}

/// Resets the backend, retrying until it succeeds (see the module docs).
async fn reset(shared: &Shared) {
    let mut backoff = shared.config.retry.unbounded().backoff();
    loop {
        let Err(error) = shared.backend.reset().await else {
            return;
        };
        if shared.stopping.is_cancelled() {
            tracing::error!(%error, "backend reset failed during shutdown");
            return;
        }
        let delay = backoff.next_delay();
        tracing::error!(
            %error,
            retry_in_ms = delay.as_millis() as u64,
            "backend reset failed; this slot takes no new task until a reset succeeds"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stopping.cancelled() => return,
        }
    }
}
