//! The API suite: each endpoint's success and error paths, written against
//! any `TaskStore` (see `api_tests!`).

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::TaskStore;
use aiopslab_http::server::ApiConfig;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{app, app_with, Api};

pub const PROBLEM: &str = "misconfig_app_hotel_res-detection-1";

pub fn api(store: Arc<dyn TaskStore>) -> Api {
    Api::new(app(store))
}

async fn create(api: &Api, body: Value) -> Value {
    api.post("/tasks", body).await.ok(201)
}

async fn create_id(api: &Api, body: Value) -> String {
    create(api, body).await["id"].as_str().unwrap().to_string()
}

async fn register(api: &Api, id: &str, backend: &str) -> Value {
    api.post("/workers/register", json!({"id": id, "backend_type": backend}))
        .await
        .ok(201)
}

/// Claims the next task for `worker` over the worker protocol (`null` when none).
pub async fn claim(api: &Api, worker: &str) -> Value {
    api.post(
        "/workers/claim",
        json!({"worker_id": worker, "backend_type": "default"}),
    )
    .await
    .ok(200)["task"]
        .clone()
}

async fn running_task(api: &Api, worker: &str) -> (String, u64) {
    let id = create_id(api, json!({"problem_id": PROBLEM})).await;
    register(api, worker, "default").await;
    let task = claim(api, worker).await;
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["status"], "running");
    (id, task["attempt"].as_u64().unwrap())
}

async fn append(api: &Api, id: &str, attempt: u64, entries: Value) {
    api.post(
        &format!("/tasks/{id}/logs"),
        json!({"attempt": attempt, "entries": entries}),
    )
    .await
    .ok(204);
}

async fn finish(api: &Api, id: &str, attempt: u64, status: &str) -> Value {
    api.post(
        &format!("/tasks/{id}/finish"),
        json!({"attempt": attempt, "outcome": {"status": status, "result": {
            "logs": ["Starting problem execution...", "Problem solved successfully"],
            "metrics": {"duration_seconds": 120, "steps_taken": 15},
            "output": {"solution": "Misconfiguration detected in deployment.yaml"}
        }}}),
    )
    .await
    .ok(200)
}

pub async fn create_task_applies_defaults(store: Arc<dyn TaskStore>) {
    let api = api(store);
    // The quickstart's request, verbatim.
    let task = create(
        &api,
        json!({
            "problem_id": PROBLEM,
            "agent_config": {"model": "gpt-4", "temperature": 0.7},
            "max_steps": 30,
            "timeout_minutes": 30
        }),
    )
    .await;
    assert_eq!(task["problem_id"], PROBLEM);
    assert_eq!(task["status"], "pending");
    assert!(Uuid::parse_str(task["id"].as_str().unwrap()).is_ok());
    assert!(task["created_at"].as_str().unwrap().ends_with('Z') || task["created_at"].as_str().unwrap().contains('+'));
    assert_eq!(
        task["parameters"]["agent_config"],
        json!({"model": "gpt-4", "temperature": 0.7})
    );
    assert_eq!(task["worker_id"], Value::Null);
    assert_eq!(task["attempt"], 0);

    let task = create(&api, json!({"problem_id": "custom-problem"})).await;
    let p = &task["parameters"];
    assert_eq!(
        (
            &p["max_steps"],
            &p["timeout_minutes"],
            &p["priority"],
            &p["backend_type"],
            &p["max_retries"]
        ),
        (&json!(30), &json!(30), &json!(5), &json!("default"), &json!(0))
    );
    assert_eq!(p["agent_config"], json!({}));
    assert_eq!(p["metadata"], json!({}));

    let id = task["id"].as_str().unwrap();
    let read = api.get(&format!("/tasks/{id}")).await.ok(200);
    assert_eq!(read["status"], "pending");
    assert_eq!(read["parameters"], task["parameters"]);
    assert!(read.get("logs").is_none(), "no logs unless asked: {read}");
}

pub async fn create_task_rejects_bad_bodies(store: Arc<dyn TaskStore>) {
    let api = api(store.clone());
    let body = api
        .post("/tasks", json!({"problem_id": PROBLEM, "colour": "red"}))
        .await
        .error(400, "invalid_json");
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");

    for (field, value) in [
        ("max_steps", json!(0)),
        ("max_steps", json!(1001)),
        ("timeout_minutes", json!(181)),
        ("timeout_minutes", json!(0)),
        ("priority", json!(11)),
        ("priority", json!(-1)),
        ("max_retries", json!(-1)),
        ("callback_url", json!("ftp://example.com")),
        ("backend_type", json!("")),
    ] {
        let mut request = json!({"problem_id": PROBLEM});
        request[field] = value.clone();
        let body = api.post("/tasks", request).await.error(400, "validation_error");
        assert_eq!(body["details"]["field"], field, "{field}={value}: {body}");
    }
    let body = api
        .post("/tasks", json!({"problem_id": "  "}))
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "problem_id");

    // Malformed JSON, wrong types, missing field, not an object, empty body.
    api.raw("POST", "/tasks", r#"{"problem_id": "#)
        .await
        .error(400, "invalid_json");
    api.raw("POST", "/tasks", r#"{"problem_id": "p"} trailing"#)
        .await
        .error(400, "invalid_json");
    let body = api
        .post("/tasks", json!({"problem_id": 5}))
        .await
        .error(400, "invalid_json");
    assert_eq!(body["details"]["field"], "problem_id", "{body}");
    let body = api
        .post("/tasks", json!({"problem_id": PROBLEM, "max_steps": "ten"}))
        .await
        .error(400, "invalid_json");
    assert_eq!(body["details"]["field"], "max_steps", "{body}");
    let body = api
        .post("/tasks", json!({"problem_id": PROBLEM, "max_steps": 1.5}))
        .await
        .error(400, "invalid_json");
    assert_eq!(body["details"]["field"], "max_steps", "{body}");
    api.post("/tasks", json!({"problem_id": PROBLEM, "agent_config": [1]}))
        .await
        .error(400, "invalid_json");
    let body = api.post("/tasks", json!({})).await.error(400, "invalid_json");
    assert!(body["error"].as_str().unwrap().contains("problem_id"), "{body}");
    api.post("/tasks", json!([PROBLEM])).await.error(400, "invalid_json");
    api.raw("POST", "/tasks", "").await.error(400, "invalid_json");
    api.raw("POST", "/tasks", "null").await.error(400, "invalid_json");
    api.post("/tasks", json!({"problem_id": PROBLEM, "max_steps": 1e30}))
        .await
        .error(400, "invalid_json");

    // Nothing was created by any of these (the one valid task was cancelled).
    let list = api.get("/tasks?status=pending").await.ok(200);
    assert_eq!(list["total"], 0, "{list}");
}

pub async fn unknown_and_malformed_ids(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let missing = Uuid::new_v4();
    for path in [
        format!("/tasks/{missing}"),
        format!("/tasks/{missing}/logs"),
        format!("/tasks/{missing}/logs?follow=true"),
        format!("/tasks/{missing}/trajectory"),
    ] {
        let body = api.get(&path).await.error(404, "not_found");
        assert_eq!(body["details"]["id"], missing.to_string(), "{path}: {body}");
    }
    let body = api.get(&format!("/tasks/{missing}")).await.error(404, "not_found");
    assert_eq!(body["details"]["entity"], "task");
    api.delete(&format!("/tasks/{missing}")).await.error(404, "not_found");
    api.get("/workers/nobody").await.error(404, "not_found");

    for path in ["/tasks/not-a-uuid", "/tasks/123/logs", "/tasks/%FF%FE/trajectory"] {
        let body = api.get(path).await.error(400, "validation_error");
        assert_eq!(body["details"]["field"], "id", "{path}: {body}");
    }
    api.delete("/tasks/not-a-uuid").await.error(400, "validation_error");
}

pub async fn list_tasks_filters_sorts_and_pages(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let mut ids = Vec::new();
    for (i, priority) in [3, 9, 1, 7, 5].into_iter().enumerate() {
        let problem = if i % 2 == 0 { "p-even" } else { "p-odd" };
        ids.push(create_id(&api, json!({"problem_id": problem, "priority": priority})).await);
    }
    create_id(&api, json!({"problem_id": "p-other", "backend_type": "gpu"})).await;

    let all = api.get("/tasks").await.ok(200);
    assert_eq!(all["total"], 6);
    assert_eq!(all["total_is_estimate"], false, "six tasks are counted exactly: {all}");
    assert_eq!((all["limit"].as_u64(), all["offset"].as_u64()), (Some(20), Some(0)));

    let page = api.get("/tasks?status=pending&limit=10").await.ok(200);
    assert_eq!(page["total"], 6);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 6);
    assert_eq!(page["limit"], 10);

    let even = api.get("/tasks?problem_id=p-even").await.ok(200);
    assert_eq!(even["total"], 3);
    assert!(even["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["problem_id"] == "p-even"));

    let gpu = api.get("/tasks?backend_type=gpu").await.ok(200);
    assert_eq!(gpu["total"], 1);

    let priorities = |v: &Value| -> Vec<u64> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["parameters"]["priority"].as_u64().unwrap())
            .collect()
    };
    let desc = api.get("/tasks?sort=-priority&backend_type=default").await.ok(200);
    assert_eq!(priorities(&desc), vec![9, 7, 5, 3, 1]);
    let asc = api.get("/tasks?sort=priority&backend_type=default").await.ok(200);
    assert_eq!(priorities(&asc), vec![1, 3, 5, 7, 9]);

    let oldest = api
        .get("/tasks?sort=created_at&backend_type=default&limit=2&offset=1")
        .await
        .ok(200);
    let got: Vec<&str> = oldest["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(oldest["total"], 5);
    assert_eq!(got.len(), 2);
    // Pages tile the whole ordering without overlap.
    let mut seen = Vec::new();
    for offset in 0..3 {
        let page = api
            .get(&format!("/tasks?sort=created_at&limit=2&offset={}", offset * 2))
            .await
            .ok(200);
        seen.extend(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6);

    let beyond = api.get("/tasks?offset=100").await.ok(200);
    assert_eq!(beyond["tasks"], json!([]));
    assert_eq!(beyond["total"], 6);

    let none = api.get("/tasks?status=completed").await.ok(200);
    assert_eq!(none["total"], 0);
}

pub async fn list_tasks_rejects_bad_queries(store: Arc<dyn TaskStore>) {
    let api = api(store);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-5", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("sort=newest", "sort"),
        ("status=done", "status"),
        ("status=", "status"),
        ("limit=", "limit"),
        ("sort=", "sort"),
    ] {
        let body = api.get(&format!("/tasks?{query}")).await.error(400, "invalid_query");
        assert_eq!(body["details"]["field"], field, "{query}: {body}");
    }
    let long = "x".repeat(300);
    api.get(&format!("/tasks?problem_id={long}"))
        .await
        .error(400, "invalid_query");
    // Unknown parameters are refused, naming the parameter (a typo never
    // silently widens a listing).
    let body = api.get("/tasks?page=2").await.error(400, "invalid_query");
    assert_eq!(body["details"]["field"], "page", "{body}");
    let body = api
        .get("/tasks?status=pending&problem_idd=x")
        .await
        .error(400, "invalid_query");
    assert_eq!(body["details"]["field"], "problem_idd", "{body}");
}

pub async fn cancel_pending_running_and_terminal(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let pending = create_id(&api, json!({"problem_id": PROBLEM})).await;
    let body = api.delete(&format!("/tasks/{pending}")).await.ok(200);
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancel_requested"], false);
    assert_eq!(body["id"], pending.as_str());
    let task = api.get(&format!("/tasks/{pending}")).await.ok(200);
    assert_eq!(task["status"], "cancelled");
    assert!(task["completed_at"].is_string());

    let body = api
        .delete(&format!("/tasks/{pending}"))
        .await
        .error(409, "already_terminal");
    assert_eq!(body["details"]["status"], "cancelled");
    assert_eq!(body["details"]["task_id"], pending.as_str());

    let (running, attempt) = running_task(&api, "worker-001-kind").await;
    let body = api.delete(&format!("/tasks/{running}")).await.ok(200);
    assert_eq!(body["status"], "running");
    assert_eq!(body["cancel_requested"], true);
    let task = api.get(&format!("/tasks/{running}")).await.ok(200);
    assert_eq!(task["status"], "running");
    assert_eq!(task["cancel_requested"], true);

    // The worker learns it on its next heartbeat and on its lease renewal.
    let ack = api
        .post(
            "/workers/heartbeat",
            json!({"worker_id": "worker-001-kind", "status": "busy", "current_task_id": running}),
        )
        .await
        .ok(200);
    assert_eq!(ack["cancelled_task_ids"], json!([running]));
    let lease = api
        .post(&format!("/tasks/{running}/lease"), json!({"attempt": attempt}))
        .await
        .ok(200);
    assert_eq!(lease["cancel_requested"], true);

    // It stops and reports cancelled; the task is terminal.
    let task = finish(&api, &running, attempt, "cancelled").await;
    assert_eq!(task["status"], "cancelled");
    api.delete(&format!("/tasks/{running}"))
        .await
        .error(409, "already_terminal");
}

pub async fn logs_filter_by_level_and_since(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let (id, attempt) = running_task(&api, "w-logs").await;
    let empty = api.get(&format!("/tasks/{id}/logs")).await.ok(200);
    assert_eq!(empty, json!({"task_id": id, "logs": []}));

    append(
        &api,
        &id,
        attempt,
        json!([
            {"level": "debug", "message": "d"},
            {"level": "info", "message": "Starting problem execution...", "context": {"step": 1, "action": "exec_shell"}},
            {"level": "warning", "message": "w"},
            {"level": "error", "message": "e"},
            {"level": "critical", "message": "c"},
        ]),
    )
    .await;
    let all = api.get(&format!("/tasks/{id}/logs")).await.ok(200);
    let logs = all["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 5);
    let messages: Vec<&str> = logs.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["d", "Starting problem execution...", "w", "e", "c"]);
    for key in ["id", "timestamp", "level", "message", "context"] {
        assert!(logs[1].get(key).is_some(), "{key} missing: {}", logs[1]);
    }
    assert_eq!(logs[1]["context"]["step"], 1);
    let ids: Vec<i64> = logs.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let warn = api.get(&format!("/tasks/{id}/logs?level=warning")).await.ok(200);
    let levels: Vec<&str> = warn["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["warning", "error", "critical"]);

    let first_ts = logs[0]["timestamp"].as_str().unwrap();
    let since = api
        .get(&format!("/tasks/{id}/logs?since={}", urlencode(first_ts)))
        .await
        .ok(200);
    assert_eq!(since["logs"].as_array().unwrap().len(), 5, "since is inclusive");
    let future = api
        .get(&format!("/tasks/{id}/logs?since=2999-01-01T00:00:00Z"))
        .await
        .ok(200);
    assert_eq!(future["logs"], json!([]));
    let after = api.get(&format!("/tasks/{id}/logs?after_id={}", ids[2])).await.ok(200);
    assert_eq!(after["logs"].as_array().unwrap().len(), 2);
    let limited = api.get(&format!("/tasks/{id}/logs?limit=2")).await.ok(200);
    assert_eq!(limited["logs"].as_array().unwrap().len(), 2);

    for (query, field) in [
        ("level=loud", "level"),
        ("since=yesterday", "since"),
        ("since=2025-13-01T00:00:00Z", "since"),
        ("after_id=x", "after_id"),
        ("after_id=-1", "after_id"),
        ("since=", "since"),
        ("limit=0", "limit"),
        ("follow=maybe", "follow"),
    ] {
        let body = api
            .get(&format!("/tasks/{id}/logs?{query}"))
            .await
            .error(400, "invalid_query");
        assert_eq!(body["details"]["field"], field, "{query}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

pub async fn include_logs_adds_the_log(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let (id, attempt) = running_task(&api, "w-include").await;
    append(
        &api,
        &id,
        attempt,
        json!([{"level": "info", "message": "Starting problem execution..."}]),
    )
    .await;
    finish(&api, &id, attempt, "completed").await;

    let task = api.get(&format!("/tasks/{id}?include_logs=true")).await.ok(200);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"]["metrics"]["steps_taken"], 15);
    assert_eq!(
        task["result"]["output"]["solution"],
        "Misconfiguration detected in deployment.yaml"
    );
    assert!(task["completed_at"].is_string());
    let logs = task["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["message"], "Starting problem execution...");
    let plain = api.get(&format!("/tasks/{id}?include_logs=false")).await.ok(200);
    assert!(plain.get("logs").is_none());
    api.get(&format!("/tasks/{id}?include_logs=perhaps"))
        .await
        .error(400, "invalid_query");
}

/// Splits an event stream into `(event, data)` pairs.
fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.trim_start().to_string());
                }
            }
            event.map(|e| (e, data.join("\n")))
        })
        .collect()
}

pub async fn follow_streams_until_the_task_ends(store: Arc<dyn TaskStore>) {
    let config = ApiConfig {
        follow_poll_interval: Duration::from_millis(20),
        ..ApiConfig::default()
    };
    let api = Api::new(app_with(store, config));
    let (id, attempt) = running_task(&api, "w-follow").await;
    append(
        &api,
        &id,
        attempt,
        json!([{"level": "info", "message": "one"}, {"level": "debug", "message": "hidden"}]),
    )
    .await;

    let writer = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            append(&api, &id, attempt, json!([{"level": "warning", "message": "two"}])).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            append(&api, &id, attempt, json!([{"level": "error", "message": "three"}])).await;
            finish(&api, &id, attempt, "completed").await;
        })
    };
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        api.get(&format!("/tasks/{id}/logs?follow=true&level=info")),
    )
    .await
    .expect("the stream ends when the task ends");
    writer.await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.content_type().starts_with("text/event-stream"),
        "{:?}",
        response.headers
    );
    let events = events(&response.text());
    let logs: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(logs, ["one", "two", "three"], "{events:?}");
    assert_eq!(
        events.last().unwrap(),
        &("end".to_string(), "completed".to_string()),
        "{events:?}"
    );
}

pub async fn follow_of_a_finished_task_ends_at_once(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let (id, attempt) = running_task(&api, "w-follow-done").await;
    append(
        &api,
        &id,
        attempt,
        json!([{"level": "info", "message": "a"}, {"level": "info", "message": "b"}]),
    )
    .await;
    finish(&api, &id, attempt, "completed").await;
    let first = api.get(&format!("/tasks/{id}/logs")).await.ok(200)["logs"][0]["id"]
        .as_i64()
        .unwrap();

    let response = tokio::time::timeout(Duration::from_secs(5), api.get(&format!("/tasks/{id}/logs?follow=1")))
        .await
        .expect("ends at once");
    let events = events(&response.text());
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], ("end".to_string(), "completed".to_string()));

    // Resuming after the first entry (as EventSource does with Last-Event-ID).
    let response = api.get(&format!("/tasks/{id}/logs?follow=true&after_id={first}")).await;
    let events = events_of(&response.text(), "log");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["message"], "b");

    let cancelled = create_id(&api, json!({"problem_id": PROBLEM})).await;
    api.delete(&format!("/tasks/{cancelled}")).await.ok(200);
    let response = api.get(&format!("/tasks/{cancelled}/logs?follow=true")).await;
    assert_eq!(
        self::events(&response.text()),
        vec![("end".to_string(), "cancelled".to_string())]
    );
}

fn events_of(text: &str, kind: &str) -> Vec<Value> {
    events(text)
        .into_iter()
        .filter(|(e, _)| e == kind)
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect()
}

pub async fn register_and_list_workers(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let worker = api
        .post(
            "/workers/register",
            json!({
                "id": "worker-001-kind",
                "backend_type": "default",
                "capabilities": {"max_parallel_tasks": 1, "supported_problems": [PROBLEM]},
                "metadata": {"host": "h1", "version": "0.1.0", "kind_cluster": "worker-001-kind"}
            }),
        )
        .await
        .ok(201);
    assert_eq!(worker["id"], "worker-001-kind");
    assert_eq!(worker["status"], "idle");
    assert_eq!(worker["tasks_completed"], 0);
    assert_eq!(worker["metadata"]["kind_cluster"], "worker-001-kind");

    let body = api
        .post(
            "/workers/register",
            json!({"id": "worker-001-kind", "backend_type": "default"}),
        )
        .await
        .error(409, "worker_alive");
    assert_eq!(body["details"]["id"], "worker-001-kind");

    register(&api, "worker-002-kind", "gpu").await;
    let body = api
        .post(
            "/workers/register",
            json!({"id": "w3", "capabilities": {"max_parallel_tasks": 0}}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "capabilities.max_parallel_tasks");
    api.post("/workers/register", json!({"id": ""}))
        .await
        .error(400, "validation_error");
    api.post("/workers/register", json!({"id": "w4", "shoe_size": 9}))
        .await
        .error(400, "invalid_json");
    api.post("/workers/register", json!({"backend_type": "default"}))
        .await
        .error(400, "invalid_json");

    let all = api.get("/workers").await.ok(200);
    assert_eq!(all["total"], 2);
    let ids: Vec<&str> = all["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["worker-001-kind", "worker-002-kind"]);
    assert_eq!(api.get("/workers?backend_type=gpu").await.ok(200)["total"], 1);
    assert_eq!(api.get("/workers?status=idle").await.ok(200)["total"], 2);
    assert_eq!(api.get("/workers?status=busy").await.ok(200)["total"], 0);
    let body = api.get("/workers?status=sleeping").await.error(400, "invalid_query");
    assert_eq!(body["details"]["field"], "status");
    let one = api.get("/workers/worker-002-kind").await.ok(200);
    assert_eq!(one["backend_type"], "gpu");

    // Deregistered: offline, and the id may register again at once.
    api.post("/workers/worker-002-kind/deregister", json!({})).await.ok(204);
    assert_eq!(api.get("/workers/worker-002-kind").await.ok(200)["status"], "offline");
    register(&api, "worker-002-kind", "gpu").await;
    api.post("/workers/nobody/deregister", json!({}))
        .await
        .error(404, "not_found");
}

pub async fn heartbeat_hands_out_the_next_task(store: Arc<dyn TaskStore>) {
    let api = api(store);
    register(&api, "worker-001-kind", "default").await;
    let ack = api
        .post(
            "/workers/heartbeat",
            json!({"worker_id": "worker-001-kind", "status": "idle"}),
        )
        .await
        .ok(200);
    assert_eq!(ack["acknowledged"], true);
    assert_eq!(ack["next_task_id"], Value::Null);
    assert_eq!(ack["next_task"], Value::Null);
    assert_eq!(ack["cancelled_task_ids"], json!([]));

    let low = create_id(&api, json!({"problem_id": PROBLEM, "priority": 2})).await;
    let high = create_id(&api, json!({"problem_id": PROBLEM, "priority": 8})).await;
    let ack = api
        .post(
            "/workers/heartbeat",
            json!({"worker_id": "worker-001-kind", "status": "idle"}),
        )
        .await
        .ok(200);
    assert_eq!(ack["next_task_id"], high.as_str(), "highest priority first: {ack}");
    assert_eq!(ack["next_task"]["status"], "running");
    assert_eq!(ack["next_task"]["worker_id"], "worker-001-kind");
    assert!(ack["lease_expires_at"].is_string(), "{ack}");
    let task = api.get(&format!("/tasks/{high}")).await.ok(200);
    assert_eq!(task["status"], "running");
    assert_eq!(task["worker_id"], "worker-001-kind");

    // A busy worker is not handed anything.
    let ack = api
        .post(
            "/workers/heartbeat",
            json!({"worker_id": "worker-001-kind", "status": "busy", "current_task_id": high}),
        )
        .await
        .ok(200);
    assert_eq!(ack["next_task"], Value::Null);
    assert_eq!(api.get(&format!("/tasks/{low}")).await.ok(200)["status"], "pending");
    let worker = api.get("/workers/worker-001-kind").await.ok(200);
    assert_eq!(worker["status"], "busy");
    assert_eq!(worker["current_task_id"], high.as_str());

    api.post("/workers/heartbeat", json!({"worker_id": "ghost", "status": "idle"}))
        .await
        .error(404, "not_found");
    api.post(
        "/workers/heartbeat",
        json!({"worker_id": "worker-001-kind", "status": "offline"}),
    )
    .await
    .error(400, "validation_error");
    api.post(
        "/workers/heartbeat",
        json!({"worker_id": "worker-001-kind", "status": "napping"}),
    )
    .await
    .error(400, "invalid_json");
    api.post(
        "/workers/heartbeat",
        json!({"worker_id": "worker-001-kind", "status": "idle", "current_task_id": "x"}),
    )
    .await
    .error(400, "invalid_json");
}

pub async fn heartbeat_respects_backend_and_problems(store: Arc<dyn TaskStore>) {
    let api = api(store);
    api.post(
        "/workers/register",
        json!({"id": "picky", "backend_type": "default", "capabilities": {"supported_problems": ["only-this"]}}),
    )
    .await
    .ok(201);
    register(&api, "gpu-worker", "gpu").await;
    let other = create_id(&api, json!({"problem_id": PROBLEM})).await;
    let ack = api
        .post("/workers/heartbeat", json!({"worker_id": "picky", "status": "idle"}))
        .await
        .ok(200);
    assert_eq!(ack["next_task"], Value::Null, "unsupported problem: {ack}");
    let ack = api
        .post(
            "/workers/heartbeat",
            json!({"worker_id": "gpu-worker", "status": "idle"}),
        )
        .await
        .ok(200);
    assert_eq!(ack["next_task"], Value::Null, "other backend type: {ack}");
    let wanted = create_id(&api, json!({"problem_id": "only-this"})).await;
    let ack = api
        .post("/workers/heartbeat", json!({"worker_id": "picky", "status": "idle"}))
        .await
        .ok(200);
    assert_eq!(ack["next_task_id"], wanted.as_str());
    assert_eq!(api.get(&format!("/tasks/{other}")).await.ok(200)["status"], "pending");
}

pub async fn worker_protocol_under_the_lease(store: Arc<dyn TaskStore>) {
    let api = api(store);
    register(&api, "w1", "default").await;
    assert_eq!(claim(&api, "w1").await, Value::Null, "nothing to claim yet");
    let id = create_id(&api, json!({"problem_id": PROBLEM})).await;
    let task = claim(&api, "w1").await;
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["attempt"], 1);
    assert!(task["started_at"].is_string());
    assert!(task["lease_expires_at"].is_string());
    assert_eq!(claim(&api, "w1").await, Value::Null, "never claimed twice");

    let lease = api
        .post(&format!("/tasks/{id}/lease"), json!({"attempt": 1}))
        .await
        .ok(200);
    assert!(lease["lease_expires_at"].is_string());
    assert_eq!(lease["cancel_requested"], false);

    // A stale attempt is refused everywhere with lease_lost.
    let body = api
        .post(&format!("/tasks/{id}/lease"), json!({"attempt": 2}))
        .await
        .error(409, "lease_lost");
    assert_eq!(body["details"]["task_id"], id.as_str());
    assert_eq!(body["details"]["attempt"], 2);
    api.post(
        &format!("/tasks/{id}/logs"),
        json!({"attempt": 7, "entries": [{"level": "info", "message": "x"}]}),
    )
    .await
    .error(409, "lease_lost");
    api.put(
        &format!("/tasks/{id}/trajectory"),
        json!({"attempt": 7, "trajectory": trajectory(&id)}),
    )
    .await
    .error(409, "lease_lost");
    api.post(
        &format!("/tasks/{id}/finish"),
        json!({"attempt": 7, "outcome": {"status": "completed"}}),
    )
    .await
    .error(409, "lease_lost");

    // Bad bodies.
    api.post(&format!("/tasks/{id}/lease"), json!({"attempt": -1}))
        .await
        .error(400, "invalid_json");
    api.post(&format!("/tasks/{id}/lease"), json!({}))
        .await
        .error(400, "invalid_json");
    api.post(
        &format!("/tasks/{id}/logs"),
        json!({"attempt": 1, "entries": [{"level": "loud", "message": "x"}]}),
    )
    .await
    .error(400, "invalid_json");
    api.post(
        &format!("/tasks/{id}/finish"),
        json!({"attempt": 1, "outcome": {"status": "running"}}),
    )
    .await
    .error(400, "invalid_json");
    api.post("/workers/claim", json!({"worker_id": "w1"}))
        .await
        .error(400, "invalid_json");
    api.post("/workers/claim", json!({"worker_id": "", "backend_type": "default"}))
        .await
        .error(400, "validation_error");

    // Unknown tasks.
    let ghost = Uuid::new_v4();
    api.post(&format!("/tasks/{ghost}/lease"), json!({"attempt": 1}))
        .await
        .error(404, "not_found");
    api.post(
        &format!("/tasks/{ghost}/finish"),
        json!({"attempt": 1, "outcome": {"status": "completed"}}),
    )
    .await
    .error(404, "not_found");

    // The real writes.
    append(&api, &id, 1, json!([{"level": "info", "message": "step 1"}])).await;
    api.put(
        &format!("/tasks/{id}/trajectory"),
        json!({"attempt": 1, "trajectory": trajectory(&id)}),
    )
    .await
    .ok(204);
    let done = finish(&api, &id, 1, "completed").await;
    assert_eq!(done["status"], "completed");
    assert!(done["completed_at"].is_string());
    // A replayed finish is acknowledged unchanged.
    let again = finish(&api, &id, 1, "completed").await;
    assert_eq!(again["completed_at"], done["completed_at"]);
    // After the finish the lease is gone.
    api.post(&format!("/tasks/{id}/lease"), json!({"attempt": 1}))
        .await
        .error(409, "lease_lost");
    api.post(&format!("/tasks/{id}/logs"), json!({"attempt": 1, "entries": []}))
        .await
        .error(409, "lease_lost");

    let worker = api.get("/workers/w1").await.ok(200);
    assert_eq!(worker["tasks_completed"], 1);
}

fn trajectory(task_id: &str) -> Value {
    json!({
        "task_id": task_id,
        "messages": [{"role": "system", "content": "You are an SRE."}, {"role": "assistant", "content": "submit(\"Yes\")"}],
        "llm_calls": [{"step": 1, "request": [{"role": "user", "content": "go"}], "response": "ok",
                       "model": "gpt-4", "sampling": {"temperature": 0.7},
                       "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}, "latency_ms": 30}],
        "reward": 1.0,
        "evaluation": {"Detection Accuracy": "Correct"},
        "metadata": {"simulated": true}
    })
}

pub async fn failed_with_retries_requeues(store: Arc<dyn TaskStore>) {
    let api = api(store);
    register(&api, "w-retry", "default").await;
    let id = create_id(&api, json!({"problem_id": PROBLEM, "max_retries": 1})).await;
    let task = claim(&api, "w-retry").await;
    assert_eq!(task["id"], id.as_str());
    let after = api
        .post(
            &format!("/tasks/{id}/finish"),
            json!({"attempt": 1, "outcome": {"status": "failed", "error": {"code": "backend_error", "message": "kind died"}}}),
        )
        .await
        .ok(200);
    assert_eq!(after["status"], "pending", "requeued: {after}");
    assert_eq!(after["error_details"]["code"], "backend_error");
    let task = claim(&api, "w-retry").await;
    assert_eq!(task["attempt"], 2);
    // The first attempt's token is stale now.
    api.post(&format!("/tasks/{id}/lease"), json!({"attempt": 1}))
        .await
        .error(409, "lease_lost");
    let done = api
        .post(
            &format!("/tasks/{id}/finish"),
            json!({"attempt": 2, "outcome": {"status": "failed", "error": {"code": "backend_error", "message": "again"}}}),
        )
        .await
        .ok(200);
    assert_eq!(done["status"], "failed");
    // Both failed attempts count against the worker.
    assert_eq!(api.get("/workers/w-retry").await.ok(200)["tasks_failed"], 2);
}

pub async fn trajectory_and_export(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let (id, attempt) = running_task(&api, "w-traj").await;
    let body = api
        .get(&format!("/tasks/{id}/trajectory"))
        .await
        .error(404, "not_found");
    assert_eq!(body["details"]["entity"], "trajectory");
    // The trajectory is stored under the path's task, whatever its body says.
    let mut t = trajectory(&Uuid::new_v4().to_string());
    t["reward"] = json!(0.0);
    api.put(
        &format!("/tasks/{id}/trajectory"),
        json!({"attempt": attempt, "trajectory": t}),
    )
    .await
    .ok(204);
    api.put(
        &format!("/tasks/{id}/trajectory"),
        json!({"attempt": attempt, "trajectory": trajectory(&id)}),
    )
    .await
    .ok(204);
    let saved = api.get(&format!("/tasks/{id}/trajectory")).await.ok(200);
    assert_eq!(saved["task_id"], id.as_str());
    assert_eq!(saved["reward"], Value::Null, "no reward is served before the outcome");
    assert_eq!(saved.get("outcome"), None, "a running task has no outcome");
    assert_eq!(saved["llm_calls"][0]["usage"]["total_tokens"], 12);
    finish(&api, &id, attempt, "completed").await;
    let served = api.get(&format!("/tasks/{id}/trajectory")).await.ok(200);
    assert_eq!(served["reward"], 1.0, "replaced (the first upload said 0)");
    assert_eq!(served["outcome"], "valid");
    create_id(&api, json!({"problem_id": PROBLEM})).await; // no trajectory: skipped

    let export = api.get("/trajectories/export?status=completed").await;
    assert_eq!(export.status, 200);
    assert!(export.content_type().starts_with("application/x-ndjson"));
    let lines: Vec<Value> = export
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["task_id"], id.as_str());
    let all = api.get("/trajectories/export").await;
    assert_eq!(all.text().lines().count(), 1);
    api.get("/trajectories/export?status=nope")
        .await
        .error(400, "invalid_query");
}

pub async fn oversized_bodies_get_413(store: Arc<dyn TaskStore>) {
    let small = ApiConfig {
        body_limit: 1024,
        worker_body_limit: 4096,
        ..ApiConfig::default()
    };
    let api = Api::new(app_with(store.clone(), small));
    let big = "x".repeat(2000);
    let body = api
        .post("/tasks", json!({"problem_id": PROBLEM, "metadata": {"blob": big}}))
        .await
        .error(413, "payload_too_large");
    assert_eq!(body["details"]["field"], "body");
    // The worker routes have their own, larger limit.
    register(&api, "w-big", "default").await;
    api.post(
        "/workers/heartbeat",
        json!({"worker_id": "w-big", "status": "busy", "current_task_id": null, "x": big}),
    )
    .await
    .error(400, "invalid_json");
    let huge = "y".repeat(5000);
    api.post("/workers/heartbeat", json!({"worker_id": huge, "status": "busy"}))
        .await
        .error(413, "payload_too_large");

    // Defaults: 1 MiB public, 8 MiB on worker routes (log batches).
    let api = Api::new(app(store));
    let two_mib = "z".repeat(2 * 1024 * 1024);
    api.post("/tasks", json!({"problem_id": PROBLEM, "metadata": {"blob": two_mib}}))
        .await
        .error(413, "payload_too_large");
    let (id, attempt) = running_task(&api, "w-big2").await;
    let entries: Vec<Value> = (0..4)
        .map(|_| json!({"level": "info", "message": "m".repeat(512 * 1024)}))
        .collect();
    append(&api, &id, attempt, Value::Array(entries)).await;
}

pub async fn unknown_routes_and_methods(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let body = api.get("/nope").await.error(404, "not_found");
    assert_eq!(body["details"]["path"], "/nope");
    api.get("/tasks/a/b/c").await.error(404, "not_found");
    api.post("/health", json!({})).await.error(405, "method_not_allowed");
    let response = api.raw("PATCH", "/tasks", "{}").await;
    response.error(405, "method_not_allowed");
    let allow = response
        .headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    api.put(&format!("/tasks/{}", Uuid::new_v4()), json!({}))
        .await
        .error(405, "method_not_allowed");
    api.get(&format!("/tasks/{}/finish", Uuid::new_v4()))
        .await
        .error(405, "method_not_allowed");
}

pub async fn metrics_use_route_templates(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let (id, attempt) = running_task(&api, "w-metrics").await;
    api.get(&format!("/tasks/{id}")).await.ok(200);
    api.get(&format!("/tasks/{}", Uuid::new_v4()))
        .await
        .error(404, "not_found");
    finish(&api, &id, attempt, "completed").await;
    finish(&api, &id, attempt, "completed").await; // a replay is not counted twice
    create_id(&api, json!({"problem_id": PROBLEM, "backend_type": "gpu"})).await;
    api.get("/no/such/route").await;

    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type().starts_with("text/plain"),
        "{}",
        metrics.content_type()
    );
    let text = metrics.text();
    for needle in [
        r#"aiopslab_http_requests_total{method="GET",route="/tasks/{id}",status="200"} 1"#,
        r#"aiopslab_http_requests_total{method="GET",route="/tasks/{id}",status="404"} 1"#,
        r#"aiopslab_http_requests_total{method="POST",route="/tasks",status="201"}"#,
        r#"aiopslab_http_requests_total{method="POST",route="/tasks/{id}/finish",status="200"} 2"#,
        r#"route="unmatched""#,
        r#"aiopslab_http_request_duration_seconds_bucket{method="GET",route="/tasks/{id}",status="200",le="+Inf"} 1"#,
        r#"aiopslab_tasks{status="completed"} 1"#,
        r#"aiopslab_tasks{status="pending"} 1"#,
        r#"aiopslab_queue_depth{backend_type="gpu"} 1"#,
        r#"aiopslab_workers{status="idle"}"#,
        r#"aiopslab_task_duration_seconds_count{status="completed"} 1"#,
        "aiopslab_store_up 1",
        "# TYPE aiopslab_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(!text.contains(&id), "raw paths must not become labels");
}

pub async fn openapi_lists_every_route(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let doc = api.get("/openapi.json").await.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let page = &doc["components"]["schemas"]["TaskPage"]["properties"];
    assert_eq!(page["total_is_estimate"]["type"], "boolean", "{page}");
    assert!(
        page["total_is_estimate"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("estimate")),
        "the document says what total_is_estimate means: {page}"
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/tasks", "post"),
        ("/tasks", "get"),
        ("/tasks/{id}", "get"),
        ("/tasks/{id}", "delete"),
        ("/tasks/{id}/logs", "get"),
        ("/tasks/{id}/logs", "post"),
        ("/tasks/{id}/trajectory", "get"),
        ("/tasks/{id}/trajectory", "put"),
        ("/tasks/{id}/lease", "post"),
        ("/tasks/{id}/finish", "post"),
        ("/experiments", "get"),
        ("/experiments/{name}", "get"),
        ("/experiments/{name}", "put"),
        ("/trajectories/export", "get"),
        ("/workers", "get"),
        ("/workers/{id}", "get"),
        ("/workers/register", "post"),
        ("/workers/heartbeat", "post"),
        ("/workers/claim", "post"),
        ("/workers/{id}/deregister", "post"),
        ("/problems", "get"),
        ("/stats", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
        ("/redoc", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the document"
        );
    }
    let create = &paths["/tasks"]["post"];
    for status in ["201", "400", "413"] {
        assert!(create["responses"].get(status).is_some(), "POST /tasks {status}");
    }
    assert!(paths["/tasks/{id}"]["delete"]["responses"].get("409").is_some());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ErrorBody",
        "Task",
        "NewTask",
        "TaskPage",
        "LogEntry",
        "Worker",
        "WorkerRegistration",
        "WorkerHeartbeat",
        "HeartbeatResponse",
        "Trajectory",
        "StoreStats",
        "Problem",
        "CancelResponse",
        "LogsResponse",
        "FinishBody",
        "Experiment",
        "ExperimentList",
        "NewExperimentSettings",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
    let new_task = &schemas["NewTask"];
    assert!(
        new_task["required"].as_array().unwrap().contains(&json!("problem_id")),
        "{new_task}"
    );
    assert!(doc["components"]["securitySchemes"].get("client_token").is_some());
    // Every $ref resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
}

pub async fn tokens_guard_the_right_routes(store: Arc<dyn TaskStore>) {
    let config = ApiConfig::default()
        .with_client_token("client-secret")
        .with_worker_token("worker-secret");
    let anonymous = Api::new(app_with(store, config));
    let client = anonymous.with_token("client-secret");
    let worker = anonymous.with_token("worker-secret");
    let stranger = anonymous.with_token("guess");

    // Public routes: 401 without or with an unknown token, 403 with the worker token.
    let response = anonymous.get("/tasks").await;
    response.error(401, "unauthorized");
    assert_eq!(response.headers.get("www-authenticate").unwrap(), "Bearer");
    stranger.get("/tasks").await.error(401, "unauthorized");
    worker.get("/tasks").await.error(403, "forbidden");
    client.get("/tasks").await.ok(200);
    anonymous
        .post("/tasks", json!({"problem_id": PROBLEM}))
        .await
        .error(401, "unauthorized");
    let id = create_id(&client, json!({"problem_id": PROBLEM})).await;
    worker.delete(&format!("/tasks/{id}")).await.error(403, "forbidden");
    anonymous.get("/metrics").await.error(401, "unauthorized");
    assert_eq!(client.get("/metrics").await.status, 200);
    anonymous.get("/stats").await.error(401, "unauthorized");

    // Worker routes: the reverse.
    anonymous
        .post("/workers/register", json!({"id": "w"}))
        .await
        .error(401, "unauthorized");
    client
        .post("/workers/register", json!({"id": "w"}))
        .await
        .error(403, "forbidden");
    worker.post("/workers/register", json!({"id": "w"})).await.ok(201);
    client
        .post("/workers/heartbeat", json!({"worker_id": "w", "status": "idle"}))
        .await
        .error(403, "forbidden");
    stranger
        .post(&format!("/tasks/{id}/finish"), json!({}))
        .await
        .error(401, "unauthorized");
    // Same path, different methods, different guards.
    client.get(&format!("/tasks/{id}/logs")).await.ok(200);
    client
        .post(&format!("/tasks/{id}/logs"), json!({"attempt": 1, "entries": []}))
        .await
        .error(403, "forbidden");
    worker.get(&format!("/tasks/{id}/logs")).await.error(403, "forbidden");

    // Never guarded: health. Docs are open unless protect_docs.
    let health = anonymous.get("/health").await.ok(200);
    assert_eq!(health["status"], "ok");
    anonymous.get("/openapi.json").await.ok(200);
    assert_eq!(anonymous.get("/redoc").await.status, 200);
}

pub async fn docs_pages_are_local(store: Arc<dyn TaskStore>) {
    let api = api(store.clone());
    let redirect = api.get("/docs").await;
    let page = if redirect.status.is_redirection() {
        let location = redirect.headers.get("location").unwrap().to_str().unwrap().to_string();
        api.get(&location).await
    } else {
        redirect
    };
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"), "{}", page.content_type());
    let html = page.text();
    assert!(html.contains("swagger"), "{html}");
    assert_no_remote_assets(&html);
    // Every local asset it names is served.
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        assert!(html.contains(asset), "{asset} not referenced:\n{html}");
        let response = api.get(&format!("/docs/{asset}")).await;
        assert_eq!(response.status, 200, "/docs/{asset}");
        assert!(response.body.len() > 100, "/docs/{asset} is empty");
    }
    let init = api.get("/docs/swagger-initializer.js").await.text();
    assert!(init.contains("/openapi.json"), "{init}");

    let redoc = api.get("/redoc").await;
    assert_eq!(redoc.status, 200);
    assert!(redoc.content_type().starts_with("text/html"));
    let html = redoc.text();
    assert!(html.contains(r#"src="/redoc/redoc.standalone.js""#), "{html}");
    assert!(html.contains(r#"spec-url="/openapi.json""#), "{html}");
    assert_no_remote_assets(&html);
    let js = api.get("/redoc/redoc.standalone.js").await;
    assert_eq!(js.status, 200);
    assert!(js.content_type().starts_with("application/javascript"));
    assert!(js.body.len() > 500_000, "the real bundle: {} bytes", js.body.len());

    // With protect_docs the docs need the client token too.
    let config = ApiConfig {
        protect_docs: true,
        ..ApiConfig::default().with_client_token("c")
    };
    let guarded = Api::new(app_with(store, config));
    guarded.get("/openapi.json").await.error(401, "unauthorized");
    guarded.get("/redoc").await.error(401, "unauthorized");
    guarded.with_token("c").get("/redoc").await.ok_html();
}

trait OkHtml {
    fn ok_html(&self);
}

impl OkHtml for super::Resp {
    fn ok_html(&self) {
        assert_eq!(self.status, 200);
        assert!(self.content_type().starts_with("text/html"));
    }
}

fn assert_no_remote_assets(html: &str) {
    for attr in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "//fonts.",
        "cdn.",
    ] {
        assert!(!html.contains(attr), "remote asset ({attr}) in:\n{html}");
    }
}

pub async fn problems_stats_and_health(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let all = api.get("/problems").await.ok(200);
    assert_eq!(all["total"], 89);
    let first = &all["problems"][0];
    for key in ["id", "application", "fault", "task_type"] {
        assert!(first.get(key).is_some(), "{key}: {first}");
    }
    assert_eq!(api.get("/problems?task_type=detection").await.ok(200)["total"], 34);
    let hotel = api
        .get("/problems?application=HotelReservation&task_type=mitigation")
        .await
        .ok(200);
    assert!(hotel["total"].as_u64().unwrap() > 0);
    assert!(hotel["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["task_type"] == "mitigation"));
    let body = api
        .get("/problems?task_type=guessing")
        .await
        .error(400, "invalid_query");
    assert_eq!(body["details"]["field"], "task_type");
    api.get("/problems?application=Minecraft")
        .await
        .error(400, "invalid_query");

    create_id(&api, json!({"problem_id": PROBLEM})).await;
    register(&api, "w-stats", "default").await;
    let stats = api.get("/stats").await.ok(200);
    assert_eq!(stats["tasks_by_status"]["pending"], 1);
    assert_eq!(stats["tasks_by_status"]["completed"], 0);
    assert_eq!(stats["queue_depth_by_backend"]["default"], 1);
    assert_eq!(stats["workers_by_status"]["idle"], 1);

    let health = api.get("/health").await.ok(200);
    assert_eq!(health["status"], "ok");
    assert!(health["store"].is_string());
}

pub async fn in_process_finishes_are_measured(store: Arc<dyn TaskStore>) {
    use aiopslab_core::{ClaimRequest, NewTask, TaskOutcome, TerminalStatus};
    use aiopslab_http::server::{router, ApiState};

    let state = ApiState::with_default_scheduler(store, ApiConfig::default());
    let api = Api::new(router(state.clone()));
    // An in-process worker uses the state's queue directly, not HTTP.
    let registration = serde_json::from_value(json!({"id": "in-process", "backend_type": "default"})).unwrap();
    state.queue.register_worker(registration).await.unwrap();
    let spec = NewTask::new(PROBLEM).validate().unwrap();
    let task = state.tasks.create_task(spec).await.unwrap();
    let request = ClaimRequest::new("in-process", "default");
    let claimed = state.queue.claim(&request).await.unwrap().unwrap();
    assert_eq!(claimed.id, task.id);
    let outcome = TaskOutcome {
        status: TerminalStatus::Failed,
        result: None,
        error: None,
    };
    state
        .queue
        .finish(claimed.lease_token(), outcome.clone())
        .await
        .unwrap();
    state.queue.finish(claimed.lease_token(), outcome).await.unwrap();
    let text = api.get("/metrics").await.text();
    assert!(
        text.contains(r#"aiopslab_task_duration_seconds_count{status="failed"} 1"#),
        "{text}"
    );
}

pub async fn follow_ends_when_the_server_stops(store: Arc<dyn TaskStore>) {
    use aiopslab_http::server::{router, ApiState};
    use tokio_util::sync::CancellationToken;

    let shutdown = CancellationToken::new();
    let config = ApiConfig {
        follow_poll_interval: Duration::from_millis(20),
        ..ApiConfig::default()
    };
    let state = ApiState::with_default_scheduler(store, config).with_shutdown(shutdown.clone());
    let api = Api::new(router(state));
    let (id, attempt) = running_task(&api, "w-shutdown").await;
    append(&api, &id, attempt, json!([{"level": "info", "message": "before"}])).await;
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        shutdown.cancel();
    });
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        api.get(&format!("/tasks/{id}/logs?follow=true")),
    )
    .await
    .expect("the stream closes when the server stops, though the task still runs");
    stopper.await.unwrap();
    let events = events(&response.text());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "log");
}
