//! The API suite's checks of experiments: a task's `experiment` (create, batches, the task JSON, the listing
//! filter, validation naming the field), `PUT`/`GET /experiments` (limits and counts, bad input, 501 without the
//! store capability), and the claim keeping a limit set over HTTP.

use std::sync::Arc;

use aiopslab_core::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use aiopslab_core::store::StoreParts;
use aiopslab_core::{
    CancelOutcome, LogEntry, LogQuery, StoreResult, Task, TaskApi, TaskId, TaskPage, TaskQuery, TaskSpec, TaskStore,
    Trajectory,
};
use async_trait::async_trait;
use serde_json::{json, Value};

use super::suite::{api, claim, PROBLEM};

/// A task names its experiment: in the created task, when read back, in batches; `GET /tasks?experiment=` lists
/// exactly its tasks (the others have `"experiment": null`).
pub async fn tasks_carry_their_experiment(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let task = api
        .post("/tasks", json!({"problem_id": PROBLEM, "experiment": "grpo-run-7"}))
        .await
        .ok(201);
    assert_eq!(task["experiment"], "grpo-run-7", "{task}");
    let read = api
        .get(&format!("/tasks/{}", task["id"].as_str().unwrap()))
        .await
        .ok(200);
    assert_eq!(read["experiment"], "grpo-run-7");
    let plain = api.post("/tasks", json!({"problem_id": PROBLEM})).await.ok(201);
    assert_eq!(plain["experiment"], Value::Null, "no experiment by default: {plain}");
    let batch = api
        .post(
            "/tasks/batch",
            json!({"task": {"problem_id": PROBLEM, "experiment": "grpo-run-7"}, "count": 3}),
        )
        .await
        .ok(201);
    assert!(batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["experiment"] == "grpo-run-7"));
    let listed = api.get("/tasks?experiment=grpo-run-7&limit=100").await.ok(200);
    assert_eq!(listed["total"], 4, "{listed}");
    assert!(listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["experiment"] == "grpo-run-7"));
    let listed = api.get("/tasks?experiment=grpo-run-7&status=pending").await.ok(200);
    assert_eq!(listed["total"], 4);
    let none = api.get("/tasks?experiment=other").await.ok(200);
    assert_eq!(none["total"], 0);
}

/// Bad experiment names and limits are 400s naming the field, in task bodies, batches, the listing filter, the
/// path and the `PUT` body.
pub async fn experiments_reject_bad_input(store: Arc<dyn TaskStore>) {
    let api = api(store);
    for bad in [json!(""), json!("has space"), json!("x".repeat(129)), json!("a/b")] {
        let body = api
            .post("/tasks", json!({"problem_id": PROBLEM, "experiment": bad}))
            .await
            .error(400, "validation_error");
        assert_eq!(body["details"]["field"], "experiment", "{bad}: {body}");
    }
    let body = api
        .post("/tasks", json!({"problem_id": PROBLEM, "experiment": 7}))
        .await
        .error(400, "invalid_json");
    assert!(body["error"].as_str().unwrap().contains("experiment"), "{body}");
    let body = api
        .post(
            "/tasks/batch",
            json!({"tasks": [{"problem_id": PROBLEM}, {"problem_id": PROBLEM, "experiment": "no good"}]}),
        )
        .await
        .error(400, "validation_error");
    assert_eq!(body["details"]["field"], "tasks[1].experiment", "{body}");
    let body = api.get("/tasks?experiment=no%20good").await.error(400, "invalid_query");
    assert_eq!(body["details"]["field"], "experiment", "{body}");

    for bad in [json!(0), json!(-3), json!(1_000_001)] {
        let body = api
            .put("/experiments/exp", json!({"max_running": bad}))
            .await
            .error(400, "validation_error");
        assert_eq!(body["details"]["field"], "max_running", "{bad}: {body}");
    }
    api.put("/experiments/exp", json!({"max_running": "two"}))
        .await
        .error(400, "invalid_json");
    let body = api
        .put("/experiments/exp", json!({"max_running": 2, "priority": 1}))
        .await
        .error(400, "invalid_json");
    assert!(body["error"].as_str().unwrap().contains("priority"), "{body}");
    for path in ["/experiments/no%20good", &format!("/experiments/{}", "x".repeat(129))] {
        let body = api
            .put(path, json!({"max_running": 1}))
            .await
            .error(400, "validation_error");
        assert_eq!(body["details"]["field"], "name", "{path}: {body}");
        api.get(path).await.error(400, "validation_error");
    }
    api.raw("PUT", "/experiments/exp", "max_running=1")
        .await
        .error(400, "invalid_json");
}

/// `PUT /experiments/{name}` stores a limit (the answer and `GET` show it with the counts), the claim keeps it
/// over the worker protocol, `null` lifts it; `GET /experiments` lists configured experiments and those with live
/// tasks; an unknown one is a 404.
pub async fn experiments_limit_the_claim(store: Arc<dyn TaskStore>) {
    let api = api(store);
    let set = api.put("/experiments/capped", json!({"max_running": 2})).await.ok(200);
    assert_eq!(
        set,
        json!({"name": "capped", "max_running": 2, "running": 0, "pending": 0})
    );
    for _ in 0..3 {
        api.post("/tasks", json!({"problem_id": PROBLEM, "experiment": "capped"}))
            .await
            .ok(201);
    }
    api.post("/tasks", json!({"problem_id": PROBLEM, "experiment": "free"}))
        .await
        .ok(201);
    api.post("/workers/register", json!({"id": "w1"})).await.ok(201);
    let mut experiments_claimed = Vec::new();
    for _ in 0..3 {
        experiments_claimed.push(claim(&api, "w1").await["experiment"].clone());
    }
    experiments_claimed.sort_by_key(|e| e.to_string());
    assert_eq!(
        experiments_claimed,
        [json!("capped"), json!("capped"), json!("free")],
        "two of capped (its limit) and the free one"
    );
    assert_eq!(claim(&api, "w1").await, Value::Null, "capped runs its two");
    let read = api.get("/experiments/capped").await.ok(200);
    assert_eq!(
        read,
        json!({"name": "capped", "max_running": 2, "running": 2, "pending": 1})
    );
    let listed = api.get("/experiments").await.ok(200);
    let names: Vec<&str> = listed["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["capped", "free"], "{listed}");
    assert_eq!(listed["experiments"][1]["max_running"], Value::Null);

    let lifted = api
        .put("/experiments/capped", json!({"max_running": null}))
        .await
        .ok(200);
    assert_eq!(lifted["max_running"], Value::Null);
    assert_eq!(claim(&api, "w1").await["experiment"], "capped", "unlimited again");
    api.get("/experiments/never-seen").await.error(404, "not_found");
}

/// A task API without the [`Experiments`](aiopslab_core::Experiments) capability: everything delegated, no
/// experiments.
struct WithoutExperiments(Arc<dyn TaskStore>);

#[async_trait]
impl TaskApi for WithoutExperiments {
    async fn create_task(&self, spec: TaskSpec) -> StoreResult<Task> {
        self.0.create_task(spec).await
    }

    async fn create_tasks(&self, specs: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        self.0.create_tasks(specs).await
    }

    async fn create_batch(&self, batch: BatchSpec, key: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        self.0.create_batch(batch, key).await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        self.0.get_task(id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        self.0.list_tasks(query).await
    }

    async fn cancel_task(&self, id: TaskId) -> StoreResult<CancelOutcome> {
        self.0.cancel_task(id).await
    }

    async fn get_logs(&self, task_id: TaskId, query: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.0.get_logs(task_id, query).await
    }

    async fn get_trajectory(&self, task_id: TaskId) -> StoreResult<Option<Trajectory>> {
        self.0.get_trajectory(task_id).await
    }

    async fn get_group(&self, group_id: aiopslab_core::GroupId) -> StoreResult<Option<aiopslab_core::Group>> {
        self.0.get_group(group_id).await
    }
}

/// A server whose store keeps no experiments answers the experiment routes 501 `not_implemented`; tasks still
/// carry their experiment.
pub async fn experiments_without_the_capability_are_501(store: Arc<dyn TaskStore>) {
    let parts = StoreParts::new(store.clone()).with_task_api(Arc::new(WithoutExperiments(store)));
    let api = api(Arc::new(parts));
    api.put("/experiments/exp", json!({"max_running": 1}))
        .await
        .error(501, "not_implemented");
    api.get("/experiments/exp").await.error(501, "not_implemented");
    api.get("/experiments").await.error(501, "not_implemented");
    let task = api
        .post("/tasks", json!({"problem_id": PROBLEM, "experiment": "exp"}))
        .await
        .ok(201);
    assert_eq!(task["experiment"], "exp");
}
