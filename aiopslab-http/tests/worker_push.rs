//! Store events pushed to remote workers over `GET /workers/{id}/events`:
//! an idle worker over HTTP claims new work, and a running one stops a
//! cancelled run, at once — with its polling and heartbeats set far longer
//! than the bounds asserted here, so only the push can meet them. A real
//! server on a real socket over a `MemoryStore`, real worker runtimes over
//! `HttpStore`.

mod remote_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiopslab_core::{FleetView, MemoryStore, NewTask, SimulatedConfig, TaskApi, TaskStatus, WorkerStatus};
use aiopslab_http::client::{ApiClient, HttpStore};
use aiopslab_http::server::ApiConfig;
use remote_support::{start_worker, stop_all, wait_for_status, worker_config, RunningServer, PROBLEM};

/// A worker that, without push, would notice new work after a minute and a
/// cancel after 20 s (its heartbeat, at most a third of the 60 s lease).
fn slow_polling_config(id: &str) -> aiopslab_core::WorkerConfig {
    let mut config = worker_config(id);
    config.poll_interval = Duration::from_secs(60);
    config.heartbeat_interval = Duration::from_secs(20);
    config
}

/// Waits until `id` is registered and idle, then a little more for its
/// event stream to connect.
async fn wait_idle(store: &MemoryStore, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(store.get_worker(id).await.map(|w| w.status), Ok(WorkerStatus::Idle)) {
        assert!(Instant::now() < deadline, "worker {id} never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http_worker_claims_new_work_at_once() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let client = HttpStore::new(&server.url(), None).unwrap();
    let worker = start_worker(client, SimulatedConfig::instant(2), slow_polling_config("pushed-1"));
    wait_idle(&store, "pushed-1").await;

    let api = ApiClient::new(&server.url(), None).unwrap();
    for round in 0..3 {
        let created = Instant::now();
        let task = api
            .create_task(NewTask::new(PROBLEM).validate().unwrap())
            .await
            .unwrap();
        let done = wait_for_status(store.as_ref(), task.id, TaskStatus::Completed, Duration::from_secs(10)).await;
        let waited = created.elapsed();
        assert_eq!(done.worker_id.as_deref(), Some("pushed-1"));
        assert!(
            waited < Duration::from_secs(3),
            "round {round}: the idle worker took {waited:?} to claim and finish a new task (its poll is 60 s)"
        );
    }
    stop_all(worker, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_running_http_worker_at_once() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let client = HttpStore::new(&server.url(), None).unwrap();
    // 100 steps of 200 ms: a 20 s run.
    let slow = SimulatedConfig::default()
        .with_steps(100)
        .with_step_delay(Duration::from_millis(200));
    let worker = start_worker(client, slow, slow_polling_config("pushed-2"));
    wait_idle(&store, "pushed-2").await;

    let api = ApiClient::new(&server.url(), None).unwrap();
    let task = api
        .create_task(
            NewTask {
                max_steps: Some(100),
                ..NewTask::new(PROBLEM)
            }
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    wait_for_status(store.as_ref(), task.id, TaskStatus::Running, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    api.cancel_task(task.id).await.unwrap();
    wait_for_status(store.as_ref(), task.id, TaskStatus::Cancelled, Duration::from_secs(15)).await;
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "the run stopped {waited:?} after the cancel (its heartbeat is 20 s)"
    );
    stop_all(worker, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_the_worker_protocols() {
    let store = Arc::new(MemoryStore::new());
    let config = ApiConfig::default()
        .with_client_token("client-secret")
        .with_worker_token("worker-secret");
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/workers/w-1/events", server.url());

    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401, "no token");
    let client_token = http.get(&url).bearer_auth("client-secret").send().await.unwrap();
    assert_eq!(client_token.status(), 403, "the client token on a worker route");
    let bad_id = http
        .get(format!("{}/workers/bad%20id/events", server.url()))
        .bearer_auth("worker-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400, "an id off the worker-id pattern");

    let mut stream = http.get(&url).bearer_auth("worker-secret").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let task = store
        .create_task(NewTask::new(PROBLEM).validate().unwrap())
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: store") && seen.contains(r#"data: {"event":"task_available","backend_type":"default"}"#),
        "{seen:?} (task {})",
        task.id
    );
    drop(stream);
    server.stop().await;
}

/// An idle heartbeat is handed a task only by a worker without an open event stream: one that holds it open is
/// woken when work arrives and claims by itself, so its heartbeat stays a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_heartbeat_hands_out_work_only_to_a_worker_without_an_event_stream() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let http = reqwest::Client::new();
    for id in ["listening", "plain"] {
        let registered = http
            .post(format!("{}/workers/register", server.url()))
            .json(&serde_json::json!({"id": id, "backend_type": "default"}))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
    }
    let stream = http
        .get(format!("{}/workers/listening/events", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    store
        .create_task(NewTask::new(PROBLEM).validate().unwrap())
        .await
        .unwrap();
    let beat = |id: &'static str| {
        let http = http.clone();
        let url = format!("{}/workers/heartbeat", server.url());
        async move {
            let answer: serde_json::Value = http
                .post(url)
                .json(&serde_json::json!({"worker_id": id, "status": "idle"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        }
    };
    let listening = beat("listening").await;
    assert!(listening["next_task"].is_null(), "{listening}");
    let plain = beat("plain").await;
    assert_eq!(plain["next_task"]["problem_id"], PROBLEM, "{plain}");
    drop(stream);
    server.stop().await;
}

/// A batch of tasks is one wake-up, dealt to two workers; each claim that gets all it asked for passes it on, so
/// the whole idle fleet starts on the batch at once, not the two woken workers one task after another (their
/// polling is set to minutes here, so only passed-on wake-ups can start the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spreads_over_the_idle_fleet_at_once() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let ids: Vec<String> = (1..=6).map(|i| format!("fleet-{i}")).collect();
    let mut workers = Vec::new();
    for id in &ids {
        let store = HttpStore::new(&server.url(), None).unwrap();
        let mut config = slow_polling_config(id);
        config.pushed_poll_interval = Duration::from_secs(600);
        // Runs of 3 s: a worker woken late could not catch up within the bound below.
        workers.push(start_worker(
            store,
            SimulatedConfig::default()
                .with_steps(1)
                .with_step_delay(Duration::from_secs(3)),
            config,
        ));
    }
    for id in &ids {
        wait_idle(&store, id).await;
    }
    // One create call: one wake-up for the six tasks.
    let specs = (0..6).map(|_| NewTask::new(PROBLEM).validate().unwrap()).collect();
    let created = store.create_tasks(specs).await.unwrap();
    let started = Instant::now();
    let running_query =
        aiopslab_core::TaskQuery::new(aiopslab_core::TaskFilter::default().with_status(Some(TaskStatus::Running)));
    loop {
        let running = store.list_tasks(&running_query).await.unwrap().total;
        if running == created.len() as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "all six tasks should run at once within 2 s; {running} do"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (stop, handle) in workers {
        stop.cancel();
        handle.await.expect("worker task").expect("worker stops cleanly");
    }
    server.stop().await;
}
