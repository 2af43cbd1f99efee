//! [`ApiClient`]'s reads for people's tools (the `aiopslab` command's client
//! commands), against the real router on a real socket with a remote worker
//! on the simulated backend:
//!
//! - `follow_logs` hands out every entry in append order, then the `end`
//!   event with the terminal status, then nothing; an unknown task is the
//!   server's 404 before any stream;
//! - `get_group` and `list_problems` read the group summary and the catalog;
//! - `export_stream` streams the JSON Lines export, one line per episode;
//! - every failure carries the server's answer (status, code, message), and a
//!   server that cannot be reached carries none.

mod remote_support;

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::catalog::{self, TaskType};
use aiopslab_core::{LogQuery, MemoryStore, NewTask, SimulatedConfig, StoreError, TaskStatus};
use aiopslab_http::client::{ApiClient, ExportQuery, HttpStore, LogEvent};
use aiopslab_http::server::ApiConfig;
use remote_support::{start_worker, stop_all, wait_for_status, worker_config, RunningServer, PROBLEM};

/// A server on a memory store that follows logs every 20 ms, and a client of it.
async fn server() -> (Arc<MemoryStore>, RunningServer, ApiClient) {
    let store = Arc::new(MemoryStore::new());
    let config = ApiConfig {
        follow_poll_interval: Duration::from_millis(20),
        ..ApiConfig::default()
    };
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), config).await;
    let api = ApiClient::new(&server.url(), None).unwrap();
    (store, server, api)
}

fn task() -> aiopslab_core::TaskSpec {
    NewTask::new(PROBLEM).validate().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_ends_with_the_terminal_status() {
    let (_store, server, api) = server().await;
    let created = api.create_task(task()).await.unwrap();
    // Follow before the run starts: the stream waits for the entries.
    let mut follow = api.follow_logs(created.id, &LogQuery::default()).await.unwrap();
    let worker = start_worker(
        HttpStore::new(&server.url(), None).unwrap(),
        SimulatedConfig::instant(3).with_step_delay(Duration::from_millis(50)),
        worker_config("follow-1"),
    );
    let mut entries = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), follow.next()).await {
            Ok(Ok(Some(LogEvent::Entry(entry)))) => entries.push(entry),
            Ok(Ok(Some(other))) => break other,
            other => panic!("expected an entry or the end, got {other:?}"),
        }
    };
    assert_eq!(end, LogEvent::End(TaskStatus::Completed));
    assert!(follow.next().await.unwrap().is_none(), "nothing after the end");
    for n in 1..=3 {
        let step = format!("step {n}/3:");
        assert_eq!(
            entries.iter().filter(|e| e.message.starts_with(&step)).count(),
            1,
            "{step} in {entries:#?}"
        );
    }
    assert!(entries.windows(2).all(|w| w[0].id < w[1].id), "append order");
    assert!(entries.iter().all(|e| e.task_id == created.id));
    // The same entries as a plain read.
    let read = api.get_logs(created.id, &LogQuery::default()).await.unwrap();
    assert_eq!(read, entries);

    // Followed from a later entry on, a finished task's log is its tail and the end at once.
    let last = entries[entries.len() - 2].id;
    let mut tail = api
        .follow_logs(created.id, &LogQuery::default().with_after_id(Some(last)))
        .await
        .unwrap();
    assert!(matches!(tail.next().await.unwrap(), Some(LogEvent::Entry(e)) if e.id == entries[entries.len() - 1].id));
    assert_eq!(tail.next().await.unwrap(), Some(LogEvent::End(TaskStatus::Completed)));

    // An unknown task: the server's 404, before any stream.
    let error = api
        .follow_logs(uuid::Uuid::new_v4(), &LogQuery::default())
        .await
        .expect_err("unknown task");
    assert!(
        matches!(error.error, StoreError::NotFound { entity: "task", .. }),
        "{error:?}"
    );
    let answer = error.server.expect("the server answered");
    assert_eq!((answer.status, answer.code.as_str()), (404, "not_found"));
    stop_all(worker, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_problems_and_the_export_stream() {
    let (store, server, api) = server().await;
    let worker = start_worker(
        HttpStore::new(&server.url(), None).unwrap(),
        SimulatedConfig::instant(2),
        worker_config("export-1"),
    );
    let tasks = api.create_tasks(vec![task(), task()]).await.unwrap();
    let group_id = tasks[0].group_id.expect("a batch is a group");
    for t in &tasks {
        wait_for_status(store.as_ref(), t.id, TaskStatus::Completed, Duration::from_secs(20)).await;
    }

    let group = api.get_group(group_id).await.unwrap();
    assert_eq!(group.total, 2);
    assert_eq!(group.by_status.get(&TaskStatus::Completed), Some(&2));
    assert_eq!(group.rewards.len(), 2);
    let missing = api.get_group(uuid::Uuid::new_v4()).await.expect_err("no such group");
    assert_eq!(missing.server.map(|s| s.code), Some("not_found".to_string()));

    let detection = api.list_problems(Some(TaskType::Detection), None).await.unwrap();
    assert_eq!(
        detection.len(),
        catalog::filter(None, Some(TaskType::Detection)).count()
    );
    assert!(detection.iter().all(|p| p.task_type == TaskType::Detection));
    assert!(detection.iter().any(|p| p.id == PROBLEM));
    let all = api.list_problems(None, None).await.unwrap();
    assert_eq!(all.len(), catalog::PROBLEMS.len());

    let mut stream = api
        .export_stream(&ExportQuery {
            status: Some(TaskStatus::Completed),
            task_type: Some(TaskType::Detection),
            ..ExportQuery::default()
        })
        .await
        .unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l["group_id"] == group_id.to_string() && l["messages"].is_array()));
    let one = ExportQuery {
        limit: Some(1),
        ..ExportQuery::default()
    };
    let mut stream = api.export_stream(&one).await.unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 1);

    // A refused filter: the server's 400, with its code and message.
    let refused = api
        .export_stream(&ExportQuery {
            limit: Some(0),
            ..ExportQuery::default()
        })
        .await
        .expect_err("limit 0 is refused");
    let answer = refused.server.expect("the server answered");
    assert_eq!((answer.status, answer.code.as_str()), (400, "invalid_query"));
    assert!(answer.message.contains("limit"), "{answer:?}");
    stop_all(worker, server).await;
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_gives_no_answer() {
    // Bind a port, then free it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let error = api.list_problems(None, None).await.expect_err("nothing listens");
    assert!(!error.is_refusal(), "{error:?}");
    assert!(error.error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("cannot connect"), "{error}");
}
