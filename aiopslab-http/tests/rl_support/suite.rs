//! The online-RL suite (issue 6), written against any `TaskStore` (see
//! `rl_tests!`): batches and groups, `Idempotency-Key`, the dataset export
//! read back line by line, the trajectory route, and completion webhooks
//! delivered to a [`FakeReceiver`] through failures, outages, restarts and
//! two concurrent deliverers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use aiopslab_core::store::prelude::*;
use aiopslab_core::webhook::WebhookStatus;
use aiopslab_core::{
    LlmCall, NewTask, Outcome, Page, StoreError, Task, TaskFilter, TaskId, TaskSort, TaskStatus, TaskStore,
    TerminalStatus, TokenUsage, Trajectory, TrajectoryMessage,
};
use aiopslab_http::app::{serve_with, ServeOptions};
use aiopslab_http::client::{ApiClient, ApiError};
use aiopslab_http::server::{ApiConfig, ApiState};
use aiopslab_http::webhooks::WebhookDeliverer;
use chrono::SecondsFormat;
use serde_json::{json, Value};
use uuid::Uuid;

use super::receiver::{url_of, FakeReceiver};
use super::{
    create, fast_webhooks, run_to_end, trajectory, wait_for_webhook, Api, Backing, RunningApp, RunningDeliverer,
};

const DETECTION: &str = "misconfig_app_hotel_res-detection-1";
const LOCALIZATION: &str = "k8s_target_port-misconfig-localization-1";
const MITIGATION: &str = "k8s_target_port-misconfig-mitigation-1";
const WAIT: Duration = Duration::from_secs(10);

fn id_of(value: &Value) -> TaskId {
    value["id"].as_str().unwrap().parse().unwrap()
}

async fn total_tasks(api: &Api) -> u64 {
    api.get("/tasks?limit=1").await.ok(200)["total"].as_u64().unwrap()
}

fn with_callback(problem: &str, url: &str) -> NewTask {
    NewTask {
        callback_url: Some(url.to_string()),
        ..NewTask::new(problem)
    }
}

pub async fn batch_is_atomic_and_makes_a_group(backing: &Backing) {
    let api = Api::new(backing.store.clone());
    // One invalid task: 400 naming it, nothing created.
    let body = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": DETECTION}, {"problem_id": DETECTION, "max_steps": 0}]}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "tasks[1].max_steps", "{body}");
    let body = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": DETECTION}, {"problem_id": "p", "callback_url": "ftp://x"}]}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "tasks[1].callback_url", "{body}");
    let body = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": DETECTION}, {"problem_id": DETECTION, "bogus": 1}]}),
        )
        .await
        .error(400, "invalid_json");
    assert!(body["error"].as_str().unwrap().contains("tasks[1]"), "{body}");
    for (bad, field) in [
        (json!({}), "tasks"),
        (json!({"tasks": []}), "tasks"),
        (json!({"task": {"problem_id": DETECTION}, "count": 1001}), "count"),
        (json!({"task": {"problem_id": DETECTION}}), "count"),
    ] {
        let body = api.post("/tasks/batch", bad).await.error(400, "validation_error");
        assert_eq!(body["details"]["field"], field, "{body}");
    }
    assert_eq!(total_tasks(&api).await, 0, "nothing was created");

    // A list: created in order, all in one new group.
    let created = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": DETECTION, "priority": 7}, {"problem_id": LOCALIZATION}]}),
        )
        .await
        .ok(201);
    assert_eq!(created["replayed"], false);
    let group = created["group_id"].as_str().unwrap().to_string();
    Uuid::parse_str(&group).unwrap();
    let tasks = created["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["problem_id"], DETECTION);
    assert_eq!(tasks[0]["parameters"]["priority"], 7);
    assert_eq!(tasks[1]["problem_id"], LOCALIZATION);
    for task in tasks {
        assert_eq!(task["status"], "pending");
        assert_eq!(task["group_id"], group.as_str());
        let read = api
            .get(&format!("/tasks/{}", task["id"].as_str().unwrap()))
            .await
            .ok(200);
        assert_eq!(read["group_id"], group.as_str());
    }
    // One task repeated: another group.
    let repeated = api
        .post("/tasks/batch", json!({"task": {"problem_id": DETECTION}, "count": 5}))
        .await
        .ok(201);
    assert_eq!(repeated["tasks"].as_array().unwrap().len(), 5);
    assert_ne!(repeated["group_id"], group.as_str());
    let page = api.get(&format!("/tasks?group_id={group}")).await.ok(200);
    assert_eq!(page["total"], 2);
    api.get("/tasks?group_id=nope").await.error(400, "invalid_query");
    // A plain task has no group.
    let single = api.post("/tasks", json!({"problem_id": DETECTION})).await.ok(201);
    assert_eq!(single["group_id"], Value::Null);
    assert_eq!(total_tasks(&api).await, 8);
}

pub async fn group_reads_back_rewards(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let created = api
        .post(
            "/tasks/batch",
            json!({"task": {"problem_id": DETECTION, "agent_config": {"model": "gpt-4"}}, "count": 4}),
        )
        .await
        .ok(201);
    let group = created["group_id"].as_str().unwrap().to_string();
    let ids: Vec<TaskId> = created["tasks"].as_array().unwrap().iter().map(id_of).collect();
    for (id, reward) in ids.iter().zip([1.0, 0.0, 1.0]) {
        run_to_end(
            &store,
            *id,
            TerminalStatus::Completed,
            Some(trajectory(*id, 2, Some(reward))),
        )
        .await;
    }
    // ids[3] stays pending.

    let summary = api.get(&format!("/groups/{group}")).await.ok(200);
    assert_eq!(summary["group_id"], group.as_str());
    assert_eq!(summary["total"], 4);
    assert_eq!(summary["by_status"], json!({"completed": 3, "pending": 1}));
    let by_id: HashMap<String, Value> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    assert_eq!(by_id.len(), 4);
    for (id, reward) in ids.iter().zip([json!(1.0), json!(0.0), json!(1.0), Value::Null]) {
        let task = &by_id[&id.to_string()];
        assert_eq!(task["reward"], reward, "{task}");
        assert_eq!(task["problem_id"], DETECTION);
    }
    let mut rewards: Vec<f64> = summary["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    rewards.sort_by(f64::total_cmp);
    assert_eq!(rewards, vec![0.0, 1.0, 1.0]);
    let mean = summary["mean_reward"].as_f64().unwrap();
    assert!((mean - 2.0 / 3.0).abs() < 1e-9, "{mean}");

    // The export carries the group too.
    let export = api.get("/trajectories/export?status=completed").await;
    let lines: Vec<Value> = export
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["group_id"] == group.as_str()));

    let body = api
        .get(&format!("/groups/{}", Uuid::new_v4()))
        .await
        .error(404, "not_found");
    assert_eq!(body["details"]["entity"], "group");
    let body = api.get("/groups/nope").await.error(400, "validation_error");
    assert_eq!(body["details"]["field"], "group_id");
}

/// `POST /tasks/batch` takes `min_valid` and `max_refills` (a 400 naming the field when out of range), replays
/// them exactly under an idempotency key, and `GET /groups/{id}` reports the group's refills: a group of 4 with
/// one refill whose member aborts gets a replacement naming it (`replaces`, on the task and in the group), is
/// `running` until it ends, then `complete` with the mean and population variance of the valid rewards.
pub async fn group_refills_over_http(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let task = json!({"problem_id": DETECTION, "agent_config": {"model": "gpt-4"}, "metadata": {"k": "v"}});
    for (extra, field) in [
        (json!({"min_valid": 0}), "min_valid"),
        (json!({"min_valid": 5}), "min_valid"),
        (json!({"max_refills": -1}), "max_refills"),
        (json!({"max_refills": 1001}), "max_refills"),
        (json!({"max_refills": "two"}), "max_refills"),
    ] {
        let mut body = json!({"task": task, "count": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let refused = api.post("/tasks/batch", body.clone()).await;
        assert_eq!(refused.status.as_u16(), 400, "{body}: {}", refused.text());
        assert!(refused.text().contains(field), "{body}: {}", refused.text());
    }
    let listed = json!({"tasks": [task, task], "min_valid": 3});
    let body = api.post("/tasks/batch", listed).await.error(400, "validation_error");
    assert_eq!(
        body["details"]["field"], "min_valid",
        "min_valid is at most the number of tasks"
    );
    assert_eq!(total_tasks(&api).await, 0, "nothing was created");

    let body = json!({"task": task, "count": 4, "max_refills": 1}).to_string();
    let created = api.post_keyed("/tasks/batch", "refills-1", &body).await.ok(201);
    let group = created["group_id"].as_str().unwrap().to_string();
    let ids: Vec<TaskId> = created["tasks"].as_array().unwrap().iter().map(id_of).collect();
    assert!(created["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["replaces"].is_null()));
    let other = json!({"task": task, "count": 4, "max_refills": 2}).to_string();
    api.post_keyed("/tasks/batch", "refills-1", &other)
        .await
        .error(409, "idempotency_conflict");

    let view = api.get(&format!("/groups/{group}")).await.ok(200);
    assert_eq!(
        (
            &view["status"],
            &view["size"],
            &view["min_valid"],
            &view["max_refills"],
            &view["refills"]
        ),
        (&json!("running"), &json!(4), &json!(4), &json!(1), &json!(0)),
        "{view}"
    );
    assert!(
        view["mean_reward"].is_null() && view["reward_variance"].is_null(),
        "{view}"
    );

    for (id, reward) in ids.iter().take(3).zip([1.0, 0.0, 1.0]) {
        run_to_end(
            &store,
            *id,
            TerminalStatus::Completed,
            Some(trajectory(*id, 1, Some(reward))),
        )
        .await;
    }
    run_to_end(&store, ids[3], TerminalStatus::Failed, None).await;
    let view = api.get(&format!("/groups/{group}")).await.ok(200);
    assert_eq!(
        (
            &view["status"],
            &view["refills"],
            &view["valid"],
            &view["aborted"],
            &view["total"]
        ),
        (&json!("running"), &json!(1), &json!(3), &json!(1), &json!(5)),
        "{view}"
    );
    let refill = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["replaces"] == ids[3].to_string())
        .unwrap_or_else(|| panic!("a member replaces the aborted one: {view}"));
    assert_eq!(refill["status"], "pending");
    let refill_id = id_of(refill);
    let served = api.get(&format!("/tasks/{refill_id}")).await.ok(200);
    assert_eq!(
        served["replaces"],
        ids[3].to_string(),
        "the task JSON names what it replaces"
    );
    assert_eq!(served["group_id"], group.as_str());
    assert_eq!(
        served["parameters"]["metadata"],
        json!({"k": "v"}),
        "the same parameters"
    );

    run_to_end(
        &store,
        refill_id,
        TerminalStatus::Completed,
        Some(trajectory(refill_id, 1, Some(0.0))),
    )
    .await;
    let view = api.get(&format!("/groups/{group}")).await.ok(200);
    assert_eq!(
        (&view["status"], &view["refills"], &view["valid"], &view["aborted"]),
        (&json!("complete"), &json!(1), &json!(4), &json!(1)),
        "{view}"
    );
    assert_eq!(view["mean_reward"].as_f64(), Some(0.5), "{view}");
    assert_eq!(view["reward_variance"].as_f64(), Some(0.25), "{view}");

    // A replay answers the batch's own tasks, as they are now: not the replacement.
    let replay = api.post_keyed("/tasks/batch", "refills-1", &body).await;
    let replayed = replay.ok(201);
    assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    let replayed_ids: Vec<TaskId> = replayed["tasks"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(replayed_ids, ids);
    assert_eq!(replayed["tasks"][3]["status"], "failed");
}

pub async fn idempotency_key_replays_and_conflicts(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let body = format!(r#"{{"problem_id": "{DETECTION}", "metadata": {{"try": 1}}}}"#);
    let first = api.post_keyed("/tasks", "key-1", &body).await;
    let task = first.ok(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = api.post_keyed("/tasks", "key-1", &body).await;
    assert_eq!(again.ok(201)["id"], task["id"]);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(total_tasks(&api).await, 1);

    // A replay answers the task as it is now.
    run_to_end(&store, id_of(&task), TerminalStatus::Completed, None).await;
    let later = api.post_keyed("/tasks", "key-1", &body).await.ok(201);
    assert_eq!(later["id"], task["id"]);
    assert_eq!(later["status"], "completed");

    // The same key with another request: 409, nothing created.
    let other = format!(r#"{{"problem_id": "{DETECTION}", "metadata": {{"try": 2}}}}"#);
    let conflict = api
        .post_keyed("/tasks", "key-1", &other)
        .await
        .error(409, "idempotency_conflict");
    assert_eq!(conflict["details"]["key"], "key-1");
    let batch = format!(r#"{{"task": {{"problem_id": "{DETECTION}"}}, "count": 3}}"#);
    api.post_keyed("/tasks/batch", "key-1", &batch)
        .await
        .error(409, "idempotency_conflict");
    assert_eq!(total_tasks(&api).await, 1);

    // Batches replay whole, with their group.
    let created = api.post_keyed("/tasks/batch", "batch-1", &batch).await.ok(201);
    assert_eq!(created["replayed"], false);
    let replay = api.post_keyed("/tasks/batch", "batch-1", &batch).await;
    assert_eq!(replay.header("idempotent-replayed").as_deref(), Some("true"));
    let replay = replay.ok(201);
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["group_id"], created["group_id"]);
    let ids = |v: &Value| -> Vec<Value> { v["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect() };
    assert_eq!(ids(&replay), ids(&created));
    assert_eq!(total_tasks(&api).await, 4);

    // A bad key is refused before anything is created; no key, no dedupe.
    let body = api
        .post_keyed("/tasks", "has space", &body)
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "Idempotency-Key");
    api.post("/tasks", json!({"problem_id": DETECTION})).await.ok(201);
    api.post("/tasks", json!({"problem_id": DETECTION})).await.ok(201);
    assert_eq!(total_tasks(&api).await, 6);
}

pub async fn concurrent_same_key_creates_once(backing: &Backing) {
    let api = Api::new(backing.store.clone());
    let batch = format!(r#"{{"task": {{"problem_id": "{DETECTION}"}}, "count": 3}}"#);
    let single = format!(r#"{{"problem_id": "{DETECTION}"}}"#);
    let mut calls = Vec::new();
    for i in 0..16 {
        let api = api.clone();
        let (path, body, key) = if i % 2 == 0 {
            ("/tasks/batch", batch.clone(), "same-batch")
        } else {
            ("/tasks", single.clone(), "same-task")
        };
        calls.push(tokio::spawn(
            async move { (path, api.post_keyed(path, key, &body).await) },
        ));
    }
    let mut answers: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut fresh = 0;
    for call in calls {
        let (path, resp) = call.await.unwrap();
        let body = resp.ok(201);
        if resp.header("idempotent-replayed").is_none() {
            fresh += 1;
        }
        let ids = if path == "/tasks" {
            body["id"].to_string()
        } else {
            body["tasks"].to_string()
        };
        answers.entry(path).or_default().insert(ids);
    }
    assert_eq!(fresh, 2, "one request per key created, the others replayed");
    assert!(
        answers.values().all(|ids| ids.len() == 1),
        "every answer names the same tasks: {answers:?}"
    );
    assert_eq!(
        total_tasks(&api).await,
        4,
        "3 tasks for the batch key, 1 for the task key"
    );
}

/// problem, model, metadata `run`, final status, reward, steps, task type.
type EpisodeSpec = (
    &'static str,
    &'static str,
    &'static str,
    TerminalStatus,
    Option<f64>,
    usize,
    &'static str,
);

/// What the export test expects of one episode.
struct Expected {
    task: Task,
    reward: f64,
    steps: usize,
    task_type: &'static str,
}

pub async fn export_is_valid_line_by_line_and_filters(backing: &Backing) {
    let store = backing.store.clone();
    let config = ApiConfig {
        export_page_size: 3,
        ..ApiConfig::default()
    };
    let api = Api::with_config(store.clone(), config);
    let mut expected: Vec<Expected> = Vec::new();
    let specs: Vec<EpisodeSpec> = vec![
        (
            DETECTION,
            "gpt-4",
            "r1",
            TerminalStatus::Completed,
            Some(1.0),
            3,
            "detection",
        ),
        (
            LOCALIZATION,
            "gpt-4o",
            "r2",
            TerminalStatus::Completed,
            Some(0.0),
            1,
            "localization",
        ),
        (MITIGATION, "gpt-4", "r1", TerminalStatus::Failed, None, 2, "mitigation"),
        (
            DETECTION,
            "llama",
            "r3",
            TerminalStatus::Completed,
            Some(1.0),
            1,
            "detection",
        ),
        (
            DETECTION,
            "llama",
            "r3",
            TerminalStatus::Completed,
            Some(0.0),
            2,
            "detection",
        ),
        (
            DETECTION,
            "llama",
            "r3",
            TerminalStatus::Completed,
            Some(1.0),
            1,
            "detection",
        ),
        (
            DETECTION,
            "llama",
            "r3",
            TerminalStatus::Completed,
            Some(1.0),
            1,
            "detection",
        ),
        (
            DETECTION,
            "llama",
            "r3",
            TerminalStatus::Completed,
            Some(0.0),
            1,
            "detection",
        ),
    ];
    for (problem, model, run, status, reward, steps, task_type) in specs {
        let mut agent_config = serde_json::Map::new();
        agent_config.insert("model".into(), json!(model));
        agent_config.insert("temperature".into(), json!(0.7));
        let mut metadata = serde_json::Map::new();
        metadata.insert("run".into(), json!(run));
        metadata.insert("seed".into(), json!(7));
        let task = create(
            &store,
            NewTask {
                agent_config: Some(agent_config),
                metadata: Some(metadata),
                ..NewTask::new(problem)
            },
        )
        .await;
        let task = run_to_end(&store, task.id, status, Some(trajectory(task.id, steps, reward))).await;
        expected.push(Expected {
            task,
            reward: reward.unwrap_or(0.0),
            steps,
            task_type,
        });
    }
    // Not exported: finished with no trajectory, and pending.
    let bare = create(&store, NewTask::new(DETECTION)).await;
    run_to_end(&store, bare.id, TerminalStatus::Completed, None).await;
    create(&store, NewTask::new(DETECTION)).await;
    expected.sort_by_key(|e| (e.task.created_at, e.task.id));

    let export = api.get("/trajectories/export?outcome=all").await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type").as_deref(), Some("application/x-ndjson"));
    let text = export.text();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "every episode once, across pages of 3: {text}"
    );
    for (line, want) in lines.iter().zip(&expected) {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let task = &want.task;
        assert_eq!(record["task_id"], task.id.to_string(), "(created_at, id) order");
        assert_eq!(record["problem_id"], task.problem_id);
        assert_eq!(record["task_type"], want.task_type);
        assert_eq!(record["status"], task.status.as_str());
        if task.status == TaskStatus::Completed {
            assert_eq!(record["outcome"], "valid");
            assert_eq!(record["reward"].as_f64(), Some(want.reward));
        } else {
            assert_eq!(record["outcome"], "aborted", "a failed run is an infrastructure abort");
            assert_eq!(record["reward"], Value::Null, "an aborted episode is never scored 0");
        }
        assert_eq!(
            record["agent_config"],
            Value::Object(task.parameters.agent_config.clone())
        );
        assert_eq!(record["metadata"], Value::Object(task.parameters.metadata.clone()));
        assert_eq!(record["group_id"], Value::Null);
        assert!(record["evaluation"].is_object());
        let messages = record["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2 + 2 * want.steps);
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[1]["role"], "user");
        for pair in messages[2..].chunks(2) {
            assert_eq!(pair[0]["role"], "assistant");
            assert_eq!(pair[1]["role"], "user", "environment replies are user turns");
        }
        for message in messages {
            assert!(["system", "user", "assistant"].contains(&message["role"].as_str().unwrap()));
            assert!(message["content"].as_str().is_some_and(|c| !c.is_empty()));
            assert_eq!(
                message.as_object().unwrap().len(),
                2,
                "OpenAI chat messages: role and content"
            );
        }
    }

    // The filters below are checked over every outcome (`outcome=all`, unless the query names a status or an
    // outcome); the default, valid episodes only, is checked after them.
    let ids_for = |query: String| {
        let api = api.clone();
        async move {
            let query = if query.contains("status=") || query.contains("outcome=") {
                query
            } else if query.is_empty() {
                "?outcome=all".to_string()
            } else {
                format!("{query}&outcome=all")
            };
            let resp = api.get(&format!("/trajectories/export{query}")).await;
            assert_eq!(resp.status, 200, "{query}: {}", resp.text());
            resp.text()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["task_id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        }
    };
    let want = |pred: &dyn Fn(&Expected) -> bool| -> Vec<String> {
        expected
            .iter()
            .filter(|e| pred(e))
            .map(|e| e.task.id.to_string())
            .collect()
    };
    let model = |e: &Expected| e.task.parameters.agent_config["model"].as_str().unwrap().to_string();
    let run = |e: &Expected| e.task.parameters.metadata["run"].as_str().unwrap().to_string();
    assert_eq!(
        ids_for("?status=completed".into()).await,
        want(&|e| e.task.status == TaskStatus::Completed)
    );
    assert_eq!(
        ids_for("?status=failed".into()).await,
        want(&|e| e.task.status == TaskStatus::Failed)
    );
    assert_eq!(
        ids_for(format!("?problem_id={LOCALIZATION}")).await,
        want(&|e| e.task.problem_id == LOCALIZATION)
    );
    assert_eq!(
        ids_for("?task_type=detection".into()).await,
        want(&|e| e.task_type == "detection")
    );
    assert_eq!(
        ids_for("?task_type=mitigation".into()).await,
        want(&|e| e.task_type == "mitigation")
    );
    assert_eq!(
        ids_for(format!("?task_type=detection&problem_id={LOCALIZATION}")).await,
        Vec::<String>::new()
    );
    assert_eq!(ids_for("?model=gpt-4".into()).await, want(&|e| model(e) == "gpt-4"));
    assert_eq!(ids_for("?metadata=run:r1".into()).await, want(&|e| run(e) == "r1"));
    assert_eq!(
        ids_for("?metadata=run:r3&model=llama&status=completed".into()).await,
        want(&|e| run(e) == "r3")
    );
    assert_eq!(ids_for("?metadata=run:nope".into()).await, Vec::<String>::new());
    let pivot = expected[3].task.created_at;
    let stamp = pivot.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    assert_eq!(
        ids_for(format!("?created_after={stamp}")).await,
        want(&|e| e.task.created_at >= pivot)
    );
    assert_eq!(
        ids_for(format!("?created_before={stamp}")).await,
        want(&|e| e.task.created_at < pivot)
    );

    // Paging by hand: limit, and after = the last line's (created_at, id).
    let all = want(&|_| true);
    assert_eq!(ids_for("?limit=2".into()).await, all[..2].to_vec());
    let last = &expected[1].task;
    let after = format!(
        "{},{}",
        last.created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        last.id
    );
    assert_eq!(ids_for(format!("?after={after}&limit=3")).await, all[2..5].to_vec());
    assert_eq!(ids_for(format!("?after={after}")).await, all[2..].to_vec());
    let valid = want(&|e| e.task.status == TaskStatus::Completed);
    let default = api.get("/trajectories/export").await.text();
    let default_ids: Vec<String> = default
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(default_ids, valid, "the default export holds valid episodes only");
    assert_eq!(ids_for("?outcome=valid".into()).await, valid);
    assert_eq!(
        ids_for("?outcome=aborted".into()).await,
        want(&|e| e.task.status == TaskStatus::Failed)
    );
    assert_eq!(ids_for("?outcome=valid,aborted".into()).await, all);
    assert_eq!(ids_for("?outcome=timeout,cancelled".into()).await, Vec::<String>::new());
    let episode = api.get("/trajectories/export?format=episode&limit=1").await;
    let line: Value = serde_json::from_str(episode.text().trim_end()).unwrap();
    assert_eq!(line["task"]["id"], all[0].as_str());
    assert_eq!(
        line["trajectory"]["messages"][3]["role"], "env",
        "the store's own roles"
    );

    for (query, field) in [
        ("?after=2025-01-01T00:00:00Z", "after"),
        ("?after=yesterday,nope", "after"),
        ("?limit=0", "limit"),
        ("?format=csv", "format"),
        ("?metadata=nocolon", "metadata"),
        ("?task_type=bogus", "task_type"),
        ("?created_after=yesterday", "created_after"),
        ("?status=nope", "status"),
        ("?outcome=failed", "outcome"),
        ("?outcome=valid,", "outcome"),
        ("?outcome=valid,%20aborted", "outcome"),
        ("?min_model_version=-1", "min_model_version"),
        ("?model_version=x", "model_version"),
    ] {
        let body = api
            .get(&format!("/trajectories/export{query}"))
            .await
            .error(400, "invalid_query");
        assert_eq!(body["details"]["field"], field);
    }
}

pub async fn trajectory_route_returns_the_episode(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let task = create(&store, NewTask::new(DETECTION)).await;
    let body = api
        .get(&format!("/tasks/{}/trajectory", task.id))
        .await
        .error(404, "not_found");
    assert_eq!(body["details"]["entity"], "trajectory");
    api.get(&format!("/tasks/{}/trajectory", Uuid::new_v4()))
        .await
        .error(404, "not_found");

    let mut saved: Trajectory = trajectory(task.id, 2, Some(1.0));
    saved.llm_calls = (0..2)
        .map(|step| LlmCall {
            step: Some(step),
            request: vec![TrajectoryMessage::new("system", "You are an SRE agent.")],
            response: format!("exec_shell(\"kubectl get pods\") # {step}"),
            model: Some("gpt-4".into()),
            sampling: serde_json::from_value(json!({"temperature": 0.7, "max_tokens": 512})).unwrap(),
            usage: Some(TokenUsage {
                prompt_tokens: 100 + u64::from(step),
                completion_tokens: 20,
                total_tokens: 120 + u64::from(step),
            }),
            latency_ms: 850,
            logprobs: Some(json!({"content": [{"token": "exec", "token_id": 1234, "logprob": -0.01}]})),
            token_ids: None,
            prompt_token_ids: None,
            model_version: None,
        })
        .collect();
    run_to_end(&store, task.id, TerminalStatus::Completed, Some(saved.clone())).await;
    let read = api.get(&format!("/tasks/{}/trajectory", task.id)).await.ok(200);
    let mut served = saved.clone();
    served.outcome = Some(Outcome::Valid);
    assert_eq!(serde_json::from_value::<Trajectory>(read.clone()).unwrap(), served);
    assert_eq!(read["outcome"], "valid");
    let roles: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "env", "assistant", "env"]);
    assert_eq!(read["llm_calls"][1]["usage"]["total_tokens"], 121);
    assert_eq!(read["llm_calls"][0]["latency_ms"], 850);
    assert_eq!(read["llm_calls"][0]["logprobs"]["content"][0]["token_id"], 1234);
    assert_eq!(read["reward"], 1.0);
    assert_eq!(read["evaluation"]["Detection Accuracy"], "Correct");
}

/// An aborted episode is labelled `aborted` with no reward (not 0) on both read paths, and the policy version of
/// `agent_config.model_version` is validated at create, carried on the trajectory and the export line, and
/// filtered on.
pub async fn outcome_and_policy_version_are_labelled(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let body = api
        .post(
            "/tasks",
            json!({"problem_id": DETECTION, "agent_config": {"model": "policy", "model_version": "v7"}}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "agent_config.model_version", "{body}");

    let episode_of = |version: u64, status: TerminalStatus, reward: f64| {
        let store = store.clone();
        async move {
            let spec = NewTask {
                agent_config: Some(
                    serde_json::from_value(json!({"model": "policy", "model_version": version})).unwrap(),
                ),
                max_retries: Some(0),
                ..NewTask::new(DETECTION)
            };
            let task = create(&store, spec).await;
            run_to_end(&store, task.id, status, Some(trajectory(task.id, 1, Some(reward)))).await
        }
    };
    let aborted = episode_of(7, TerminalStatus::Failed, 0.0).await;
    let valid = episode_of(8, TerminalStatus::Completed, 1.0).await;

    let read = api.get(&format!("/tasks/{}/trajectory", aborted.id)).await.ok(200);
    assert_eq!(read["outcome"], "aborted");
    assert_eq!(
        read["reward"],
        Value::Null,
        "an aborted episode is never scored: {read}"
    );
    assert_eq!(read["model_version"], 7);
    assert!(read["evaluation"].is_object(), "the raw evaluation is kept");
    let read = api.get(&format!("/tasks/{}/trajectory", valid.id)).await.ok(200);
    assert_eq!(
        (read["outcome"].as_str(), read["reward"].as_f64()),
        (Some("valid"), Some(1.0))
    );

    let lines = |query: &str| {
        let api = api.clone();
        let query = query.to_string();
        async move {
            let resp = api.get(&format!("/trajectories/export{query}")).await;
            assert_eq!(resp.status, 200, "{query}: {}", resp.text());
            resp.text()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let aborted_lines = lines("?outcome=aborted").await;
    assert_eq!(aborted_lines.len(), 1);
    assert_eq!(aborted_lines[0]["reward"], Value::Null);
    assert_eq!(aborted_lines[0]["model_version"], 7);
    let recent = lines("?min_model_version=8").await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["task_id"], valid.id.to_string());
    assert!(lines("?min_model_version=9&outcome=all").await.is_empty());
    let exact = lines("?model_version=7&outcome=all").await;
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0]["task_id"], aborted.id.to_string());
    // The store's own form (what HttpStore reads) is the stored record, unlabelled; filters still apply.
    let episode = lines("?format=episode&outcome=aborted").await;
    assert_eq!(episode.len(), 1);
    assert_eq!(episode[0]["task"]["status"], "failed");
    assert_eq!(episode[0]["trajectory"].get("outcome"), None);
}

pub async fn webhook_is_signed_and_retried_until_delivered(backing: &Backing) {
    let store = backing.store.clone();
    let state = ApiState::with_default_scheduler(store.clone(), super::private_destinations());
    let metrics = state.metrics.clone();
    let api = Api::from_state(state);
    let receiver = FakeReceiver::start(2, Some("s3cret")).await;
    let task = api
        .post(
            "/tasks",
            json!({"problem_id": DETECTION, "callback_url": receiver.url()}),
        )
        .await
        .ok(201);
    let id = id_of(&task);
    assert_eq!(
        api.get(&format!("/tasks/{id}/webhooks")).await.ok(200)["deliveries"],
        json!([]),
        "nothing until the task ends"
    );
    run_to_end(
        &store,
        id,
        TerminalStatus::Completed,
        Some(trajectory(id, 1, Some(1.0))),
    )
    .await;
    let outbox = api.get(&format!("/tasks/{id}/webhooks")).await.ok(200);
    assert_eq!(outbox["task_id"], id.to_string());
    assert_eq!(outbox["deliveries"][0]["status"], "pending");
    assert_eq!(outbox["deliveries"][0]["url"], receiver.url());

    let deliverer = WebhookDeliverer::new(store.clone(), fast_webhooks(Some("s3cret"), 5)).unwrap();
    let deliverer = RunningDeliverer::start_with(deliverer.with_metrics(metrics));
    let received = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(received.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 500, 200]);
    let shown = api.get(&format!("/tasks/{id}")).await.ok(200);
    for post in &received {
        assert_eq!(
            post.signature_ok,
            Some(true),
            "HMAC-SHA256 of the body under the secret"
        );
        assert_eq!(post.event, "task.completed");
        assert_eq!(post.body, shown, "the body is the task as GET /tasks/{{id}} shows it");
    }
    let delivery = wait_for_webhook(&api, id, WAIT, |d| d["status"] == "delivered").await;
    let delivery_id = delivery["id"].as_i64().unwrap().to_string();
    assert!(received.iter().all(|r| r.delivery == delivery_id));
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{delivery:#}");
    for (i, (attempt, code)) in attempts.iter().zip([500, 500, 200]).enumerate() {
        assert_eq!(attempt["attempt"], i + 1);
        assert_eq!(attempt["status_code"], code);
        assert_eq!(attempt["error"].is_null(), code == 200, "{attempt}");
    }
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    assert!(delivery["delivered_at"].is_string());
    assert!(delivery["next_attempt_at"].is_null());
    let scrape = api.get("/metrics").await.text();
    assert!(
        scrape.contains("aiopslab_webhook_attempts_total{outcome=\"retry\"} 2"),
        "{scrape}"
    );
    assert!(
        scrape.contains("aiopslab_webhook_attempts_total{outcome=\"delivered\"} 1"),
        "{scrape}"
    );

    // Cancelling a pending task is terminal too.
    let cancelled = api
        .post(
            "/tasks",
            json!({"problem_id": DETECTION, "callback_url": receiver.url()}),
        )
        .await
        .ok(201);
    api.send(
        axum::http::Method::DELETE,
        &format!("/tasks/{}", cancelled["id"].as_str().unwrap()),
        &[],
        axum::body::Body::empty(),
    )
    .await
    .ok(200);
    let received = receiver.wait_for_successes(2, WAIT).await;
    let last = received.last().unwrap();
    assert_eq!(last.event, "task.cancelled");
    assert_eq!(last.body["id"], cancelled["id"]);
    assert_eq!(last.body["status"], "cancelled");

    // No callback_url, no webhook; an unknown task is a 404.
    let plain = create(&store, NewTask::new(DETECTION)).await;
    run_to_end(&store, plain.id, TerminalStatus::Completed, None).await;
    assert_eq!(
        api.get(&format!("/tasks/{}/webhooks", plain.id)).await.ok(200)["deliveries"],
        json!([])
    );
    api.get(&format!("/tasks/{}/webhooks", Uuid::new_v4()))
        .await
        .error(404, "not_found");
    deliverer.stop().await;
}

pub async fn webhook_waits_for_a_receiver_that_is_down(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let addr = FakeReceiver::dead_addr().await;
    let task = create(&store, with_callback(DETECTION, &url_of(addr))).await;
    run_to_end(&store, task.id, TerminalStatus::Failed, None).await;
    let deliverer = RunningDeliverer::start(store.clone(), fast_webhooks(None, 50));
    let down = wait_for_webhook(&api, task.id, WAIT, |d| d["attempts"].as_array().unwrap().len() >= 2).await;
    assert_eq!(down["status"], "pending");
    for attempt in down["attempts"].as_array().unwrap() {
        assert!(attempt["status_code"].is_null());
        assert!(
            attempt["error"].as_str().unwrap().contains("cannot connect"),
            "{attempt}"
        );
    }

    let receiver = FakeReceiver::start_on(addr, 0, None).await;
    let received = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event, "task.failed");
    assert_eq!(received[0].signature_ok, None, "no secret, no signature");
    let delivered = wait_for_webhook(&api, task.id, WAIT, |d| d["status"] == "delivered").await;
    let attempts = delivered["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{delivered:#}");
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    deliverer.stop().await;
}

pub async fn webhook_survives_a_server_restart(backing: &Backing) {
    let receiver = FakeReceiver::start(1, Some("k")).await;
    let mut config = fast_webhooks(Some("k"), 5);
    config.backoff.initial = Duration::from_millis(300);
    config.backoff.max = Duration::from_millis(300);
    // First server (API + deliverer on a socket): one failed attempt, then it stops.
    let first_store = backing.store.clone();
    let before = create(&first_store, with_callback(DETECTION, &receiver.url())).await;
    run_to_end(&first_store, before.id, TerminalStatus::Completed, None).await;
    let first = RunningApp::start(first_store.clone(), config.clone()).await;
    first
        .wait_for_webhook(before.id, WAIT, |d| d["attempts"].as_array().unwrap().len() == 1)
        .await;
    first.stop().await;
    // While no server runs, another task ends.
    let during = create(&first_store, with_callback(MITIGATION, &receiver.url())).await;
    run_to_end(&first_store, during.id, TerminalStatus::Timeout, None).await;
    drop(first_store);

    // Second server on the same database (or the same in-memory store).
    let second = RunningApp::start((backing.reopen)().await, config).await;
    let received = receiver.wait_for_successes(2, WAIT).await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let for_task = |id: TaskId| received.iter().filter(|r| r.body["id"] == id.to_string()).count();
    assert_eq!(
        for_task(before.id),
        2,
        "one failed attempt before the restart, one after"
    );
    assert_eq!(for_task(during.id), 1);
    assert!(received.iter().all(|r| r.signature_ok == Some(true)));
    let delivered = second
        .wait_for_webhook(before.id, WAIT, |d| d["status"] == "delivered")
        .await;
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.iter().map(|a| a["status_code"].clone()).collect::<Vec<_>>(),
        [json!(500), json!(200)]
    );
    let delivered = second
        .wait_for_webhook(during.id, WAIT, |d| d["status"] == "delivered")
        .await;
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 1);
    assert!(received.iter().any(|r| r.event == "task.timeout"));
    second.stop().await;
}

pub async fn webhook_gives_up_after_max_attempts(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let receiver = FakeReceiver::start(usize::MAX, None).await;
    let task = create(&store, with_callback(DETECTION, &receiver.url())).await;
    run_to_end(&store, task.id, TerminalStatus::Completed, None).await;
    let deliverer = RunningDeliverer::start(store.clone(), fast_webhooks(None, 3));
    let failed = wait_for_webhook(&api, task.id, WAIT, |d| d["status"] == "failed").await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 3, "{failed:#}");
    assert!(failed["next_attempt_at"].is_null());
    assert!(failed["delivered_at"].is_null());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt after the last");
    deliverer.stop().await;
}

pub async fn two_deliverers_deliver_each_webhook_once(backing: &Backing) {
    const TASKS: usize = 24;
    let receiver = FakeReceiver::start(0, None).await;
    let store = backing.store.clone();
    let other: Arc<dyn TaskStore> = (backing.reopen)().await;
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let task = create(&store, with_callback(DETECTION, &receiver.url())).await;
        run_to_end(&store, task.id, TerminalStatus::Completed, None).await;
        ids.push(task.id);
    }
    let a = RunningDeliverer::start(store.clone(), fast_webhooks(None, 5));
    let b = RunningDeliverer::start(other, fast_webhooks(None, 5));
    receiver.wait_for_successes(TASKS, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.stop().await;
    b.stop().await;
    let received = receiver.received();
    assert_eq!(received.len(), TASKS, "each webhook POSTed once");
    let deliveries: HashSet<&str> = received.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(deliveries.len(), TASKS);
    let tasks: HashSet<String> = received
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tasks, ids.iter().map(|id| id.to_string()).collect());
    let api = Api::new(store);
    for id in ids {
        let delivery = wait_for_webhook(&api, id, WAIT, |d| d["status"] == "delivered").await;
        assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    }
}

pub async fn openapi_lists_the_rl_routes(backing: &Backing) {
    let api = Api::new(backing.store.clone());
    let doc = api.get("/openapi.json").await.ok(200);
    let paths = &doc["paths"];
    for (path, method) in [
        ("/tasks/batch", "post"),
        ("/groups/{group_id}", "get"),
        ("/tasks/{id}/webhooks", "get"),
        ("/tasks/{id}/trajectory", "get"),
        ("/trajectories/export", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let params: Vec<&str> = paths["/trajectories/export"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "status",
        "problem_id",
        "task_type",
        "model",
        "metadata",
        "created_after",
        "created_before",
    ] {
        assert!(params.contains(&name), "{name} in {params:?}");
    }
    let create_params = paths["/tasks"]["post"]["parameters"].to_string();
    assert!(create_params.contains("Idempotency-Key"), "{create_params}");
    assert!(paths["/tasks"]["post"]["responses"]["409"].is_object());
    for schema in [
        "ExportRecord",
        "WebhookDelivery",
        "CreatedBatch",
        "NewBatch",
        "GroupSummary",
        "WebhookList",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} schema missing"
        );
    }
    // Group-aware retry: the batch's fields in both shapes, the group's standing, a task's `replaces`.
    let schemas = &doc["components"]["schemas"];
    for shape in schemas["NewBatch"]["oneOf"].as_array().expect("NewBatch is a oneOf") {
        assert_eq!(shape["properties"]["min_valid"]["minimum"], 1, "{shape}");
        assert_eq!(shape["properties"]["max_refills"]["maximum"], 1000, "{shape}");
    }
    for field in [
        "status",
        "size",
        "min_valid",
        "max_refills",
        "refills",
        "valid",
        "aborted",
        "mean_reward",
        "reward_variance",
    ] {
        assert!(
            schemas["GroupSummary"]["properties"][field].is_object(),
            "GroupSummary.{field}"
        );
    }
    assert!(schemas["GroupStatus"].is_object(), "GroupStatus schema missing");
    assert!(schemas["Task"]["properties"]["replaces"].is_object(), "Task.replaces");
}

/// `ApiClient` (the Rust client of the public API) over a real socket to
/// `app::serve_with`, which also runs the webhook deliverer: batches with
/// idempotency keys, the group filter, webhook listing.
pub async fn remote_client_batches_and_served_webhooks(backing: &Backing) {
    let receiver = FakeReceiver::start(0, Some("e2e")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::with_default_scheduler(backing.store.clone(), super::private_destinations());
    let stop = tokio_util::sync::CancellationToken::new();
    let options = ServeOptions {
        sweep_interval: None,
        webhooks: Some(fast_webhooks(Some("e2e"), 3)),
    };
    let server = tokio::spawn(serve_with(listener, state, options, stop.clone()));
    let client = ApiClient::new(&url, None).unwrap();

    let spec = |problem: &str, callback: Option<String>| {
        NewTask {
            callback_url: callback,
            ..NewTask::new(problem)
        }
        .validate()
        .unwrap()
    };
    let batch = || BatchSpec {
        group_id: Some(Uuid::new_v4()),
        specs: vec![spec(DETECTION, Some(receiver.url())), spec(LOCALIZATION, None)],
        policy: Default::default(),
    };
    let key = |k: &str| Some(IdempotencyKey::new(k, "computed by the server").unwrap());
    let created = client.create_batch(batch(), key("remote-1")).await.unwrap();
    assert!(!created.replayed);
    let group = created.group_id.expect("a batch joins a group");
    assert!(created.tasks.iter().all(|t| t.group_id == Some(group)));
    let replay = client.create_batch(batch(), key("remote-1")).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.group_id, Some(group));
    let ids = |c: &CreatedBatch| c.tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&replay), ids(&created));
    let other = BatchSpec::ungrouped(vec![spec(MITIGATION, None), spec(MITIGATION, None)]);
    match client.create_batch(other, key("remote-1")).await {
        Err(ApiError {
            error: StoreError::IdempotencyConflict { key },
            server: Some(answer),
        }) => {
            assert_eq!(key, "remote-1");
            // The server's own answer comes along: its status, code and message.
            assert_eq!((answer.status, answer.code.as_str()), (409, "idempotency_conflict"));
            assert!(answer.message.contains("remote-1"), "{answer:?}");
        }
        other => panic!("expected an idempotency conflict, got {other:?}"),
    }
    let single = || BatchSpec::ungrouped(vec![spec(DETECTION, None)]);
    let one = client.create_batch(single(), key("remote-2")).await.unwrap();
    let again = client.create_batch(single(), key("remote-2")).await.unwrap();
    assert!(!one.replayed && again.replayed);
    assert_eq!((one.group_id, one.tasks[0].group_id), (None, None));
    assert_eq!(ids(&one), ids(&again));
    let filter = TaskFilter::default().with_group_id(Some(group));
    let page = client
        .list_tasks(
            &TaskQuery::new(filter.clone())
                .sorted(TaskSort::CreatedAsc)
                .page(Page { limit: 10, offset: 0 }),
        )
        .await
        .unwrap();
    assert_eq!(page.total, 2);

    // The server's deliverer (started by serve_with) delivers, signed.
    let hooked = created.tasks[0].id;
    run_to_end(&backing.store, hooked, TerminalStatus::Completed, None).await;
    let received = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(received[0].signature_ok, Some(true));
    assert_eq!(received[0].body["id"], hooked.to_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let deliveries = client.list_webhooks(hooked).await.unwrap();
        if deliveries.first().is_some_and(|d| d.status == WebhookStatus::Delivered) {
            assert_eq!(deliveries[0].attempts.len(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.list_webhooks(created.tasks[1].id).await.unwrap().is_empty());
    match client.list_webhooks(Uuid::new_v4()).await.map_err(StoreError::from) {
        Err(StoreError::NotFound { entity: "task", .. }) => {}
        other => panic!("expected task not found, got {other:?}"),
    }
    // Delivering stays in the server: `ApiClient` has no `WebhookOutbox`
    // (claiming deliveries over HTTP does not compile).

    // A batch's group policy travels in the body and reads back in the group.
    let refilled = BatchSpec {
        policy: aiopslab_core::GroupPolicy {
            min_valid: Some(1),
            max_refills: 3,
        },
        ..BatchSpec::ungrouped(vec![spec(DETECTION, None), spec(DETECTION, None)])
    };
    let created = client.create_batch(refilled, None).await.unwrap();
    let group = client
        .get_group(created.group_id.expect("a batch joins a group"))
        .await
        .unwrap();
    assert_eq!(
        (group.size, group.min_valid, group.max_refills, group.refills),
        (2, 1, 3, 0)
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Issue 11, item 10: with the default settings the deliverer POSTs to no
/// loopback, private, link-local or metadata address — in any spelling, and
/// also behind a name that resolves to one — and records the refusal as the
/// one, final attempt. The receiver on 127.0.0.1 that every URL points at
/// gets nothing.
pub async fn webhook_refuses_private_destinations(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let receiver = FakeReceiver::start(0, None).await;
    let port = receiver.addr.port();
    let urls = [
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        (format!("http://2130706433:{port}/hook"), "loopback"),
        (format!("http://0x7f.0.0.1:{port}/hook"), "loopback"),
        (format!("http://[::1]:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "IPv4-mapped"),
        (format!("http://0.0.0.0:{port}/hook"), "unspecified"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), "metadata"),
        ("http://10.0.0.1/hook".to_string(), "RFC 1918"),
        ("http://[fd00::1]/hook".to_string(), "unique-local"),
        ("http://[fe80::1]/hook".to_string(), "link-local"),
        // A name: refused on its resolved address, by the client's resolver.
        (format!("http://localhost:{port}/hook"), "resolves to"),
    ];
    let mut tasks = Vec::new();
    for (url, _) in &urls {
        // Through the store: the API would refuse the literal ones at create already.
        let task = create(&store, with_callback(DETECTION, url)).await;
        run_to_end(&store, task.id, TerminalStatus::Completed, None).await;
        tasks.push(task.id);
    }
    let config = aiopslab_http::webhooks::WebhookConfig {
        allow_private_destinations: false,
        ..fast_webhooks(None, 5)
    };
    let deliverer = RunningDeliverer::start(store.clone(), config);
    for (task, (url, reason)) in tasks.iter().zip(&urls) {
        let failed = wait_for_webhook(&api, *task, WAIT, |d| d["status"] == "failed").await;
        let attempts = failed["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{url}: refused once, never retried: {failed:#}");
        assert!(attempts[0]["status_code"].is_null(), "{url}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(error.starts_with("refused: callback_url"), "{url}: {error}");
        assert!(error.contains(reason), "{url}: {error}");
        assert!(error.contains("--webhook-allow-private-destinations"), "{url}: {error}");
        assert!(failed["next_attempt_at"].is_null(), "{url}");
    }
    deliverer.stop().await;
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver: {:#?}",
        receiver.received()
    );

    // With the flag, the same loopback receiver is reachable (by name too).
    let allowed = create(
        &store,
        with_callback(DETECTION, &format!("http://localhost:{port}/hook")),
    )
    .await;
    run_to_end(&store, allowed.id, TerminalStatus::Completed, None).await;
    let deliverer = RunningDeliverer::start(store.clone(), fast_webhooks(None, 5));
    receiver.wait_for_successes(1, WAIT).await;
    wait_for_webhook(&api, allowed.id, WAIT, |d| d["status"] == "delivered").await;
    deliverer.stop().await;
}

/// Issue 11, item 10 at create time: a `callback_url` that names a
/// non-public address literally (or `localhost`) is a 400 naming the field,
/// unless the server allows private destinations; a public name passes (it
/// is checked again, resolved, at delivery).
pub async fn callback_url_on_private_addresses_is_refused_at_create(backing: &Backing) {
    let strict = Api::with_config(backing.store.clone(), ApiConfig::default());
    let before = total_tasks(&strict).await;
    for url in [
        "http://127.0.0.1:9999/hook",
        "http://2130706433/hook",
        "http://0.0.0.0/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.10/hook",
        "http://localhost:9999/hook",
    ] {
        let body = strict
            .post("/tasks", json!({"problem_id": DETECTION, "callback_url": url}))
            .await
            .error(400, "validation_error");
        assert_eq!(body["details"]["field"], "callback_url", "{url}: {body}");
        assert!(
            body["details"]["message"]
                .as_str()
                .unwrap()
                .contains("--webhook-allow-private-destinations"),
            "{url}: {body}"
        );
    }
    let body = strict
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": DETECTION, "callback_url": "https://hooks.example.com/a"},
                             {"problem_id": DETECTION, "callback_url": "http://10.1.2.3/hook"}]}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "tasks[1].callback_url", "{body}");
    let body = strict
        .post(
            "/tasks/batch",
            json!({"task": {"problem_id": DETECTION, "callback_url": "http://[fe80::1]/hook"}, "count": 3}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "task.callback_url", "{body}");
    assert_eq!(total_tasks(&strict).await, before, "nothing was created");

    strict
        .post(
            "/tasks",
            json!({"problem_id": DETECTION, "callback_url": "https://hooks.example.com/aiopslab"}),
        )
        .await
        .ok(201);
    // The flag the tests' own receivers use.
    let open = Api::new(backing.store.clone());
    open.post(
        "/tasks",
        json!({"problem_id": DETECTION, "callback_url": "http://127.0.0.1:9999/hook"}),
    )
    .await
    .ok(201);
}

/// Issue 11, item 9: a delivery that used up its tries is `failed`, and
/// `POST /tasks/{id}/webhooks/{delivery_id}/redeliver` (client token) tries
/// it again on demand — over a real socket to `app::serve_with`, with the
/// same delivery id, the next attempt number and the signature.
pub async fn failed_webhook_is_redelivered_on_request(backing: &Backing) {
    let store = backing.store.clone();
    let addr = FakeReceiver::dead_addr().await;
    let task = create(&store, with_callback(DETECTION, &url_of(addr))).await;
    let pending = create(&store, with_callback(LOCALIZATION, &url_of(addr))).await;
    let config = super::private_destinations()
        .with_client_token("client-secret")
        .with_worker_token("worker-secret");
    let state = ApiState::with_default_scheduler(store.clone(), config);
    let app = RunningApp::start_with(state, fast_webhooks(Some("k"), 2)).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{}{path}", app.url)).bearer_auth("client-secret");
        async move { request.send().await.unwrap() }
    };
    let redeliver = |task: TaskId, delivery: &str, token: Option<&'static str>| {
        let mut request = http.post(format!("{}/tasks/{task}/webhooks/{delivery}/redeliver", app.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    };

    run_to_end(&store, task.id, TerminalStatus::Completed, None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        let list: Value = get(format!("/tasks/{}/webhooks", task.id)).await.json().await.unwrap();
        if list["deliveries"][0]["status"] == "failed" {
            break list["deliveries"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "not failed: {list:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 2, "{failed:#}");
    let delivery = failed["id"].as_i64().unwrap().to_string();

    // The client token guards it, like every public route.
    let (status, body) = redeliver(task.id, &delivery, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, body) = redeliver(task.id, &delivery, Some("worker-secret")).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");

    // Still down: tried, recorded, still failed (and not retried on its own).
    let (status, body) = redeliver(task.id, &delivery, Some("client-secret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let attempts = body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{body:#}");
    assert!(
        attempts[2]["error"].as_str().unwrap().contains("cannot connect"),
        "{body:#}"
    );
    assert!(body["next_attempt_at"].is_null());

    // The receiver is back: one redelivery delivers it, signed, same id, attempt 4.
    let receiver = FakeReceiver::start_on(addr, 0, Some("k")).await;
    let (status, body) = redeliver(task.id, &delivery, Some("client-secret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivered", "{body}");
    assert_eq!(body["attempts"].as_array().unwrap().len(), 4, "{body:#}");
    assert_eq!(body["attempts"][3]["status_code"], 200);
    assert!(body["delivered_at"].is_string());
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].delivery, delivery);
    assert_eq!(received[0].attempt, "4");
    assert_eq!(received[0].signature_ok, Some(true));
    assert_eq!(received[0].body["id"], task.id.to_string());

    // Only a failed delivery is redelivered.
    let (status, body) = redeliver(task.id, &delivery, Some("client-secret")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("webhook_not_failed")),
        "{body}"
    );
    assert_eq!(body["details"]["status"], "delivered", "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "a delivered webhook is not sent again");

    // Unknown task, unknown delivery, another task's delivery, malformed ids.
    let (status, body) = redeliver(Uuid::new_v4(), &delivery, Some("client-secret")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = redeliver(task.id, "987654321", Some("client-secret")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(body["details"]["entity"], "webhook", "{body}");
    let (status, _) = redeliver(pending.id, &delivery, Some("client-secret")).await;
    assert_eq!(status, 404, "a delivery is redelivered only under its own task");
    receiver.stop().await;
    for bad in ["abc", "0", "-1"] {
        let (status, body) = redeliver(task.id, bad, Some("client-secret")).await;
        assert_eq!(
            (status, body["details"]["field"].as_str()),
            (400, Some("delivery_id")),
            "{bad}: {body}"
        );
    }
    let response = http
        .post(format!("{}/tasks/nope/webhooks/1/redeliver", app.url))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["details"]["field"], "id", "{body}");

    // The route is in the document.
    let doc: Value = http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &doc["paths"]["/tasks/{id}/webhooks/{delivery_id}/redeliver"]["post"];
    for status in ["200", "400", "401", "404", "409", "501"] {
        assert!(route["responses"][status].is_object(), "{status} in {route:#}");
    }
    app.stop().await;

    // A pending delivery (tries left) is not redelivered either: here no
    // deliverer runs, so it stays pending.
    run_to_end(&store, pending.id, TerminalStatus::Failed, None).await;
    let deliverer = WebhookDeliverer::new(store.clone(), fast_webhooks(None, 2)).unwrap();
    let idle = Api::from_state(
        ApiState::with_default_scheduler(store.clone(), super::private_destinations()).with_webhooks(deliverer),
    );
    let list = idle.get(&format!("/tasks/{}/webhooks", pending.id)).await.ok(200);
    assert_eq!(list["deliveries"][0]["status"], "pending", "{list:#}");
    let pending_delivery = list["deliveries"][0]["id"].as_i64().unwrap();
    let body = idle
        .post(
            &format!("/tasks/{}/webhooks/{pending_delivery}/redeliver", pending.id),
            json!({}),
        )
        .await
        .error(409, "webhook_not_failed");
    assert_eq!(body["details"]["status"], "pending", "{body}");

    // A router with no deliverer says so.
    let bare = Api::new(store.clone());
    bare.post(&format!("/tasks/{}/webhooks/{delivery}/redeliver", task.id), json!({}))
        .await
        .error(501, "webhooks_disabled");
    bare.post(&format!("/tasks/{}/webhooks/1/redeliver", Uuid::new_v4()), json!({}))
        .await
        .error(404, "not_found");
}

/// Issue 11, item 9: the default schedule (1 s doubling to 1 h, 44 tries)
/// is what the deliverer applies: after a first failure the delivery is
/// still pending and due again in 0.75-1 s.
pub async fn default_schedule_retries_after_a_second(backing: &Backing) {
    let store = backing.store.clone();
    let api = Api::new(store.clone());
    let receiver = FakeReceiver::start(usize::MAX, None).await;
    let task = create(&store, with_callback(DETECTION, &receiver.url())).await;
    run_to_end(&store, task.id, TerminalStatus::Completed, None).await;
    let config = aiopslab_http::webhooks::WebhookConfig {
        poll_interval: Duration::from_millis(20),
        allow_private_destinations: true,
        ..aiopslab_http::webhooks::WebhookConfig::default()
    };
    assert_eq!(config.max_attempts, 44);
    assert!(config.retry_window().0 > Duration::from_secs(24 * 3600));
    let deliverer = RunningDeliverer::start(store.clone(), config);
    wait_for_webhook(&api, task.id, WAIT, |d| d["attempts"].as_array().unwrap().len() == 1).await;
    deliverer.stop().await;
    // Read again once nothing moves (PgStore reads a delivery and its attempts
    // in two statements, so a read during the attempt may mix two states).
    let once = api.get(&format!("/tasks/{}/webhooks", task.id)).await.ok(200)["deliveries"][0].clone();
    assert_eq!(once["attempts"].as_array().unwrap().len(), 1, "{once:#}");
    assert_eq!(once["status"], "pending", "{once:#}");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let wait = at(&once["next_attempt_at"]) - at(&once["attempts"][0]["attempted_at"]);
    let wait_ms = wait.num_milliseconds();
    assert!((700..=1100).contains(&wait_ms), "next try in {wait_ms} ms: {once:#}");
}
