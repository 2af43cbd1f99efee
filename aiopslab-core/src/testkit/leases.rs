//! Checks of leases and the sweep: stale tokens are refused, expired leases
//! requeue or fail the task, heartbeats and `extend_lease` keep leases
//! alive, overdue runs time out.

use super::support::*;
use super::StoreHarness;
use crate::log::{LogLevel, NewLogEntry};
use crate::policy::LeasePolicy;
use crate::store::prelude::*;
use crate::task::{TaskStatus, TerminalStatus};
use crate::trajectory::Trajectory;
use crate::worker::WorkerStatus;

/// After a lease expires and another worker claims attempt 2, every write
/// with the attempt-1 token is refused, and attempt 2's writes succeed.
pub async fn stale_token_refused_after_requeue<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let task = create(&store, retrying("p", 1)).await;
    let first = claim_some(&store, &request("w1")).await;
    let stale = first.lease_token();
    store
        .append_logs(stale, vec![NewLogEntry::new(LogLevel::Info, "attempt 1 starts")])
        .await
        .expect("append_logs while holding the lease");
    h.advance_clock(&store, secs(61)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.requeued,
        vec![task.id],
        "the expired lease is requeued: {report:?}"
    );
    let requeued = get(&store, task.id).await;
    assert_status(
        &requeued,
        TaskStatus::Pending,
        "a task whose lease expired with a retry left",
    );
    assert_eq!(requeued.worker_id, None, "a requeued task has no worker");
    assert_eq!(requeued.lease_expires_at, None, "a requeued task has no lease");
    assert_eq!(
        requeued.error_details.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost"),
        "the requeue says the worker was lost"
    );
    assert_lease_lost(
        store.extend_lease(stale).await,
        "extend_lease with a token of a requeued task",
    );

    let second = claim_some(&store, &request("w2")).await;
    assert_eq!(second.attempt, 2, "the claim after a requeue is attempt 2");
    let fresh = second.lease_token();
    assert_lease_lost(store.extend_lease(stale).await, "extend_lease with the attempt-1 token");
    assert_lease_lost(
        store
            .append_logs(stale, vec![NewLogEntry::new(LogLevel::Info, "zombie")])
            .await,
        "append_logs with the attempt-1 token",
    );
    assert_lease_lost(
        store
            .save_trajectory(
                stale,
                Trajectory {
                    task_id: task.id,
                    ..Default::default()
                },
            )
            .await,
        "save_trajectory with the attempt-1 token",
    );
    assert_lease_lost(
        store.finish(stale, completed()).await,
        "finish with the attempt-1 token",
    );
    assert_lease_lost(
        store.finish(stale, outcome(TerminalStatus::Failed)).await,
        "finish(failed), attempt-1 token",
    );

    store
        .extend_lease(fresh)
        .await
        .expect("extend_lease with the attempt-2 token");
    store
        .append_logs(fresh, vec![NewLogEntry::new(LogLevel::Info, "attempt 2")])
        .await
        .expect("append_logs with the attempt-2 token");
    store
        .save_trajectory(
            fresh,
            Trajectory {
                task_id: task.id,
                ..Default::default()
            },
        )
        .await
        .expect("save_trajectory with the attempt-2 token");
    let done = store
        .finish(fresh, completed())
        .await
        .expect("finish with the attempt-2 token");
    assert_status(&done, TaskStatus::Completed, "attempt 2 completes");
    assert_eq!(
        done.worker_id.as_deref(),
        Some("w2"),
        "the task names the worker of attempt 2"
    );
    let messages: Vec<String> = store
        .get_logs(task.id, &Default::default())
        .await
        .expect("get_logs")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        messages,
        ["attempt 1 starts", "attempt 2"],
        "the zombie's log entry was refused"
    );
}

/// An expired lease with no retries left fails the task with `worker_lost`,
/// once.
pub async fn lease_expiry_fails_without_retries<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let task = create(&store, plain("p")).await;
    let claimed = claim_some(&store, &request("w1")).await;
    h.advance_clock(&store, secs(30)).await;
    let report = store.sweep().await.expect("sweep");
    assert!(
        report.failed.is_empty() && report.requeued.is_empty(),
        "a live lease is left alone: {report:?}"
    );
    assert_status(
        &get(&store, task.id).await,
        TaskStatus::Running,
        "halfway through its lease",
    );
    h.advance_clock(&store, secs(31)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.failed,
        vec![task.id],
        "the expired lease fails the task: {report:?}"
    );
    assert!(report.requeued.is_empty(), "no retries: nothing is requeued");
    let failed = get(&store, task.id).await;
    assert_status(&failed, TaskStatus::Failed, "a lost task without retries");
    let details = failed.error_details.expect("a lost task has error details");
    assert_eq!(details.code, "worker_lost", "the failure says the worker was lost");
    assert!(!details.message.is_empty(), "the failure explains itself");
    assert!(failed.completed_at.is_some(), "a failed task has completed_at");
    let again = store.sweep().await.expect("sweep");
    assert!(
        !again.failed.contains(&task.id),
        "a task is failed once, not on every sweep: {again:?}"
    );
    assert_lease_lost(
        store.finish(claimed.lease_token(), completed()).await,
        "finish after the lease expired",
    );
    claim_none(&store, &request("w2"), "a failed task is not claimable").await;
}

/// An expired lease with retries left requeues the task, and the next claim
/// is attempt 2.
pub async fn lease_expiry_requeues_with_retries<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let task = create(&store, retrying("p", 2)).await;
    claim_some(&store, &request("w1")).await;
    h.advance_clock(&store, secs(61)).await;
    assert_eq!(
        store.sweep().await.expect("sweep").requeued,
        vec![task.id],
        "first loss requeues"
    );
    assert_eq!(claim_some(&store, &request("w2")).await.attempt, 2, "second claim");
    h.advance_clock(&store, secs(61)).await;
    assert_eq!(
        store.sweep().await.expect("sweep").requeued,
        vec![task.id],
        "second loss requeues"
    );
    register(&store, "w3", "default").await;
    assert_eq!(claim_some(&store, &request("w3")).await.attempt, 3, "third claim");
    h.advance_clock(&store, secs(61)).await;
    assert_eq!(
        store.sweep().await.expect("sweep").failed,
        vec![task.id],
        "third loss exhausts max_retries 2"
    );
    assert_status(
        &get(&store, task.id).await,
        TaskStatus::Failed,
        "after three lost attempts",
    );
}

/// Heartbeats extend the leases of the worker's running tasks, so a task
/// whose worker keeps beating never expires; silence then expires it.
pub async fn heartbeat_keeps_leases_alive<H: StoreHarness>(h: &H) {
    let policy = suite_policy();
    let store = h.store(policy).await;
    register(&store, "w1", "default").await;
    // Beat before any task exists: a store may hand an idle worker its next
    // task in the heartbeat's answer (a server does), and this beat must
    // find the worker holding nothing.
    let idle_ack = store
        .heartbeat(&beat("w1", WorkerStatus::Idle, None))
        .await
        .expect("heartbeat");
    assert!(idle_ack.acknowledged, "a heartbeat is acknowledged");
    assert_eq!(
        idle_ack.lease_expires_at, None,
        "a worker without running tasks holds no lease"
    );
    let task = create(&store, plain("p")).await;
    claim_some(&store, &request("w1")).await;
    for round in 0..3 {
        h.advance_clock(&store, secs(40)).await;
        let ack = store
            .heartbeat(&beat("w1", WorkerStatus::Busy, Some(task.id)))
            .await
            .expect("heartbeat");
        let expiry = ack
            .lease_expires_at
            .expect("a worker with a running task gets its lease expiry");
        let worker = store.get_worker("w1").await.expect("get_worker");
        assert_close(
            expiry,
            worker.last_heartbeat + chrono::TimeDelta::from_std(policy.lease_duration).expect("small duration"),
            "a heartbeat extends the lease to now + lease_duration",
        );
        assert_eq!(
            get(&store, task.id).await.lease_expires_at,
            Some(expiry),
            "the task's lease is the one in the ack"
        );
        h.advance_clock(&store, secs(40)).await;
        let report = store.sweep().await.expect("sweep");
        assert!(
            report.is_empty(),
            "round {round}: a beating worker's task must not expire: {report:?}"
        );
        assert_status(
            &get(&store, task.id).await,
            TaskStatus::Running,
            "a beating worker's task",
        );
    }
    h.advance_clock(&store, secs(61)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.failed,
        vec![task.id],
        "once the heartbeats stop, the lease expires: {report:?}"
    );
}

/// `extend_lease` keeps one task's lease alive.
pub async fn extend_lease_keeps_lease_alive<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let task = create(&store, plain("p")).await;
    let claimed = claim_some(&store, &request("w1")).await;
    for round in 0..3 {
        h.advance_clock(&store, secs(40)).await;
        let state = store.extend_lease(claimed.lease_token()).await.expect("extend_lease");
        assert!(!state.cancel_requested, "no cancel was requested");
        assert_eq!(
            get(&store, task.id).await.lease_expires_at,
            Some(state.lease_expires_at),
            "round {round}: the task's lease is the extended one"
        );
        h.advance_clock(&store, secs(40)).await;
        let report = store.sweep().await.expect("sweep");
        // (The worker itself, silent but for extend_lease, may be marked offline: only tasks matter here.)
        assert!(
            report.timed_out.is_empty() && report.requeued.is_empty() && report.failed.is_empty(),
            "round {round}: an extended lease must not expire: {report:?}"
        );
    }
    assert_status(
        &get(&store, task.id).await,
        TaskStatus::Running,
        "after every extension",
    );
}

/// The sweep marks a running task `timeout` once it is past `started_at +
/// timeout_minutes + timeout_grace`, and not before.
pub async fn sweep_times_out_overdue_tasks<H: StoreHarness>(h: &H) {
    // Leases long enough that only the timeout rule can fire.
    let store = h
        .store(LeasePolicy {
            lease_duration: secs(3600),
            ..suite_policy()
        })
        .await;
    register_all(&store, &["w1", "w2"]).await;
    let short = create(
        &store,
        spec(crate::task::NewTask {
            timeout_minutes: Some(1),
            ..crate::task::NewTask::new("short")
        }),
    )
    .await;
    let long = create(&store, plain("long")).await;
    let claimed = claim_some(&store, &request_task("w1", short.id)).await;
    claim_some(&store, &request_task("w2", long.id)).await;
    h.advance_clock(&store, secs(90)).await;
    let report = store.sweep().await.expect("sweep");
    assert!(
        report.timed_out.is_empty(),
        "within the grace period nothing times out: {report:?}"
    );
    assert_status(
        &get(&store, short.id).await,
        TaskStatus::Running,
        "past its limit but within the grace",
    );
    h.advance_clock(&store, secs(31)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.timed_out,
        vec![short.id],
        "past limit + grace the task times out: {report:?}"
    );
    let timed_out = get(&store, short.id).await;
    assert_status(&timed_out, TaskStatus::Timeout, "an overdue task");
    assert_eq!(
        timed_out.error_details.map(|e| e.code),
        Some("timeout".to_string()),
        "a timed out task says so"
    );
    assert!(timed_out.completed_at.is_some(), "a timed out task has completed_at");
    assert_status(
        &get(&store, long.id).await,
        TaskStatus::Running,
        "a task within its 30 minutes",
    );
    assert_lease_lost(
        store.extend_lease(claimed.lease_token()).await,
        "extend_lease after the timeout",
    );
    assert_lease_lost(
        store.finish(claimed.lease_token(), completed()).await,
        "finish(completed) after the timeout",
    );
    let again = store.sweep().await.expect("sweep");
    assert!(again.timed_out.is_empty(), "a task times out once: {again:?}");
}
