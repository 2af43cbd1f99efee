//! Checks of the task lifecycle: create, read, claim, finish, retries, and
//! the rule that nothing leaves a terminal status.

use serde_json::json;

use super::support::*;
use super::StoreHarness;
use crate::store::prelude::*;
use crate::task::{ErrorDetails, NewTask, TaskId, TaskStatus, TerminalStatus};
use crate::trajectory::Trajectory;

/// A created task is `pending` with every default and no run state, and
/// reads back identically; unknown ids are `NotFound`.
pub async fn create_and_get_defaults<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let spec = spec(NewTask {
        agent_config: Some(object(json!({"model": "gpt-4o-mini", "temperature": 0.2}))),
        metadata: Some(object(json!({"experiment": "baseline"}))),
        callback_url: Some("https://example.com/hook".into()),
        ..NewTask::new("misconfig_app_hotel_res-detection-1")
    });
    let created = create(&store, spec.clone()).await;
    assert_status(&created, TaskStatus::Pending, "a new task");
    assert_eq!(created.problem_id, spec.problem_id, "problem_id is stored as given");
    assert_eq!(created.parameters, spec.parameters, "parameters are stored as given");
    assert_eq!(created.parameters.priority, 5, "default priority");
    assert_eq!(created.parameters.max_steps, 30, "default max_steps");
    assert_eq!(created.attempt, 0, "a new task has not been attempted");
    assert_eq!(created.worker_id, None, "a new task has no worker");
    assert!(!created.cancel_requested, "a new task has no cancel request");
    assert_eq!(created.started_at, None, "a new task has not started");
    assert_eq!(created.completed_at, None, "a new task has not completed");
    assert_eq!(created.lease_expires_at, None, "a new task has no lease");
    assert_eq!(created.result, None, "a new task has no result");
    assert_eq!(created.error_details, None, "a new task has no error");
    assert_eq!(
        created.created_at, created.updated_at,
        "a new task was last updated when created"
    );

    let read = get(&store, created.id).await;
    assert_eq!(read, created, "get_task returns what create_task returned");

    let other = create(&store, plain("other")).await;
    assert_ne!(other.id, created.id, "every task gets its own id");
    assert_not_found(store.get_task(TaskId::new_v4()).await, "get_task of an unknown id");
}

/// `create_tasks` creates every task, returns them in the order given, and
/// accepts an empty batch.
pub async fn create_tasks_in_order<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let problems = ["p-a", "p-b", "p-c", "p-d", "p-e"];
    let specs = problems
        .iter()
        .enumerate()
        .map(|(i, p)| prioritized(p, i as i64))
        .collect();
    let created = store.create_tasks(specs).await.expect("create_tasks failed");
    assert_eq!(created.len(), problems.len(), "create_tasks returns one task per spec");
    for (i, (task, problem)) in created.iter().zip(problems).enumerate() {
        assert_eq!(task.problem_id, problem, "create_tasks keeps the order of the specs");
        assert_eq!(task.parameters.priority, i as u8, "each task keeps its own parameters");
        assert_status(task, TaskStatus::Pending, "a task from create_tasks");
        assert_eq!(&get(&store, task.id).await, task, "each created task reads back");
    }
    let distinct: std::collections::HashSet<TaskId> = ids(&created).into_iter().collect();
    assert_eq!(distinct.len(), problems.len(), "create_tasks gives distinct ids");
    let empty = store.create_tasks(Vec::new()).await.expect("an empty create_tasks");
    assert!(empty.is_empty(), "an empty batch creates nothing");
    let page = store.list_tasks(&TaskQuery::default()).await.expect("list_tasks");
    assert_eq!(page.total, problems.len() as u64, "exactly the batch was created");
}

/// A claim moves the task to `running` with worker, attempt 1, start time
/// and a lease of `lease_duration`; the same task is never claimed twice.
pub async fn claim_sets_running_state<H: StoreHarness>(h: &H) {
    let policy = suite_policy();
    let store = h.store(policy).await;
    register_all(&store, &["w1", "w2"]).await;
    let created = create(&store, plain("p")).await;
    let claimed = claim_some(&store, &request("w1")).await;
    assert_eq!(claimed.id, created.id, "the only task is claimed");
    assert_status(&claimed, TaskStatus::Running, "a claimed task");
    assert_eq!(
        claimed.worker_id.as_deref(),
        Some("w1"),
        "a claimed task names its worker"
    );
    assert_eq!(claimed.attempt, 1, "the first claim is attempt 1");
    assert!(!claimed.cancel_requested, "a claimed task has no cancel request");
    let started = claimed.started_at.expect("a claimed task has started_at");
    assert!(started >= claimed.created_at, "started_at is not before created_at");
    let lease = claimed.lease_expires_at.expect("a claimed task has a lease");
    assert_close(
        lease,
        started + chrono::TimeDelta::from_std(policy.lease_duration).expect("small duration"),
        "the lease lasts lease_duration from the claim",
    );
    assert_eq!(
        get(&store, created.id).await,
        claimed,
        "get_task shows the claimed state"
    );
    assert_eq!(claimed.lease_token().attempt, 1, "the lease token carries the attempt");
    claim_none(&store, &request("w2"), "a running task is never claimed again").await;
    claim_none(&store, &request_task("w2", created.id), "claiming a running task by id").await;
}

/// `finish` records each terminal status with its result and error details.
pub async fn finish_records_terminal_status<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    for status in [
        TerminalStatus::Completed,
        TerminalStatus::Failed,
        TerminalStatus::Timeout,
        TerminalStatus::Cancelled,
    ] {
        let task = create(&store, plain("p")).await;
        let claimed = claim_some(&store, &request_task("w1", task.id)).await;
        let report = outcome(status);
        let finished = store
            .finish(claimed.lease_token(), report.clone())
            .await
            .unwrap_or_else(|e| panic!("finish {status:?} failed: {e}"));
        let context = format!("after finish({status:?})");
        assert_status(&finished, status.into(), &context);
        assert_eq!(finished.result, report.result, "{context}: the result is stored");
        assert_eq!(
            finished.error_details, report.error,
            "{context}: the error details are stored"
        );
        assert_eq!(finished.attempt, 1, "{context}: the attempt is kept");
        assert_eq!(
            finished.worker_id.as_deref(),
            Some("w1"),
            "{context}: the worker is kept"
        );
        let completed_at = finished.completed_at.expect("a finished task has completed_at");
        assert!(
            completed_at >= finished.started_at.expect("started_at is kept"),
            "{context}: completed_at is not before started_at"
        );
        assert_eq!(
            get(&store, task.id).await,
            finished,
            "{context}: get_task shows the finished state"
        );
    }
}

/// Nothing leaves a terminal status: no claim, cancel, worker write or sweep
/// changes a finished task.
pub async fn terminal_status_is_final<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2"]).await;
    let task = create(&store, retrying("p", 3)).await;
    let claimed = claim_some(&store, &request("w1")).await;
    let lease = claimed.lease_token();
    let finished = store.finish(lease, completed()).await.expect("finish completed");
    assert_already_terminal(
        store.cancel_task(task.id).await,
        TaskStatus::Completed,
        "cancel of a completed task",
    );
    claim_none(&store, &request("w2"), "a completed task is not claimable").await;
    claim_none(
        &store,
        &request_task("w2", task.id),
        "a completed task is not claimable by id",
    )
    .await;
    assert_lease_lost(store.extend_lease(lease).await, "extend_lease after finish");
    assert_lease_lost(
        store
            .append_logs(
                lease,
                vec![crate::log::NewLogEntry::new(crate::log::LogLevel::Info, "late")],
            )
            .await,
        "append_logs after finish",
    );
    assert_lease_lost(
        store
            .save_trajectory(
                lease,
                Trajectory {
                    task_id: task.id,
                    ..Default::default()
                },
            )
            .await,
        "save_trajectory after finish",
    );
    assert_lease_lost(
        store.finish(lease, failed("late")).await,
        "finish(failed) after finish(completed)",
    );
    h.advance_clock(&store, secs(4 * 3600)).await;
    let report = store.sweep().await.expect("sweep");
    assert!(
        !report.timed_out.contains(&task.id)
            && !report.requeued.contains(&task.id)
            && !report.failed.contains(&task.id),
        "a sweep must not touch a completed task: {report:?}"
    );
    let after = get(&store, task.id).await;
    assert_status(
        &after,
        TaskStatus::Completed,
        "a completed task after every refused write",
    );
    assert_eq!(after.result, finished.result, "the result is untouched");

    // Four hours of silence made w1 offline; a heartbeat makes it live again, so it may claim. (Busy: over HTTP
    // an idle worker's heartbeat may be handed a task.)
    store
        .heartbeat(&beat("w1", crate::worker::WorkerStatus::Busy, None))
        .await
        .expect("heartbeat");
    let cancelled = create(&store, plain("p")).await;
    store.cancel_task(cancelled.id).await.expect("cancel pending");
    claim_none(
        &store,
        &request_task("w1", cancelled.id),
        "a cancelled task is not claimable",
    )
    .await;
    assert_status(
        &get(&store, cancelled.id).await,
        TaskStatus::Cancelled,
        "a cancelled task stays cancelled",
    );
}

/// Replaying a finish that already landed (same attempt, same status)
/// returns the task unchanged; a different status is refused.
pub async fn finish_replay_is_idempotent<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    let w = register(&store, "w1", "default").await;
    create(&store, plain("p")).await;
    let claimed = claim_some(&store, &request(&w.id)).await;
    let first = store
        .finish(claimed.lease_token(), completed())
        .await
        .expect("first finish");
    let replay = store
        .finish(claimed.lease_token(), completed())
        .await
        .expect("a replayed finish must be acknowledged");
    assert_eq!(replay, first, "a replayed finish returns the task unchanged");
    assert_eq!(
        get(&store, claimed.id).await,
        first,
        "a replayed finish changes nothing"
    );
    let worker = store.get_worker(&w.id).await.expect("get_worker");
    assert_eq!(worker.tasks_completed, 1, "a replayed finish is not counted twice");
    assert_lease_lost(
        store
            .finish(claimed.lease_token(), outcome(TerminalStatus::Failed))
            .await,
        "finish with another status after the task completed",
    );
    assert_lease_lost(
        store
            .finish(claimed.lease_token(), outcome(TerminalStatus::Cancelled))
            .await,
        "finish(cancelled) after the task completed",
    );
    assert_status(
        &get(&store, claimed.id).await,
        TaskStatus::Completed,
        "after refused finishes",
    );
}

/// `finish(failed)` with retries left requeues the task (keeping the
/// failure as error details); the last allowed attempt's failure is final.
pub async fn failed_finish_requeues_while_retries_remain<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1", "w2", "w3"]).await;
    let task = create(&store, retrying("p", 1)).await;
    let first = claim_some(&store, &request("w1")).await;
    assert_eq!(first.attempt, 1, "first attempt");
    let requeued = store
        .finish(first.lease_token(), failed("cluster_down"))
        .await
        .expect("finish(failed) with a retry left");
    assert_status(&requeued, TaskStatus::Pending, "a failure with retries left requeues");
    assert_eq!(requeued.attempt, 1, "a requeue keeps the attempt count");
    assert_eq!(requeued.worker_id, None, "a requeued task has no worker");
    assert_eq!(requeued.started_at, None, "a requeued task has no start time");
    assert_eq!(requeued.lease_expires_at, None, "a requeued task has no lease");
    assert_eq!(requeued.completed_at, None, "a requeued task is not completed");
    assert_eq!(
        requeued.error_details,
        Some(ErrorDetails::new("cluster_down", "failure cluster_down")),
        "a requeued task keeps the failure"
    );
    assert_eq!(get(&store, task.id).await, requeued, "get_task shows the requeue");
    assert_lease_lost(
        store.finish(first.lease_token(), completed()).await,
        "finish of attempt 1 after its requeue",
    );

    let second = claim_some(&store, &request("w2")).await;
    assert_eq!(second.id, task.id, "the requeued task is claimed again");
    assert_eq!(second.attempt, 2, "the second claim is attempt 2");
    assert_eq!(second.worker_id.as_deref(), Some("w2"), "the new worker holds it");
    assert_eq!(
        second.error_details.as_ref().map(|e| e.code.as_str()),
        Some("cluster_down"),
        "the earlier failure is kept until the task finishes"
    );
    let done = store
        .finish(second.lease_token(), failed("cluster_down_again"))
        .await
        .expect("finish(failed) on the last attempt");
    assert_status(&done, TaskStatus::Failed, "a failure with no retries left is final");
    assert_eq!(
        done.error_details.map(|e| e.code),
        Some("cluster_down_again".to_string()),
        "the last failure wins"
    );
    assert!(done.completed_at.is_some(), "a failed task has completed_at");
    claim_none(&store, &request("w3"), "a finally failed task is not claimable").await;
}

/// Unknown task and worker ids are `NotFound` everywhere; claiming an
/// unknown task id finds nothing.
pub async fn unknown_ids_are_not_found<H: StoreHarness>(h: &H) {
    let store = h.store(suite_policy()).await;
    register_all(&store, &["w1"]).await;
    let id = TaskId::new_v4();
    let lease = crate::task::LeaseToken {
        task_id: id,
        attempt: 1,
    };
    assert_not_found(store.get_task(id).await, "get_task");
    assert_not_found(store.cancel_task(id).await, "cancel_task");
    assert_not_found(store.extend_lease(lease).await, "extend_lease");
    assert_not_found(
        store
            .append_logs(
                lease,
                vec![crate::log::NewLogEntry::new(crate::log::LogLevel::Info, "x")],
            )
            .await,
        "append_logs",
    );
    assert_not_found(
        store
            .save_trajectory(
                lease,
                Trajectory {
                    task_id: id,
                    ..Default::default()
                },
            )
            .await,
        "save_trajectory",
    );
    assert_not_found(store.finish(lease, completed()).await, "finish");
    assert_not_found(store.get_logs(id, &Default::default()).await, "get_logs");
    assert_not_found(store.get_trajectory(id).await, "get_trajectory");
    assert_not_found(store.get_worker("nobody").await, "get_worker");
    assert_not_found(
        store
            .heartbeat(&beat("nobody", crate::worker::WorkerStatus::Idle, None))
            .await,
        "heartbeat",
    );
    assert_not_found(store.deregister_worker("nobody").await, "deregister_worker");
    claim_none(&store, &request_task("w1", id), "claiming an unknown task id").await;
}
