//! What the API accepts is what it hands back, on both stores (issue 11, items 2, 5 and 11), through the real
//! router over `MemoryStore` and over `PgStore` on a real PostgreSQL:
//!
//! - a float at the edge of `f64` (`-1.7976931348623155e+308`) is created (201), read, listed and claimed with
//!   the same value, and the numbers PostgreSQL prints back in full come back as sent;
//! - an `agent_config` nested too deep is a 400 naming the field, and nothing is created;
//! - a NUL in a task's metadata, a log line or a result is stored as U+FFFD, never a 400 or a lost write;
//! - worker ids follow one pattern (`Bad Id!` is a 400 naming `id`), and only a registered, live worker claims
//!   (404 for an unknown one, 400 naming `worker_id` for an offline one).

mod api_support;

use std::sync::Arc;

use aiopslab_core::sanitize::MAX_JSON_DEPTH;
use aiopslab_core::worker::WORKER_ID_PATTERN;
use aiopslab_core::TaskStore;
use api_support::{app, Api, Backing};
use serde_json::{json, Value};

/// `POST /workers/claim` for `worker`, backend `default`.
async fn claim(api: &Api, worker: &str) -> api_support::Resp {
    api.post(
        "/workers/claim",
        json!({"worker_id": worker, "backend_type": "default"}),
    )
    .await
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() {
                    let backing = super::Backing::memory().await;
                    super::$name(backing.store.clone()).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test]
                async fn $name() {
                    let backing = super::Backing::postgres().await;
                    super::$name(backing.store.clone()).await;
                    drop(backing);
                }
            )*
        }
    };
}

on_both_stores!(
    edge_floats_read_back_as_sent,
    too_deep_agent_config_is_refused_before_anything_is_written,
    nul_is_stored_as_the_replacement_character,
    worker_ids_and_liveness_guard_the_claim,
);

/// The numbers of the body as the API hands them back, by key, parsed from the response text.
fn numbers(body: &Value) -> Vec<(String, Value)> {
    let config = body["parameters"]["agent_config"].as_object().expect("agent_config");
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

async fn edge_floats_read_back_as_sent(store: Arc<dyn TaskStore>) {
    let api = Api::new(app(store));
    // Raw text, so the numbers reach the server exactly as a client wrote them.
    let body = r#"{"problem_id": "p", "agent_config": {"temperature": -1.7976931348623155e+308,
        "max": 1.7976931348623157e308, "whole": 1e16, "big_whole": 4.5e18, "tiny": 5e-324, "third": 0.30000000000000004,
        "int": 18446744073709551615, "neg": -9223372036854775808}, "metadata": {"temperature": -1.7976931348623155e+308}}"#;
    let created = api.raw("POST", "/tasks", body).await.ok(201);
    let want: Value = serde_json::from_str(body).expect("the body is JSON");
    assert_eq!(
        created["parameters"]["agent_config"], want["agent_config"],
        "create answers 201 with the numbers as sent"
    );
    assert_eq!(
        created["parameters"]["agent_config"]["temperature"].as_f64(),
        Some(-1.7976931348623155e308),
        "issue 11's value, to the last bit (not -f64::MAX)"
    );
    assert!(
        created["parameters"]["agent_config"]["whole"].is_f64(),
        "a whole float stays a float"
    );
    let id = created["id"].as_str().expect("id").to_string();
    let read = api.get(&format!("/tasks/{id}")).await.ok(200);
    assert_eq!(numbers(&read), numbers(&created), "GET /tasks/{{id}}");
    assert_eq!(read["parameters"]["metadata"], want["metadata"], "metadata");
    let page = api.get("/tasks").await.ok(200);
    assert_eq!(page["total"], 1, "exactly one task was created: {page}");
    assert_eq!(numbers(&page["tasks"][0]), numbers(&created), "GET /tasks");
    api.post("/workers/register", json!({"id": "worker-001-kind"}))
        .await
        .ok(201);
    let claimed = claim(&api, "worker-001-kind").await.ok(200);
    assert_eq!(claimed["task"]["id"], id.as_str(), "the claim hands the task out");
    assert_eq!(numbers(&claimed["task"]), numbers(&created), "POST /workers/claim");
    let text = api.get(&format!("/tasks/{id}")).await.text();
    assert!(
        text.contains("-1.7976931348623155e+308") && text.contains("1e+16"),
        "served in serde_json's shortest form: {text}"
    );
}

async fn too_deep_agent_config_is_refused_before_anything_is_written(store: Arc<dyn TaskStore>) {
    let api = Api::new(app(store));
    let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
    let error = api
        .post(
            "/tasks",
            json!({"problem_id": "p", "agent_config": {"deep": nested(MAX_JSON_DEPTH)}}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(error["details"]["field"], "agent_config", "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains("at most 64"),
        "{error}"
    );
    let error = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": "p"}, {"problem_id": "p", "metadata": {"deep": nested(MAX_JSON_DEPTH)}}]}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(error["details"]["field"], "tasks[1].metadata", "{error}");
    assert_eq!(api.get("/tasks").await.ok(200)["total"], 0, "nothing was written");
    api.post(
        "/tasks",
        json!({"problem_id": "p", "agent_config": {"deep": nested(MAX_JSON_DEPTH - 1)}}),
    )
    .await
    .ok(201);
}

async fn nul_is_stored_as_the_replacement_character(store: Arc<dyn TaskStore>) {
    let api = Api::new(app(store));
    let created = api
        .post(
            "/tasks",
            json!({"problem_id": "p", "metadata": {"note\u{0}": "a\u{0}b"}}),
        )
        .await
        .ok(201);
    assert_eq!(
        created["parameters"]["metadata"],
        json!({"note\u{FFFD}": "a\u{FFFD}b"}),
        "NUL becomes U+FFFD, keys too"
    );
    let id = created["id"].as_str().expect("id").to_string();
    api.post("/workers/register", json!({"id": "w1"})).await.ok(201);
    claim(&api, "w1").await.ok(200);
    api.post(
        &format!("/tasks/{id}/logs"),
        json!({"attempt": 1, "entries": [{"level": "info", "message": "before"},
                                         {"level": "info", "message": "out: \u{0}\u{0}"}]}),
    )
    .await
    .ok(204);
    let logs = api.get(&format!("/tasks/{id}/logs")).await.ok(200);
    let messages: Vec<&str> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|entry| entry["message"].as_str())
        .collect();
    assert_eq!(messages, ["before", "out: \u{FFFD}\u{FFFD}"], "the whole batch is kept");
    let done = api
        .post(
            &format!("/tasks/{id}/finish"),
            json!({"attempt": 1, "outcome": {"status": "completed",
                   "result": {"logs": ["\u{0}"], "metrics": {"steps_taken": 1}, "output": {"solution": "Yes\u{0}"}}}}),
        )
        .await
        .ok(200);
    assert_eq!(done["status"], "completed", "the finish landed: {done}");
    assert_eq!(done["result"]["output"]["solution"], "Yes\u{FFFD}");
    assert_eq!(done["result"]["logs"], json!(["\u{FFFD}"]));
}

async fn worker_ids_and_liveness_guard_the_claim(store: Arc<dyn TaskStore>) {
    let api = Api::new(app(store));
    let error = api
        .post("/workers/register", json!({"id": "Bad Id!"}))
        .await
        .error(400, "validation_error");
    assert_eq!(error["details"]["field"], "id", "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains(WORKER_ID_PATTERN),
        "the error says the pattern: {error}"
    );
    api.post("/workers/register", json!({"id": "w\u{0}1"}))
        .await
        .error(400, "validation_error");
    let error = api
        .post("/workers/heartbeat", json!({"worker_id": "Bad Id!", "status": "idle"}))
        .await
        .error(400, "validation_error");
    assert_eq!(error["details"]["field"], "worker_id", "{error}");
    let error = claim(&api, "Bad Id!").await.error(400, "validation_error");
    assert_eq!(error["details"]["field"], "worker_id", "{error}");

    let id = api.post("/tasks", json!({"problem_id": "p"})).await.ok(201)["id"].clone();
    let error = claim(&api, "w-ghost").await.error(404, "not_found");
    assert_eq!(error["details"]["entity"], "worker", "{error}");
    api.post("/workers/register", json!({"id": "worker-001-kind"}))
        .await
        .ok(201);
    api.post("/workers/worker-001-kind/deregister", json!({})).await.ok(204);
    let error = claim(&api, "worker-001-kind").await.error(400, "validation_error");
    assert_eq!(error["details"]["field"], "worker_id", "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains("offline"),
        "{error}"
    );
    let task = api.get(&format!("/tasks/{}", id.as_str().unwrap())).await.ok(200);
    assert_eq!(task["status"], "pending", "refused claims took nothing");
    api.post("/workers/register", json!({"id": "worker-001-kind"}))
        .await
        .ok(201);
    let claimed = claim(&api, "worker-001-kind").await.ok(200);
    assert_eq!(claimed["task"]["id"], id, "a registered, live worker claims");
}
