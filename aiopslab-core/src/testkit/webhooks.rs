//! Checks of the webhook outbox: a delivery on every terminal path of a task with a `callback_url` (and none on a
//! requeue or without one), claims that lease deliveries, attempt records and their transitions, and concurrent
//! deliverers that never get the same delivery twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::support::*;
use super::StoreHarness;
use crate::error::StoreError;
use crate::policy::LeasePolicy;
use crate::store::prelude::*;
use crate::store::TaskStore;
use crate::task::{NewTask, Task, TaskId, TaskSpec, TaskStatus, TerminalStatus};
use crate::webhook::{WebhookAttemptReport, WebhookDelivery, WebhookStatus};

/// The callback URL the checks use.
pub const HOOK_URL: &str = "https://hooks.example.com/aiopslab?src=suite";

/// A spec for `problem` with the suite's callback URL and `max_retries` retries.
pub fn with_callback(problem: &str, max_retries: i64) -> TaskSpec {
    spec(NewTask {
        callback_url: Some(HOOK_URL.to_string()),
        max_retries: Some(max_retries),
        ..NewTask::new(problem)
    })
}

/// A failed attempt to retry after `retry_after`.
pub fn attempt_failed(status_code: Option<u16>, retry_after: Option<Duration>) -> WebhookAttemptReport {
    WebhookAttemptReport {
        status_code,
        error: Some(match status_code {
            Some(code) => format!("receiver answered {code}"),
            None => "connection refused".to_string(),
        }),
        duration_ms: 12,
        retry_after,
    }
}

/// A successful attempt.
pub fn attempt_delivered() -> WebhookAttemptReport {
    WebhookAttemptReport {
        status_code: Some(204),
        error: None,
        duration_ms: 7,
        retry_after: None,
    }
}

async fn webhooks<S: TaskStore>(store: &S, task_id: TaskId) -> Vec<WebhookDelivery> {
    store.list_webhooks(task_id).await.expect("list_webhooks")
}

/// Asserts `task` (read right after its terminal transition) has exactly one fresh pending delivery of itself.
async fn assert_one_delivery<S: TaskStore>(store: &S, task: &Task, what: &str) -> WebhookDelivery {
    assert!(
        task.status.is_terminal(),
        "{what}: the task should be terminal, is {}",
        task.status
    );
    let deliveries = webhooks(store, task.id).await;
    assert_eq!(
        deliveries.len(),
        1,
        "{what}: one delivery per terminal task, got {deliveries:?}"
    );
    let delivery = deliveries.into_iter().next().expect("one delivery");
    assert_eq!(delivery.task_id, task.id, "{what}: the delivery names its task");
    assert_eq!(delivery.url, HOOK_URL, "{what}: the delivery goes to the callback URL");
    assert_eq!(
        delivery.status,
        WebhookStatus::Pending,
        "{what}: a new delivery is pending"
    );
    assert!(delivery.attempts.is_empty(), "{what}: a new delivery has no attempts");
    assert_eq!(delivery.delivered_at, None, "{what}: a new delivery is not delivered");
    assert_eq!(
        delivery.next_attempt_at,
        Some(delivery.created_at),
        "{what}: a new delivery is due at once"
    );
    let expected = serde_json::to_value(task).expect("a task serializes");
    assert_eq!(
        delivery.payload, expected,
        "{what}: the payload is the task as serialized when it ended"
    );
    delivery
}

/// A worker's terminal reports (completed, failed without retries, timeout, cancelled) and cancelling a pending
/// task each write one pending delivery of the task as it ended; a replayed finish writes no second one.
pub async fn webhook_queued_on_finish_and_cancel<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["w"]).await;
    for status in [
        TerminalStatus::Completed,
        TerminalStatus::Failed,
        TerminalStatus::Timeout,
        TerminalStatus::Cancelled,
    ] {
        let task = create(&store, with_callback(&format!("hook-{status:?}"), 0)).await;
        assert!(
            webhooks(&store, task.id).await.is_empty(),
            "a pending task has no delivery"
        );
        let claimed = claim_some(&store, &request_task("w", task.id)).await;
        assert!(
            webhooks(&store, task.id).await.is_empty(),
            "a running task has no delivery"
        );
        let done = store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("finish");
        assert_eq!(done, get(&store, task.id).await, "finish returns the stored task");
        assert_one_delivery(&store, &done, &format!("finish {status:?}")).await;
        let replay = store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("a replayed finish is acknowledged");
        assert_eq!(replay, done, "a replayed finish changes nothing");
        assert_one_delivery(&store, &done, &format!("finish {status:?} replayed")).await;
    }
    let pending = create(&store, with_callback("hook-cancel", 0)).await;
    store.cancel_task(pending.id).await.expect("cancel_task");
    let cancelled = get(&store, pending.id).await;
    assert_status(&cancelled, TaskStatus::Cancelled, "a cancelled pending task");
    assert_one_delivery(&store, &cancelled, "cancel of a pending task").await;

    let running = create(&store, with_callback("hook-cancel-running", 0)).await;
    claim_some(&store, &request_task("w", running.id)).await;
    store.cancel_task(running.id).await.expect("cancel_task");
    assert!(
        webhooks(&store, running.id).await.is_empty(),
        "a cancel request on a running task is not terminal: no delivery"
    );
}

/// The sweep's terminal transitions (timeout, a lost worker with no retry left, a lost worker of a task whose
/// cancel was requested) write one delivery each, in the same step.
pub async fn webhook_queued_by_sweep<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["w"]).await;
    let lost = create(&store, with_callback("hook-lost", 0)).await;
    let cancelled = create(&store, with_callback("hook-lost-cancelled", 0)).await;
    claim_some(&store, &request_task("w", lost.id)).await;
    claim_some(&store, &request_task("w", cancelled.id)).await;
    store.cancel_task(cancelled.id).await.expect("cancel_task");
    harness.advance_clock(&store, secs(61)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(report.failed, vec![lost.id], "the lost task fails: {report:?}");
    let lost = get(&store, lost.id).await;
    assert_one_delivery(&store, &lost, "sweep: worker lost, no retry left").await;
    let cancelled = get(&store, cancelled.id).await;
    assert_status(&cancelled, TaskStatus::Cancelled, "a lost task with a cancel request");
    assert_one_delivery(&store, &cancelled, "sweep: worker lost, cancel requested").await;

    // A timeout: leases long enough that only the run's time limit (1 minute + 60 s grace) can end it.
    let store = harness
        .store(LeasePolicy {
            lease_duration: secs(3600),
            ..suite_policy()
        })
        .await;
    register_all(&store, &["w"]).await;
    let overdue = create(
        &store,
        spec(NewTask {
            callback_url: Some(HOOK_URL.to_string()),
            timeout_minutes: Some(1),
            ..NewTask::new("hook-timeout")
        }),
    )
    .await;
    claim_some(&store, &request_task("w", overdue.id)).await;
    harness.advance_clock(&store, secs(121)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.timed_out,
        vec![overdue.id],
        "the overdue task times out: {report:?}"
    );
    let overdue = get(&store, overdue.id).await;
    assert_one_delivery(&store, &overdue, "sweep: timeout").await;
    let again = store.sweep().await.expect("sweep");
    assert!(again.is_empty(), "a second sweep changes nothing: {again:?}");
    assert_one_delivery(&store, &overdue, "sweep: timeout, swept again").await;
}

/// Requeues (a failed attempt or a lost worker with retries left) are not terminal and write nothing; the final
/// outcome after them writes exactly one delivery. A task without a `callback_url` never gets one.
pub async fn webhook_not_queued_on_requeue_or_without_callback<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    register_all(&store, &["w"]).await;
    let task = create(&store, with_callback("hook-retry", 2)).await;
    let first = claim_some(&store, &request_task("w", task.id)).await;
    let requeued = store
        .finish(first.lease_token(), failed("backend_error"))
        .await
        .expect("finish");
    assert_status(&requeued, TaskStatus::Pending, "a failure with retries left");
    assert!(
        webhooks(&store, task.id).await.is_empty(),
        "a requeue after a failure writes no delivery"
    );
    claim_some(&store, &request_task("w", task.id)).await;
    harness.advance_clock(&store, secs(61)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.requeued,
        vec![task.id],
        "the lost attempt is requeued: {report:?}"
    );
    assert!(
        webhooks(&store, task.id).await.is_empty(),
        "a requeue after a lost worker writes no delivery"
    );
    let last = claim_some(&store, &request_task("w", task.id)).await;
    assert_eq!(last.attempt, 3, "the third attempt");
    let done = store.finish(last.lease_token(), completed()).await.expect("finish");
    assert_one_delivery(&store, &done, "the final outcome after two requeues").await;

    let silent = create(&store, plain("no-hook")).await;
    let claimed = claim_some(&store, &request_task("w", silent.id)).await;
    store.finish(claimed.lease_token(), completed()).await.expect("finish");
    let cancelled = create(&store, plain("no-hook-cancelled")).await;
    store.cancel_task(cancelled.id).await.expect("cancel_task");
    for id in [silent.id, cancelled.id] {
        assert!(
            webhooks(&store, id).await.is_empty(),
            "a task without callback_url gets no delivery"
        );
    }
    let claimed = store.claim_webhooks(100, secs(30)).await.expect("claim_webhooks");
    assert_eq!(
        claimed.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        vec![task.id],
        "the outbox holds only the one delivery"
    );
    assert_not_found(
        store.list_webhooks(TaskId::new_v4()).await,
        "list_webhooks of an unknown task",
    );
}

/// `claim_webhooks` hands out due deliveries oldest first, at most `limit`, and hides each one it handed out
/// until its lease passes; then the delivery is due again (a deliverer that died mid-delivery loses nothing).
pub async fn claim_webhooks_leases_deliveries<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    assert_none_due(&store, 10, "an empty outbox").await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let task = create(&store, with_callback(&format!("lease-{i}"), 0)).await;
        store.cancel_task(task.id).await.expect("cancel_task");
        tasks.push(task.id);
    }
    let first = store.claim_webhooks(2, secs(30)).await.expect("claim_webhooks");
    assert_eq!(
        first.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        tasks[..2].to_vec(),
        "the two oldest deliveries, in order"
    );
    for delivery in &first {
        assert_eq!(
            delivery.status,
            WebhookStatus::Pending,
            "a claimed delivery stays pending"
        );
        assert!(delivery.attempts.is_empty(), "no attempt yet");
        let until = delivery
            .next_attempt_at
            .expect("a claimed delivery has a next attempt time");
        assert_close(
            until,
            delivery.created_at + chrono::TimeDelta::seconds(30),
            "the lease is 30 s",
        );
    }
    let second = store.claim_webhooks(10, secs(30)).await.expect("claim_webhooks");
    assert_eq!(
        second.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        vec![tasks[2]],
        "leased deliveries are hidden; the third is still due"
    );
    assert_none_due(&store, 10, "every delivery is leased").await;
    harness.advance_clock(&store, secs(20)).await;
    assert_none_due(&store, 10, "still leased after 20 s").await;
    harness.advance_clock(&store, secs(11)).await;
    let again = store.claim_webhooks(10, secs(30)).await.expect("claim_webhooks");
    assert_eq!(
        again.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        tasks,
        "once the lease passed every delivery is due again, oldest first"
    );
    assert_none_due(&store, 0, "a limit of 0 claims nothing").await;
}

/// Each recorded attempt is numbered and stamped; a failure with a retry delay keeps the delivery pending and due
/// after the delay, a success delivers it, a failure without a delay fails it; neither is handed out again.
pub async fn webhook_attempts_move_deliveries<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    let task = create(&store, with_callback("attempts", 0)).await;
    store.cancel_task(task.id).await.expect("cancel_task");
    let other = create(&store, with_callback("attempts-fail", 0)).await;
    store.cancel_task(other.id).await.expect("cancel_task");
    let claimed = store.claim_webhooks(10, secs(30)).await.expect("claim_webhooks");
    assert_eq!(claimed.len(), 2, "two due deliveries");
    let (delivery, doomed) = (&claimed[0], &claimed[1]);
    assert_eq!(delivery.task_id, task.id, "oldest first");

    let retried = store
        .record_webhook_attempt(delivery.id, attempt_failed(Some(503), Some(secs(10))))
        .await
        .expect("record_webhook_attempt");
    assert_eq!(retried.id, delivery.id, "the same delivery");
    assert_eq!(
        retried.status,
        WebhookStatus::Pending,
        "a failure with a retry delay stays pending"
    );
    assert_eq!(retried.attempts.len(), 1, "one attempt recorded");
    let attempt = &retried.attempts[0];
    assert_eq!(attempt.attempt, 1, "the first attempt is number 1");
    assert_eq!(attempt.status_code, Some(503), "the receiver's status is kept");
    assert_eq!(
        attempt.error.as_deref(),
        Some("receiver answered 503"),
        "the error is kept"
    );
    assert_eq!(attempt.duration_ms, 12, "the duration is kept");
    assert_close(
        retried.next_attempt_at.expect("due again later"),
        attempt.attempted_at + chrono::TimeDelta::seconds(10),
        "the next attempt is due after the retry delay",
    );
    assert_eq!(retried.delivered_at, None, "not delivered");
    assert_eq!(
        webhooks(&store, task.id).await,
        vec![retried.clone()],
        "list_webhooks shows the attempt"
    );

    harness.advance_clock(&store, secs(5)).await;
    assert_none_due(
        &store,
        10,
        "not due before the retry delay passed (and the other one is leased)",
    )
    .await;
    harness.advance_clock(&store, secs(6)).await;
    let due = store.claim_webhooks(1, secs(30)).await.expect("claim_webhooks");
    assert_eq!(due.len(), 1, "due again after the delay");
    assert_eq!(due[0].id, delivery.id, "the retried delivery");
    assert_eq!(
        due[0].attempts.len(),
        1,
        "a claimed delivery carries its attempts so far"
    );

    let delivered = store
        .record_webhook_attempt(delivery.id, attempt_delivered())
        .await
        .expect("record_webhook_attempt");
    assert_eq!(delivered.status, WebhookStatus::Delivered, "a success delivers");
    assert_eq!(
        delivered.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2],
        "attempts are numbered in order"
    );
    assert_eq!(delivered.attempts[1].error, None, "the successful attempt has no error");
    assert_eq!(delivered.attempts[1].status_code, Some(204), "its status code");
    let delivered_at = delivered.delivered_at.expect("a delivered delivery has delivered_at");
    assert_eq!(
        delivered_at, delivered.attempts[1].attempted_at,
        "delivered when the attempt succeeded"
    );
    assert_eq!(delivered.next_attempt_at, None, "a delivered delivery is not due again");
    assert!(
        delivered.attempts[0].attempted_at <= delivered.attempts[1].attempted_at,
        "attempts are stamped in order"
    );

    let given_up = store
        .record_webhook_attempt(doomed.id, attempt_failed(None, None))
        .await
        .expect("record_webhook_attempt");
    assert_eq!(
        given_up.status,
        WebhookStatus::Failed,
        "a failure without a retry delay fails"
    );
    assert_eq!(given_up.next_attempt_at, None, "a failed delivery is not due again");
    assert_eq!(given_up.attempts.len(), 1, "its attempt is recorded");
    assert_eq!(
        given_up.attempts[0].status_code, None,
        "no status code: the receiver did not answer"
    );

    harness.advance_clock(&store, secs(3600)).await;
    assert_none_due(&store, 10, "delivered and failed deliveries are never handed out again").await;
    match store.record_webhook_attempt(i64::MAX, attempt_delivered()).await {
        Err(StoreError::NotFound { entity: "webhook", .. }) => {}
        other => panic!("record_webhook_attempt of an unknown delivery: expected NotFound(webhook), got {other:?}"),
    }
    let listed = webhooks(&store, other.id).await;
    assert_eq!(listed, vec![given_up], "list_webhooks shows the final state");
}

/// Late reports never undo an outcome: when a deliverer's lease lapsed and a second one delivered, the first one's
/// failure is recorded but the delivery stays delivered (and is not handed out again); a failure reported on a
/// failed delivery keeps it failed, while a success reported on it delivers it (the receiver did get it).
pub async fn late_webhook_reports_never_regress<H: StoreHarness>(harness: &H) {
    let store = harness.store(suite_policy()).await;
    let task = create(&store, with_callback("late", 0)).await;
    store.cancel_task(task.id).await.expect("cancel_task");
    let first = store.claim_webhooks(1, secs(30)).await.expect("claim_webhooks");
    assert_eq!(first.len(), 1, "one due delivery");
    let id = first[0].id;
    // The first deliverer stalls past its lease; a second one claims the delivery and delivers it.
    harness.advance_clock(&store, secs(31)).await;
    let second = store.claim_webhooks(1, secs(30)).await.expect("claim_webhooks");
    assert_eq!(
        second.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![id],
        "due again after the lease"
    );
    let delivered = store
        .record_webhook_attempt(id, attempt_delivered())
        .await
        .expect("record_webhook_attempt");
    assert_eq!(
        delivered.status,
        WebhookStatus::Delivered,
        "the second deliverer delivered it"
    );
    let late = store
        .record_webhook_attempt(id, attempt_failed(Some(500), Some(secs(5))))
        .await
        .expect("record_webhook_attempt");
    assert_eq!(
        late.status,
        WebhookStatus::Delivered,
        "a late failure does not undo a delivery"
    );
    assert_eq!(late.delivered_at, delivered.delivered_at, "delivered_at is kept");
    assert_eq!(late.next_attempt_at, None, "a delivered delivery is not due again");
    assert_eq!(late.attempts.len(), 2, "the late attempt is still recorded");
    assert_eq!(late.attempts[1].attempt, 2, "numbered after the others");
    harness.advance_clock(&store, secs(60)).await;
    assert_none_due(&store, 10, "a delivered delivery is never handed out again").await;

    let other = create(&store, with_callback("late-failed", 0)).await;
    store.cancel_task(other.id).await.expect("cancel_task");
    let claimed = store.claim_webhooks(1, secs(30)).await.expect("claim_webhooks");
    let id = claimed.first().expect("one due delivery").id;
    let failed = store
        .record_webhook_attempt(id, attempt_failed(None, None))
        .await
        .expect("record_webhook_attempt");
    assert_eq!(failed.status, WebhookStatus::Failed, "given up");
    let still = store
        .record_webhook_attempt(id, attempt_failed(Some(502), Some(secs(5))))
        .await
        .expect("record_webhook_attempt");
    assert_eq!(
        still.status,
        WebhookStatus::Failed,
        "a late failure does not revive a failed delivery"
    );
    assert_eq!(still.next_attempt_at, None, "a failed delivery is not due again");
    let revived = store
        .record_webhook_attempt(id, attempt_delivered())
        .await
        .expect("record_webhook_attempt");
    assert_eq!(revived.status, WebhookStatus::Delivered, "a late success delivers");
    assert!(revived.delivered_at.is_some(), "with delivered_at");
    assert_eq!(revived.attempts.len(), 3, "every attempt is recorded");
}

/// Concurrent deliverers claiming from one outbox never get the same delivery twice and leave none behind.
pub async fn concurrent_webhook_claims_exactly_once<H: StoreHarness>(harness: &H) {
    let store = Arc::new(harness.store(suite_policy()).await);
    let specs: Vec<TaskSpec> = (0..120).map(|i| with_callback(&format!("race-{i}"), 0)).collect();
    let tasks = store.create_tasks(specs).await.expect("create_tasks");
    for task in &tasks {
        store.cancel_task(task.id).await.expect("cancel_task");
    }
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_webhooks(7, secs(300)).await.expect("claim_webhooks");
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|d| d.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for handle in handles {
        for id in handle.await.expect("a deliverer panicked") {
            total += 1;
            assert!(seen.insert(id), "delivery {id} was handed to two deliverers");
        }
    }
    assert_eq!(total, tasks.len(), "every delivery was claimed exactly once");
}

/// Claims up to `limit` deliveries with a 30 s lease and asserts none was due.
async fn assert_none_due<S: TaskStore>(store: &S, limit: u32, why: &str) {
    let claimed = store.claim_webhooks(limit, secs(30)).await.expect("claim_webhooks");
    assert!(claimed.is_empty(), "{why}: got {} deliveries", claimed.len());
}
