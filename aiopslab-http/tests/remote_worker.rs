//! A remote worker over HTTP: the real router on a real socket, the real
//! worker runtime with [`HttpStore`] and the simulated backend; the tasks are
//! created and read back with [`ApiClient`](aiopslab_http::client::ApiClient).
//!
//! - a task runs to completion with its log, trajectory and result;
//! - the server goes down mid-run and comes back on the same port (same
//!   store): the result the worker finished meanwhile is delivered, nothing
//!   lost or duplicated;
//! - the worker token is enforced on the worker protocol.

mod remote_support;

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::RuntimeError;
use aiopslab_core::store::prelude::*;
use aiopslab_core::{LogQuery, MemoryStore, NewTask, SimulatedConfig, StoreError, TaskStatus, WorkerStatus};
use aiopslab_http::client::{ApiClient, HttpStore};
use aiopslab_http::server::ApiConfig;
use remote_support::{start_worker, wait_for_status, worker_config, RunningServer, PROBLEM};

fn step_messages(steps: u32) -> Vec<String> {
    (1..=steps).map(|n| format!("step {n}/{steps}:")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_runs_a_task_to_completion() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let client = HttpStore::new(&server.url(), None).unwrap();
    let api = ApiClient::new(&server.url(), None).unwrap();

    let (stop_worker, worker) = start_worker(client, SimulatedConfig::instant(3), worker_config("remote-1"));
    // Everything through the HTTP clients: creation, reads.
    let created = api
        .create_task(NewTask::new(PROBLEM).validate().unwrap())
        .await
        .unwrap();
    assert_eq!(created.status, TaskStatus::Pending);

    wait_for_status(
        store.as_ref(),
        created.id,
        TaskStatus::Completed,
        Duration::from_secs(20),
    )
    .await;
    let task = api.get_task(created.id).await.unwrap();
    assert_eq!(task.worker_id.as_deref(), Some("remote-1"));
    assert_eq!(task.attempt, 1);
    let result = task.result.expect("completed task has a result");
    assert_eq!(result.metrics["steps_taken"], 3);
    assert!(result.output.contains_key("solution"));

    let logs = api.get_logs(created.id, &LogQuery::default()).await.unwrap();
    for step in step_messages(3) {
        assert_eq!(
            logs.iter().filter(|e| e.message.starts_with(&step)).count(),
            1,
            "{step} in {logs:#?}"
        );
    }
    assert!(
        logs.windows(2).all(|w| w[0].id < w[1].id),
        "log entries in append order"
    );
    let trajectory = api.get_trajectory(created.id).await.unwrap().expect("trajectory saved");
    assert_eq!(trajectory.task_id, created.id);
    assert_eq!(trajectory.llm_calls.len(), 3);
    assert!(trajectory.reward.is_some());

    // The store behind the server saw exactly what the client reported.
    assert_eq!(store.get_task(created.id).await.unwrap().status, TaskStatus::Completed);
    let worker_row = api.get_worker("remote-1").await.unwrap();
    assert_eq!(worker_row.tasks_completed, 1);

    stop_worker.cancel();
    worker.await.unwrap().expect("worker stops cleanly");
    let worker_row = store.get_worker("remote-1").await.unwrap();
    assert_eq!(worker_row.status, WorkerStatus::Offline, "deregistered at shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_finished_while_the_server_is_down_is_delivered_when_it_returns() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let client = HttpStore::new(&server.url(), None)
        .unwrap()
        .with_request_timeout(Duration::from_secs(2));

    // 4 steps of 400 ms: the run takes about 1.6 s.
    let steps = 4;
    let backend = SimulatedConfig::default()
        .with_steps(steps)
        .with_step_delay(Duration::from_millis(400));
    let (stop_worker, worker) = start_worker(client, backend, worker_config("remote-restart"));
    let id = store
        .create_task(NewTask::new(PROBLEM).validate().unwrap())
        .await
        .unwrap()
        .id;
    wait_for_status(store.as_ref(), id, TaskStatus::Running, Duration::from_secs(10)).await;

    // The server goes away mid-run; the worker keeps running the task.
    let addr = server.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = store.get_task(id).await.unwrap();
    assert_eq!(
        during.status,
        TaskStatus::Running,
        "the run finished while the server was down, so its result cannot have landed yet"
    );
    assert!(during.result.is_none());

    // Back on the same port with the same store: the worker's retries deliver.
    let server = RunningServer::start(store.clone(), addr, ApiConfig::default()).await;
    let task = wait_for_status(store.as_ref(), id, TaskStatus::Completed, Duration::from_secs(30)).await;
    assert_eq!(task.attempt, 1, "never requeued: the lease held");
    assert_eq!(task.worker_id.as_deref(), Some("remote-restart"));
    assert_eq!(task.result.expect("result delivered").metrics["steps_taken"], steps);
    let trajectory = store.get_trajectory(id).await.unwrap().expect("trajectory delivered");
    assert_eq!(trajectory.llm_calls.len(), steps as usize);
    let logs = store.get_logs(id, &LogQuery::default()).await.unwrap();
    for step in step_messages(steps) {
        assert_eq!(
            logs.iter().filter(|e| e.message.starts_with(&step)).count(),
            1,
            "{step} exactly once in {logs:#?}"
        );
    }
    assert_eq!(store.get_worker("remote-restart").await.unwrap().tasks_completed, 1);

    stop_worker.cancel();
    worker.await.unwrap().expect("worker stops cleanly");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_protocol_requires_the_worker_token() {
    let store = Arc::new(MemoryStore::new());
    let config = ApiConfig::default()
        .with_client_token("client-secret")
        .with_worker_token("worker-secret");
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), config).await;

    // A wrong worker token: the runtime's registration is refused for good.
    let wrong = HttpStore::new(&server.url(), Some("not-the-token".into())).unwrap();
    let (_stop, worker) = start_worker(wrong, SimulatedConfig::instant(1), worker_config("intruder"));
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker gives up at once")
        .unwrap();
    match outcome {
        Err(RuntimeError::Register {
            source: StoreError::Unauthorized(_),
            ..
        }) => {}
        other => panic!("expected an Unauthorized registration error, got {other:?}"),
    }
    assert!(matches!(
        store.get_worker("intruder").await,
        Err(StoreError::NotFound { .. })
    ));

    // No token at all, and the client token on a worker route: refused too.
    let none = HttpStore::new(&server.url(), None).unwrap();
    let heartbeat = aiopslab_core::WorkerHeartbeat::new("intruder", WorkerStatus::Idle);
    assert!(matches!(
        none.heartbeat(&heartbeat).await,
        Err(StoreError::Unauthorized(_))
    ));
    let client_token_as_worker = HttpStore::new(&server.url(), Some("client-secret".into())).unwrap();
    assert!(matches!(
        client_token_as_worker
            .claim(&aiopslab_core::ClaimRequest::new("intruder", "default"))
            .await,
        Err(StoreError::Unauthorized(_))
    ));

    // The right tokens: the worker registers and runs a task; the client
    // token creates it and reads it back.
    let good = HttpStore::new(&server.url(), Some("worker-secret".into())).unwrap();
    let api = ApiClient::new(&server.url(), Some("client-secret".into())).unwrap();
    api.stats().await.expect("the client token reads stats");
    let (stop, worker) = start_worker(good, SimulatedConfig::instant(1), worker_config("trusted"));
    let id = api
        .create_task(NewTask::new(PROBLEM).validate().unwrap())
        .await
        .unwrap()
        .id;
    wait_for_status(store.as_ref(), id, TaskStatus::Completed, Duration::from_secs(20)).await;
    assert_eq!(api.get_task(id).await.unwrap().status, TaskStatus::Completed);
    stop.cancel();
    worker.await.unwrap().expect("worker stops cleanly");
    server.stop().await;
}
