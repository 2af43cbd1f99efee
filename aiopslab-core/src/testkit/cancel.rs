//! Checks of cancellation: pending tasks are cancelled at once, running
//! ones are flagged for their worker, terminal ones refuse.

use super::support::*;
use super::StoreHarness;
use crate::query::TaskFilter;
use crate::store::prelude::*;
use crate::task::{CancelOutcome, TaskStatus, TerminalStatus};
use crate::worker::WorkerStatus;

/// Cancelling a pending task makes it `cancelled` at once; it is never
/// claimed, and a second cancel is refused.
pub async fn cancel_pending_task<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    let outcome = store.cancel_task(task.id).await.expect("cancel_task");
    assert_eq!(outcome, CancelOutcome::Cancelled, "a pending task is cancelled at once");
    let after = get(&store, task.id).await;
    assert_status(&after, TaskStatus::Cancelled, "a cancelled pending task");
    assert!(after.completed_at.is_some(), "a cancelled task has completed_at");
    assert_eq!(after.worker_id, None, "a cancelled pending task never had a worker");
    claim_none(&store, &request("w1"), "a cancelled task is not claimable").await;
    assert_already_terminal(
        store.cancel_task(task.id).await,
        TaskStatus::Cancelled,
        "a second cancel",
    );
    let pending = store
        .list_tasks(&TaskQuery::new(TaskFilter {
            status: Some(TaskStatus::Pending),
            ..Default::default()
        }))
        .await
        .expect("list_tasks");
    assert_eq!(pending.total, 0, "no pending task is left");
}

/// Cancelling a running task flags it; its worker learns it from
/// `extend_lease` and its heartbeat, stops, and reports `cancelled`.
pub async fn cancel_running_task<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    register(&store, "w2", "default").await;
    let target = create(&store, plain("target")).await;
    let bystander = create(&store, plain("bystander")).await;
    let held = claim_some(&store, &request_task("w1", target.id)).await;
    let other = claim_some(&store, &request_task("w2", bystander.id)).await;

    let outcome = store.cancel_task(target.id).await.expect("cancel_task");
    assert_eq!(
        outcome,
        CancelOutcome::CancelRequested,
        "a running task gets a cancel request"
    );
    let flagged = get(&store, target.id).await;
    assert_status(
        &flagged,
        TaskStatus::Running,
        "a cancel-requested task keeps running until its worker stops",
    );
    assert!(flagged.cancel_requested, "the task shows cancel_requested");
    assert_eq!(
        store.cancel_task(target.id).await.expect("a second cancel_task"),
        CancelOutcome::CancelRequested,
        "cancelling again while it runs asks again"
    );
    assert!(
        store
            .extend_lease(held.lease_token())
            .await
            .expect("extend_lease")
            .cancel_requested,
        "extend_lease tells the worker about the cancel"
    );
    assert!(
        !store
            .extend_lease(other.lease_token())
            .await
            .expect("extend_lease")
            .cancel_requested,
        "other tasks are not flagged"
    );
    let ack = store
        .heartbeat(&beat("w1", WorkerStatus::Busy, Some(target.id)))
        .await
        .expect("heartbeat");
    assert_eq!(
        ack.cancelled_task_ids,
        vec![target.id],
        "the heartbeat ack lists the cancelled task"
    );
    let ack = store
        .heartbeat(&beat("w2", WorkerStatus::Busy, Some(bystander.id)))
        .await
        .expect("heartbeat");
    assert!(ack.cancelled_task_ids.is_empty(), "another worker's ack lists nothing");

    let finished = store
        .finish(held.lease_token(), outcome_cancelled())
        .await
        .expect("finish(cancelled)");
    assert_status(&finished, TaskStatus::Cancelled, "the worker reported cancelled");
    assert!(finished.completed_at.is_some(), "a cancelled task has completed_at");
    let ack = store
        .heartbeat(&beat("w1", WorkerStatus::Idle, None))
        .await
        .expect("heartbeat");
    assert!(ack.cancelled_task_ids.is_empty(), "a finished task is no longer listed");
    assert_already_terminal(
        store.cancel_task(target.id).await,
        TaskStatus::Cancelled,
        "cancel after it ended",
    );
    assert_status(
        &get(&store, bystander.id).await,
        TaskStatus::Running,
        "the other task is untouched",
    );
}

fn outcome_cancelled() -> crate::task::TaskOutcome {
    outcome(TerminalStatus::Cancelled)
}

/// A failed run of a task whose cancel was requested is not retried, even
/// with retries left: the client asked for it to stop, so it ends `failed`.
pub async fn failed_run_of_cancelled_task_is_not_retried<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    let task = create(&store, retrying("p", 3)).await;
    let held = claim_some(&store, &request_task("w1", task.id)).await;
    store.cancel_task(task.id).await.expect("cancel_task");
    let ended = store
        .finish(held.lease_token(), failed("backend_error"))
        .await
        .expect("finish");
    assert_status(&ended, TaskStatus::Failed, "a failed run after a cancel request");
    claim_none(&store, &request("w1"), "a task cancelled while running is not requeued").await;
}
