//! Checks for what a worker holds and which process holds a worker id: a
//! heartbeat that lists its tasks hands back the others at once (a claim
//! whose reply was lost), and a registration from a new instance takes a
//! live id over at once (a restarted worker), refusing the old instance
//! from then on.

use super::support::*;
use super::StoreHarness;
use crate::error::StoreError;
use crate::store::prelude::*;
use crate::task::{CancelOutcome, TaskStatus};
use crate::worker::{WorkerHeartbeat, WorkerRegistration, WorkerStatus};

/// A heartbeat of `worker_id` listing `held` as the tasks it holds.
fn listing(worker_id: &str, held: &[crate::task::TaskId]) -> WorkerHeartbeat {
    WorkerHeartbeat {
        running_task_ids: Some(held.to_vec()),
        ..WorkerHeartbeat::new(worker_id, WorkerStatus::Busy)
    }
}

/// A heartbeat that lists the tasks its worker holds renews exactly those
/// and hands back every other task running under its id in the same step:
/// pending again (whatever its retries: it never ran), error code
/// `not_held`, named in `requeued_task_ids`; a cancel-requested one becomes
/// `cancelled`. Listed tasks no longer running under the worker come back in
/// `lost_task_ids`. Another worker's tasks are untouched, and a heartbeat
/// without a list renews everything, as before.
pub async fn heartbeat_hands_back_tasks_it_does_not_list<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let kept = create(&store, plain("kept")).await;
    let phantom = create(&store, plain("phantom")).await;
    let unwanted = create(&store, plain("unwanted")).await;
    let other = create(&store, plain("other")).await;
    let kept = claim_some(&store, &request_task("w1", kept.id)).await;
    let phantom = claim_some(&store, &request_task("w1", phantom.id)).await;
    let unwanted = claim_some(&store, &request_task("w1", unwanted.id)).await;
    let other = claim_some(&store, &request_task("w2", other.id)).await;
    assert_eq!(
        store.cancel_task(unwanted.id).await.expect("cancel_task"),
        CancelOutcome::CancelRequested
    );

    h.advance_clock(&store, secs(30)).await;
    let ack = store
        .heartbeat(&beat("w1", WorkerStatus::Busy, None))
        .await
        .expect("a heartbeat without a list");
    assert!(
        ack.requeued_task_ids.is_empty(),
        "without running_task_ids nothing is handed back: {:?}",
        ack.requeued_task_ids
    );

    let ack = store
        .heartbeat(&listing("w1", &[kept.id]))
        .await
        .expect("a heartbeat listing its tasks");
    let mut expected = vec![phantom.id, unwanted.id];
    expected.sort();
    assert_eq!(
        ack.requeued_task_ids, expected,
        "the unlisted tasks are handed back and named"
    );
    assert!(ack.cancelled_task_ids.is_empty(), "the cancelled one is no longer ours");

    let back = get(&store, phantom.id).await;
    assert_status(&back, TaskStatus::Pending, "an unlisted task is pending again");
    assert_eq!(back.worker_id, None, "and held by nobody");
    assert_eq!(back.lease_expires_at, None, "with no lease");
    assert_eq!(
        back.error_details.as_ref().map(|d| d.code.as_str()),
        Some("not_held"),
        "and says why: {:?}",
        back.error_details
    );
    assert_status(
        &get(&store, unwanted.id).await,
        TaskStatus::Cancelled,
        "an unlisted task a client asked to cancel is cancelled",
    );
    assert_status(
        &get(&store, kept.id).await,
        TaskStatus::Running,
        "the listed task runs on",
    );
    assert_status(
        &get(&store, other.id).await,
        TaskStatus::Running,
        "another worker's task is untouched",
    );
    assert_lease_lost(
        store.extend_lease(phantom.lease_token()).await,
        "the handed-back attempt's token",
    );

    // The listed lease was renewed: 50 more seconds pass a lease taken 80 s ago.
    h.advance_clock(&store, secs(50)).await;
    store.heartbeat(&listing("w2", &[other.id])).await.expect("w2 beats");
    store.sweep().await.expect("sweep");
    assert_status(
        &get(&store, kept.id).await,
        TaskStatus::Running,
        "the listed task's lease was renewed by the listing heartbeat",
    );

    // A listed task that no longer runs under the worker is named as lost.
    let ack = store
        .heartbeat(&listing("w1", &[kept.id, phantom.id]))
        .await
        .expect("a heartbeat listing a task it lost");
    assert_eq!(
        ack.lost_task_ids,
        vec![phantom.id],
        "the handed-back task is no longer w1's"
    );
    assert!(ack.requeued_task_ids.is_empty(), "nothing else to hand back");

    // The handed-back task runs again at once, on another worker, with no retries to spare.
    let again = claim_some(&store, &request("w2")).await;
    assert_eq!(again.id, phantom.id, "the handed-back task is claimable at once");
    assert_eq!(again.parameters.max_retries, 0, "although it has no retries");
}

/// A registration naming another instance than the live registration's
/// takes the id over at once: the previous instance's running tasks are
/// taken back as a lost lease would be (requeued with retries left, failed
/// otherwise, code `worker_lost`), and its heartbeats are refused as
/// `WorkerSuperseded` without renewing anything. The same instance
/// registering again keeps what it holds; without instance ids a live id is
/// still refused.
pub async fn new_instance_takes_a_live_id_over<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let first = WorkerRegistration::new("w1", "default").with_instance_id("instance-a");
    store.register_worker(first.clone()).await.expect("first instance");
    let retried = create(&store, retrying("retried", 1)).await;
    let single = create(&store, plain("single")).await;
    let retried = claim_some(&store, &request_task("w1", retried.id)).await;
    let single = claim_some(&store, &request_task("w1", single.id)).await;

    store
        .register_worker(first.clone())
        .await
        .expect("the same instance may register again");
    assert_status(
        &get(&store, retried.id).await,
        TaskStatus::Running,
        "the same instance keeps its tasks",
    );
    match store.register_worker(WorkerRegistration::new("w1", "default")).await {
        Err(StoreError::WorkerAlive(id)) => assert_eq!(id, "w1"),
        other => panic!("a registration without an instance id is refused while w1 is live, got {other:?}"),
    }

    let second = WorkerRegistration::new("w1", "default").with_instance_id("instance-b");
    let worker = store
        .register_worker(second)
        .await
        .expect("a new instance takes the live id over at once");
    assert_eq!(worker.instance_id.as_deref(), Some("instance-b"));
    assert_eq!(worker.status, WorkerStatus::Idle);
    let requeued = get(&store, retried.id).await;
    assert_status(
        &requeued,
        TaskStatus::Pending,
        "a task with retries left is requeued at once",
    );
    assert_eq!(
        requeued.error_details.as_ref().map(|d| d.code.as_str()),
        Some("worker_lost"),
        "{:?}",
        requeued.error_details
    );
    let failed = get(&store, single.id).await;
    assert_status(
        &failed,
        TaskStatus::Failed,
        "a task without retries fails as worker_lost",
    );
    assert_eq!(
        failed.error_details.as_ref().map(|d| d.code.as_str()),
        Some("worker_lost")
    );

    let stale = WorkerHeartbeat {
        instance_id: Some("instance-a".into()),
        ..WorkerHeartbeat::new("w1", WorkerStatus::Busy)
    };
    match store.heartbeat(&stale).await {
        Err(StoreError::WorkerSuperseded {
            worker_id,
            current_instance,
        }) => {
            assert_eq!(worker_id, "w1");
            assert_eq!(
                current_instance, "instance-b",
                "the error names the instance holding the id"
            );
        }
        other => panic!("the superseded instance's heartbeat is refused, got {other:?}"),
    }
    assert_eq!(
        store.get_worker("w1").await.expect("get_worker").status,
        WorkerStatus::Idle,
        "a refused heartbeat changes nothing"
    );
    let current = WorkerHeartbeat {
        instance_id: Some("instance-b".into()),
        ..WorkerHeartbeat::new("w1", WorkerStatus::Busy)
    };
    store.heartbeat(&current).await.expect("the current instance beats");
    let taken = claim_some(&store, &request("w1")).await;
    assert_eq!(taken.id, retried.id, "the new instance claims the requeued task");
    assert_eq!(taken.attempt, 2, "as a new attempt");
}
