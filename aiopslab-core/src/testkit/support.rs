//! Small builders and assertions shared by the conformance checks.
//!
//! The checks panic on failure (they are tests), so these helpers do too,
//! always with a message naming what was expected.

use serde_json::Value;
use std::fmt::Debug;
use std::time::Duration;

use crate::error::StoreError;
use crate::policy::LeasePolicy;
use crate::store::{ClaimRequest, StoreResult, TaskStore};
use crate::task::{
    ErrorDetails, JsonObject, NewTask, Task, TaskId, TaskOutcome, TaskResult, TaskSpec, TaskStatus, TerminalStatus,
};
use crate::worker::{Worker, WorkerHeartbeat, WorkerRegistration, WorkerStatus};

/// The policy most checks use: 60 s leases, offline after 90 s, 60 s
/// timeout grace, no dispatch delay. Generous values, so nothing expires
/// unless a check moves the clock on purpose.
pub fn suite_policy() -> LeasePolicy {
    LeasePolicy {
        lease_duration: secs(60),
        worker_offline_after: secs(90),
        timeout_grace: secs(60),
        dispatch_delay: Duration::ZERO,
    }
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Validates a request the checks know to be valid.
pub fn spec(new: NewTask) -> TaskSpec {
    new.validate().expect("the suite only builds valid task requests")
}

/// A spec for `problem` with every default.
pub fn plain(problem: &str) -> TaskSpec {
    spec(NewTask::new(problem))
}

/// A spec for `problem` with a priority.
pub fn prioritized(problem: &str, priority: i64) -> TaskSpec {
    spec(NewTask {
        priority: Some(priority),
        ..NewTask::new(problem)
    })
}

/// A spec for `problem` with `max_retries` retries.
pub fn retrying(problem: &str, max_retries: i64) -> TaskSpec {
    spec(NewTask {
        max_retries: Some(max_retries),
        ..NewTask::new(problem)
    })
}

/// A spec for `problem` routed to `backend_type`.
pub fn on_backend(problem: &str, backend_type: &str) -> TaskSpec {
    spec(NewTask {
        backend_type: Some(backend_type.to_string()),
        ..NewTask::new(problem)
    })
}

/// Turns a JSON literal into an object (panics on anything else).
pub fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// A claim by `worker_id` for backend type `default`, any problem.
pub fn request(worker_id: &str) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker_id.to_string(),
        backend_type: "default".to_string(),
        supported_problems: None,
        task_id: None,
        max_tasks: 1,
    }
}

/// A claim of exactly `task_id` by `worker_id` (backend type `default`).
pub fn request_task(worker_id: &str, task_id: TaskId) -> ClaimRequest {
    ClaimRequest {
        task_id: Some(task_id),
        ..request(worker_id)
    }
}

/// A result with a recognisable metric.
pub fn sample_result() -> TaskResult {
    TaskResult {
        logs: vec!["episode finished".to_string()],
        metrics: object(serde_json::json!({"duration_seconds": 12.5, "steps_taken": 7})),
        output: object(serde_json::json!({"solution": "Yes"})),
    }
}

/// An outcome with `status`, the sample result, and error details for anything but completed.
pub fn outcome(status: TerminalStatus) -> TaskOutcome {
    let error = match status {
        TerminalStatus::Completed => None,
        TerminalStatus::Failed => Some(ErrorDetails::new("backend_error", "the cluster went away")),
        TerminalStatus::Timeout => Some(ErrorDetails::new("timeout", "the run exceeded its limit")),
        TerminalStatus::Cancelled => Some(ErrorDetails::new("cancelled", "a client cancelled the task")),
    };
    TaskOutcome {
        status,
        result: Some(sample_result()),
        error,
    }
}

/// A completed outcome.
pub fn completed() -> TaskOutcome {
    outcome(TerminalStatus::Completed)
}

/// A failed outcome with a specific error code.
pub fn failed(code: &str) -> TaskOutcome {
    TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: Some(ErrorDetails::new(code, format!("failure {code}"))),
    }
}

/// Creates one task, panicking with context on error.
pub async fn create<S: TaskStore>(store: &S, spec: TaskSpec) -> Task {
    store.create_task(spec).await.expect("create_task failed")
}

/// Claims, expecting a task.
pub async fn claim_some<S: TaskStore>(store: &S, request: &ClaimRequest) -> Task {
    store
        .claim(request)
        .await
        .expect("claim failed")
        .unwrap_or_else(|| panic!("claim {request:?} returned no task, expected one"))
}

/// Claims, expecting nothing.
pub async fn claim_none<S: TaskStore>(store: &S, request: &ClaimRequest, why: &str) {
    if let Some(task) = store.claim(request).await.expect("claim failed") {
        panic!(
            "claim {request:?} returned task {} ({}), expected none: {why}",
            task.id, task.problem_id
        );
    }
}

/// Reads a task, panicking with context on error.
pub async fn get<S: TaskStore>(store: &S, id: TaskId) -> Task {
    store.get_task(id).await.expect("get_task failed")
}

/// Registers a worker with default capabilities.
pub async fn register<S: TaskStore>(store: &S, id: &str, backend_type: &str) -> Worker {
    store
        .register_worker(WorkerRegistration::new(id, backend_type))
        .await
        .unwrap_or_else(|e| panic!("register_worker {id} failed: {e}"))
}

/// Registers each of `ids` with backend type `default`: only registered, live workers may claim.
pub async fn register_all<S: TaskStore>(store: &S, ids: &[&str]) {
    for id in ids {
        register(store, id, "default").await;
    }
}

/// A heartbeat of `worker_id` in `status`.
pub fn beat(worker_id: &str, status: WorkerStatus, current_task_id: Option<TaskId>) -> WorkerHeartbeat {
    WorkerHeartbeat {
        current_task_id,
        ..WorkerHeartbeat::new(worker_id, status)
    }
}

/// Asserts a task's status, naming the context.
#[track_caller]
pub fn assert_status(task: &Task, status: TaskStatus, context: &str) {
    assert_eq!(
        task.status, status,
        "{context}: task {} should be {status}, is {} (task: {task:?})",
        task.id, task.status
    );
}

/// Asserts `result` is [`StoreError::LeaseLost`].
#[track_caller]
pub fn assert_lease_lost<T: Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("{what}: expected StoreError::LeaseLost, got {other:?}"),
    }
}

/// Asserts `result` is [`StoreError::NotFound`].
#[track_caller]
pub fn assert_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{what}: expected StoreError::NotFound, got {other:?}"),
    }
}

/// Asserts `result` is [`StoreError::AlreadyTerminal`] with `status`.
#[track_caller]
pub fn assert_already_terminal<T: Debug>(result: StoreResult<T>, status: TaskStatus, what: &str) {
    match result {
        Err(StoreError::AlreadyTerminal { status: got, .. }) if got == status => {}
        other => panic!("{what}: expected StoreError::AlreadyTerminal({status}), got {other:?}"),
    }
}

/// Asserts `result` is [`StoreError::Invalid`].
#[track_caller]
pub fn assert_invalid<T: Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
    }
}

/// Asserts two instants are at most one second apart (stores may round).
#[track_caller]
pub fn assert_close(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>, what: &str) {
    let gap = (a - b).abs();
    assert!(
        gap <= chrono::TimeDelta::seconds(1),
        "{what}: {a} and {b} differ by {gap}"
    );
}

/// The ids of `tasks`, in order.
pub fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|task| task.id).collect()
}
