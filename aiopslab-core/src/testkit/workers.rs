//! Checks of workers: registration, liveness, heartbeats, deregistration,
//! counters and listing.

use serde_json::json;

use super::support::*;
use super::StoreHarness;
use crate::error::StoreError;
use crate::query::WorkerFilter;
use crate::store::prelude::*;
use crate::task::{TaskStatus, TerminalStatus};
use crate::worker::{WorkerCapabilities, WorkerRegistration, WorkerStatus};

/// Registration stores the worker as `idle` with its capabilities and
/// metadata; invalid registrations are refused.
pub async fn register_and_get_worker<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let registration = WorkerRegistration {
        id: "worker-001-kind".into(),
        backend_type: "kind".into(),
        capabilities: WorkerCapabilities {
            max_parallel_tasks: 2,
            supported_problems: Some(vec!["pa".into(), "pb".into()]),
        },
        metadata: object(json!({"host": "node-1", "version": "0.1.0", "kind_cluster": "aiopslab-1"})),
        instance_id: None,
    };
    let worker = store
        .register_worker(registration.clone())
        .await
        .expect("register_worker");
    assert_eq!(worker.id, registration.id, "id");
    assert_eq!(worker.backend_type, "kind", "backend_type");
    assert_eq!(worker.status, WorkerStatus::Idle, "a registered worker is idle");
    assert_eq!(
        worker.capabilities, registration.capabilities,
        "capabilities are stored"
    );
    assert_eq!(worker.metadata, registration.metadata, "metadata is stored");
    assert_eq!(worker.current_task_id, None, "no current task");
    assert_eq!(
        (worker.tasks_completed, worker.tasks_failed),
        (0, 0),
        "counters start at zero"
    );
    assert_eq!(
        worker.registered_at, worker.last_heartbeat,
        "registration counts as a heartbeat"
    );
    assert_eq!(
        store.get_worker(&worker.id).await.expect("get_worker"),
        worker,
        "get_worker returns what register_worker returned"
    );
    assert_invalid(
        store.register_worker(WorkerRegistration::new("  ", "default")).await,
        "a blank worker id",
    );
    let mut zero_slots = WorkerRegistration::new("w-zero", "default");
    zero_slots.capabilities.max_parallel_tasks = 0;
    assert_invalid(store.register_worker(zero_slots).await, "max_parallel_tasks 0");
    assert_not_found(
        store.get_worker("w-zero").await,
        "a refused registration stores nothing",
    );
}

/// A live worker's id cannot be registered again (409); once it has been
/// silent past `worker_offline_after` it can.
pub async fn register_refused_while_alive<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    let alive = |result: Result<crate::worker::Worker, StoreError>, what: &str| match result {
        Err(StoreError::WorkerAlive(id)) => assert_eq!(id, "w1", "{what}: the error names the worker"),
        other => panic!("{what}: expected StoreError::WorkerAlive, got {other:?}"),
    };
    alive(
        store.register_worker(WorkerRegistration::new("w1", "default")).await,
        "registering a live id again",
    );
    h.advance_clock(&store, secs(60)).await;
    alive(
        store.register_worker(WorkerRegistration::new("w1", "default")).await,
        "60 s of silence is below the 90 s threshold",
    );
    store
        .heartbeat(&beat("w1", WorkerStatus::Idle, None))
        .await
        .expect("heartbeat");
    h.advance_clock(&store, secs(80)).await;
    alive(
        store.register_worker(WorkerRegistration::new("w1", "kind")).await,
        "80 s after its last heartbeat",
    );
    h.advance_clock(&store, secs(11)).await;
    let again = store
        .register_worker(WorkerRegistration::new("w1", "kind"))
        .await
        .expect("a worker silent past the threshold can be replaced");
    assert_eq!(again.status, WorkerStatus::Idle, "the replacement is idle");
    assert_eq!(again.backend_type, "kind", "the replacement's registration wins");
    assert_eq!(
        again.registered_at, again.last_heartbeat,
        "re-registration is a heartbeat"
    );
}

/// Deregistration marks the worker offline at once; it may then register
/// again, keeping its counters.
pub async fn deregister_then_register_again<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    create(&store, plain("p")).await;
    let task = claim_some(&store, &request("w1")).await;
    store.finish(task.lease_token(), completed()).await.expect("finish");
    store.deregister_worker("w1").await.expect("deregister_worker");
    let gone = store.get_worker("w1").await.expect("get_worker");
    assert_eq!(gone.status, WorkerStatus::Offline, "a deregistered worker is offline");
    let back = store
        .register_worker(WorkerRegistration::new("w1", "default"))
        .await
        .expect("an offline worker may register again");
    assert_eq!(back.status, WorkerStatus::Idle, "back to idle");
    assert_eq!(back.tasks_completed, 1, "counters survive re-registration");
}

/// Heartbeats record status and current task; unknown workers are
/// `NotFound` and an `offline` heartbeat is invalid.
pub async fn heartbeat_updates_worker<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    assert_not_found(
        store.heartbeat(&beat("w-unknown", WorkerStatus::Idle, None)).await,
        "a heartbeat of an unknown worker",
    );
    assert_invalid(
        store.heartbeat(&beat("w1", WorkerStatus::Offline, None)).await,
        "a heartbeat reporting offline",
    );
    let task = create(&store, plain("p")).await;
    claim_some(&store, &request("w1")).await;
    h.advance_clock(&store, secs(10)).await;
    // Read after the clock move, so it compares with what the heartbeat writes.
    let before = store.get_worker("w1").await.expect("get_worker");
    let ack = store
        .heartbeat(&beat("w1", WorkerStatus::Busy, Some(task.id)))
        .await
        .expect("heartbeat");
    assert!(ack.acknowledged, "acknowledged");
    assert!(ack.cancelled_task_ids.is_empty(), "nothing was cancelled");
    assert!(ack.next_task.is_none(), "a store never hands a task in a heartbeat");
    let worker = store.get_worker("w1").await.expect("get_worker");
    assert_eq!(worker.status, WorkerStatus::Busy, "the heartbeat's status is recorded");
    assert_eq!(
        worker.current_task_id,
        Some(task.id),
        "the heartbeat's current task is recorded"
    );
    assert!(
        worker.last_heartbeat > before.last_heartbeat,
        "last_heartbeat moved forward ({} -> {})",
        before.last_heartbeat,
        worker.last_heartbeat
    );
    assert_eq!(
        worker.registered_at, before.registered_at,
        "a heartbeat does not re-register"
    );
}

/// The sweep marks workers silent past the threshold offline, once; a
/// heartbeat brings an offline worker back.
pub async fn sweep_marks_silent_workers_offline<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    register(&store, "w2", "default").await;
    h.advance_clock(&store, secs(50)).await;
    store
        .heartbeat(&beat("w2", WorkerStatus::Idle, None))
        .await
        .expect("heartbeat");
    let report = store.sweep().await.expect("sweep");
    assert!(report.workers_offline.is_empty(), "50 s of silence is fine: {report:?}");
    h.advance_clock(&store, secs(50)).await;
    let report = store.sweep().await.expect("sweep");
    assert_eq!(
        report.workers_offline,
        vec!["w1".to_string()],
        "only w1 was silent for 100 s: {report:?}"
    );
    let w1 = store.get_worker("w1").await.expect("get_worker");
    let w2 = store.get_worker("w2").await.expect("get_worker");
    assert_eq!(w1.status, WorkerStatus::Offline, "a silent worker is offline");
    assert_eq!(w2.status, WorkerStatus::Idle, "a beating worker is not");
    let again = store.sweep().await.expect("sweep");
    assert!(
        again.workers_offline.is_empty(),
        "a worker is marked offline once: {again:?}"
    );
    store
        .heartbeat(&beat("w1", WorkerStatus::Idle, None))
        .await
        .expect("a late heartbeat");
    assert_eq!(
        store.get_worker("w1").await.expect("get_worker").status,
        WorkerStatus::Idle,
        "a heartbeat brings an offline worker back"
    );
}

/// Finishes count towards the worker: completed → `tasks_completed`;
/// failed (even when requeued) and timeout → `tasks_failed`; cancelled →
/// neither; a replayed finish counts once.
pub async fn worker_counters_follow_finishes<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w1", "default").await;
    let mut expected = (0, 0);
    for (status, max_retries, delta) in [
        (TerminalStatus::Completed, 0, (1, 0)),
        (TerminalStatus::Failed, 0, (0, 1)),
        (TerminalStatus::Timeout, 0, (0, 1)),
        (TerminalStatus::Cancelled, 0, (0, 0)),
        (TerminalStatus::Failed, 1, (0, 1)),
    ] {
        let task = create(&store, retrying("p", max_retries)).await;
        let claimed = claim_some(&store, &request_task("w1", task.id)).await;
        store
            .finish(claimed.lease_token(), outcome(status))
            .await
            .expect("finish");
        if max_retries == 0 {
            store
                .finish(claimed.lease_token(), outcome(status))
                .await
                .expect("a replayed finish");
        }
        expected = (expected.0 + delta.0, expected.1 + delta.1);
        let worker = store.get_worker("w1").await.expect("get_worker");
        assert_eq!(
            (worker.tasks_completed, worker.tasks_failed),
            expected,
            "(tasks_completed, tasks_failed) after finish({status:?}) with max_retries {max_retries}"
        );
    }
}

/// `list_workers` filters by status and backend type, sorted by id, with the total.
pub async fn list_workers_filters<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register(&store, "w-c", "default").await;
    register(&store, "w-a", "default").await;
    register(&store, "w-b", "kind").await;
    store.deregister_worker("w-c").await.expect("deregister_worker");
    store
        .heartbeat(&beat("w-b", WorkerStatus::Busy, None))
        .await
        .expect("heartbeat");
    let list = |status: Option<WorkerStatus>, backend_type: Option<&str>| {
        let filter = WorkerFilter {
            status,
            backend_type: backend_type.map(str::to_string),
        };
        let store = &store;
        async move {
            let page = store.list_workers(&filter).await.expect("list_workers");
            let ids: Vec<String> = page.workers.iter().map(|w| w.id.clone()).collect();
            assert_eq!(page.total, ids.len() as u64, "total counts the matches for {filter:?}");
            ids
        }
    };
    assert_eq!(list(None, None).await, ["w-a", "w-b", "w-c"], "every worker, by id");
    assert_eq!(list(Some(WorkerStatus::Idle), None).await, ["w-a"], "idle workers");
    assert_eq!(list(Some(WorkerStatus::Busy), None).await, ["w-b"], "busy workers");
    assert_eq!(
        list(Some(WorkerStatus::Offline), None).await,
        ["w-c"],
        "offline workers"
    );
    assert_eq!(
        list(None, Some("default")).await,
        ["w-a", "w-c"],
        "default backend workers"
    );
    assert_eq!(
        list(Some(WorkerStatus::Busy), Some("kind")).await,
        ["w-b"],
        "both filters"
    );
    assert!(
        list(Some(WorkerStatus::Idle), Some("kind")).await.is_empty(),
        "no idle kind worker"
    );
    assert!(list(None, Some("none")).await.is_empty(), "no worker of backend none");
}

/// Only registered, live workers claim: an unknown worker's claim is `NotFound` (entity `worker`), an offline
/// one's (deregistered, or silent past `worker_offline_after`) is refused naming `worker_id`; nothing is claimed
/// then, by backend or by task id. A heartbeat (or a new registration) makes the worker live again.
pub async fn claim_needs_a_registered_live_worker<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let task = create(&store, plain("p")).await;
    let refused_as_unknown = |result: Result<Option<crate::task::Task>, StoreError>, what: &str| match result {
        Err(StoreError::NotFound { entity: "worker", id }) => {
            assert_eq!(id, "w-ghost", "{what}: the error names the worker")
        }
        other => panic!("{what}: expected StoreError::NotFound for worker w-ghost, got {other:?}"),
    };
    refused_as_unknown(
        store.claim(&request("w-ghost")).await,
        "a claim by a worker that never registered",
    );
    refused_as_unknown(
        store.claim(&request_task("w-ghost", task.id)).await,
        "a claim of a given task by a worker that never registered",
    );
    assert_status(&get(&store, task.id).await, TaskStatus::Pending, "after refused claims");

    let refused_as_offline = |result: Result<Option<crate::task::Task>, StoreError>, what: &str| match result {
        Err(StoreError::Invalid(error)) => {
            assert_eq!(error.field, "worker_id", "{what}: the refusal names worker_id");
            assert!(
                error.message.contains("offline"),
                "{what}: the refusal says the worker is offline: {error}"
            );
        }
        other => panic!("{what}: expected StoreError::Invalid(worker_id: ... offline ...), got {other:?}"),
    };
    register(&store, "w1", "default").await;
    store.deregister_worker("w1").await.expect("deregister_worker");
    refused_as_offline(store.claim(&request("w1")).await, "a claim by a deregistered worker");
    refused_as_offline(
        store.claim(&request_task("w1", task.id)).await,
        "a claim of a given task by a deregistered worker",
    );
    assert_status(&get(&store, task.id).await, TaskStatus::Pending, "after refused claims");
    store
        .heartbeat(&beat("w1", WorkerStatus::Busy, None))
        .await
        .expect("heartbeat");
    let claimed = claim_some(&store, &request("w1")).await;
    assert_eq!(claimed.id, task.id, "a heartbeat made the worker live again");
    store.finish(claimed.lease_token(), completed()).await.expect("finish");

    let next = create(&store, plain("p")).await;
    h.advance_clock(&store, secs(91)).await;
    refused_as_offline(
        store.claim(&request("w1")).await,
        "a claim by a worker silent for 91 s (threshold 90 s), before any sweep",
    );
    register(&store, "w1", "default").await;
    assert_eq!(
        claim_some(&store, &request("w1")).await.id,
        next.id,
        "a new registration made it live again"
    );
}

/// Worker ids follow one pattern everywhere (1–128 ASCII letters, digits, `-`, `_`, `.`): registration refuses
/// `Bad Id!`, a NUL or an over-long id naming `id`, heartbeat and claim refuse them naming `worker_id`, and
/// nothing is stored.
pub async fn worker_ids_follow_one_pattern<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    create(&store, plain("p")).await;
    let long = "w".repeat(129);
    for bad in ["Bad Id!", "w\u{0}1", "tab\there", "ünicode", "a/b", long.as_str()] {
        match store.register_worker(WorkerRegistration::new(bad, "default")).await {
            Err(StoreError::Invalid(error)) => {
                assert_eq!(error.field, "id", "registering {bad:?}: the error names id");
                assert!(
                    error.message.contains(crate::worker::WORKER_ID_PATTERN),
                    "registering {bad:?}: the error says the pattern: {error}"
                );
            }
            other => panic!("registering {bad:?}: expected StoreError::Invalid(id), got {other:?}"),
        }
        let named_worker_id = |result: Result<(), StoreError>, what: &str| match result {
            Err(StoreError::Invalid(error)) => assert_eq!(error.field, "worker_id", "{what} {bad:?}"),
            other => panic!("{what} {bad:?}: expected StoreError::Invalid(worker_id), got {other:?}"),
        };
        named_worker_id(
            store.heartbeat(&beat(bad, WorkerStatus::Idle, None)).await.map(|_| ()),
            "a heartbeat of",
        );
        named_worker_id(store.claim(&request(bad)).await.map(|_| ()), "a claim by");
    }
    assert_eq!(
        store
            .list_workers(&WorkerFilter::default())
            .await
            .expect("list_workers")
            .total,
        0,
        "no refused registration was stored"
    );
    let longest = "w".repeat(128);
    for good in ["worker-001-kind", "W.1_a-b", longest.as_str()] {
        register(&store, good, "default").await;
        store
            .heartbeat(&beat(good, WorkerStatus::Busy, None))
            .await
            .unwrap_or_else(|e| panic!("a heartbeat of {good:?}: {e}"));
    }
    assert_eq!(
        claim_some(&store, &request("worker-001-kind"))
            .await
            .worker_id
            .as_deref(),
        Some("worker-001-kind"),
        "the quickstart's worker id claims"
    );
}
