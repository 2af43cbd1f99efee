//! Store failures through the API: a transient failure is a 503
//! `unavailable`, a permanent one a 500 `internal`, and neither leaks the
//! store's own message. Driven by `FailingStore`, a fake store whose every
//! call fails with the error it was built with.

mod api_support;

use std::sync::Arc;

use aiopslab_core::batch::{BatchSpec, CreatedBatch, IdempotencyKey};
use aiopslab_core::export::Episode;
use aiopslab_core::webhook::{WebhookAttemptReport, WebhookDelivery};
use aiopslab_core::{
    CancelOutcome, ClaimRequest, EpisodeExport, ExportRequest, FleetView, HeartbeatAck, Housekeeping, LeaseState,
    LeaseToken, LogEntry, LogQuery, NewLogEntry, StoreError, StoreResult, StoreStats, SweepReport, Task, TaskApi,
    TaskId, TaskOutcome, TaskPage, TaskQuery, TaskSpec, Trajectory, WebhookOutbox, Worker, WorkerFilter,
    WorkerHeartbeat, WorkerPage, WorkerQueue, WorkerRegistration,
};
use api_support::{app, Api};
use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;

/// A fake store: every call fails with `error`.
struct FailingStore {
    error: StoreError,
}

impl FailingStore {
    fn fail<T>(&self) -> StoreResult<T> {
        Err(self.error.clone())
    }
}

#[async_trait]
impl WorkerQueue for FailingStore {
    async fn register_worker(&self, _: WorkerRegistration) -> StoreResult<Worker> {
        self.fail()
    }

    async fn heartbeat(&self, _: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        self.fail()
    }

    async fn deregister_worker(&self, _: &str) -> StoreResult<()> {
        self.fail()
    }

    async fn claim(&self, _: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.fail()
    }

    async fn extend_lease(&self, _: LeaseToken) -> StoreResult<LeaseState> {
        self.fail()
    }

    async fn append_logs(&self, _: LeaseToken, _: Vec<NewLogEntry>) -> StoreResult<()> {
        self.fail()
    }

    async fn save_trajectory(&self, _: LeaseToken, _: Trajectory) -> StoreResult<()> {
        self.fail()
    }

    async fn finish(&self, _: LeaseToken, _: TaskOutcome) -> StoreResult<Task> {
        self.fail()
    }
}

#[async_trait]
impl TaskApi for FailingStore {
    async fn create_task(&self, _: TaskSpec) -> StoreResult<Task> {
        self.fail()
    }

    async fn create_tasks(&self, _: Vec<TaskSpec>) -> StoreResult<Vec<Task>> {
        self.fail()
    }

    async fn create_batch(&self, _: BatchSpec, _: Option<IdempotencyKey>) -> StoreResult<CreatedBatch> {
        self.fail()
    }

    async fn get_task(&self, _: TaskId) -> StoreResult<Task> {
        self.fail()
    }

    async fn list_tasks(&self, _: &TaskQuery) -> StoreResult<TaskPage> {
        self.fail()
    }

    async fn cancel_task(&self, _: TaskId) -> StoreResult<CancelOutcome> {
        self.fail()
    }

    async fn get_logs(&self, _: TaskId, _: &LogQuery) -> StoreResult<Vec<LogEntry>> {
        self.fail()
    }

    async fn get_trajectory(&self, _: TaskId) -> StoreResult<Option<Trajectory>> {
        self.fail()
    }

    async fn get_group(&self, _: aiopslab_core::GroupId) -> StoreResult<Option<aiopslab_core::Group>> {
        self.fail()
    }
}

#[async_trait]
impl FleetView for FailingStore {
    async fn get_worker(&self, _: &str) -> StoreResult<Worker> {
        self.fail()
    }

    async fn list_workers(&self, _: &WorkerFilter) -> StoreResult<WorkerPage> {
        self.fail()
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.fail()
    }
}

#[async_trait]
impl Housekeeping for FailingStore {
    async fn sweep(&self) -> StoreResult<SweepReport> {
        self.fail()
    }
}

#[async_trait]
impl EpisodeExport for FailingStore {
    async fn export_episodes(&self, _: &ExportRequest) -> StoreResult<Vec<Episode>> {
        self.fail()
    }
}

#[async_trait]
impl WebhookOutbox for FailingStore {
    async fn claim_webhooks(&self, _: u32, _: std::time::Duration) -> StoreResult<Vec<WebhookDelivery>> {
        self.fail()
    }

    async fn record_webhook_attempt(&self, _: i64, _: WebhookAttemptReport) -> StoreResult<WebhookDelivery> {
        self.fail()
    }
    async fn list_webhooks(&self, _: TaskId) -> StoreResult<Vec<WebhookDelivery>> {
        self.fail()
    }
}

const SECRET: &str = "password=hunter2 at db.internal:5432";

/// Every route that reaches the store, with a valid request.
async fn every_route(api: &Api) -> Vec<(String, api_support::Resp)> {
    let id = Uuid::new_v4();
    let mut out = Vec::new();
    let lease = json!({"attempt": 1});
    for (method, path, body) in [
        ("POST", "/tasks".to_string(), json!({"problem_id": "p"})),
        ("GET", "/tasks".to_string(), json!(null)),
        ("GET", format!("/tasks/{id}"), json!(null)),
        ("DELETE", format!("/tasks/{id}"), json!(null)),
        ("GET", format!("/tasks/{id}/logs"), json!(null)),
        ("GET", format!("/tasks/{id}/logs?follow=true"), json!(null)),
        ("GET", format!("/tasks/{id}/trajectory"), json!(null)),
        ("GET", "/trajectories/export".to_string(), json!(null)),
        (
            "POST",
            "/tasks/batch".to_string(),
            json!({"task": {"problem_id": "p"}, "count": 2}),
        ),
        ("GET", format!("/groups/{id}"), json!(null)),
        ("GET", format!("/tasks/{id}/webhooks"), json!(null)),
        ("GET", "/workers".to_string(), json!(null)),
        ("GET", "/workers/w".to_string(), json!(null)),
        ("GET", "/stats".to_string(), json!(null)),
        ("POST", "/workers/register".to_string(), json!({"id": "w"})),
        (
            "POST",
            "/workers/heartbeat".to_string(),
            json!({"worker_id": "w", "status": "idle"}),
        ),
        (
            "POST",
            "/workers/claim".to_string(),
            json!({"worker_id": "w", "backend_type": "default"}),
        ),
        ("POST", "/workers/w/deregister".to_string(), json!({})),
        ("POST", format!("/tasks/{id}/lease"), lease.clone()),
        (
            "POST",
            format!("/tasks/{id}/logs"),
            json!({"attempt": 1, "entries": []}),
        ),
        (
            "PUT",
            format!("/tasks/{id}/trajectory"),
            json!({"attempt": 1, "trajectory": {"task_id": id, "messages": [], "llm_calls": [], "reward": null, "evaluation": {}}}),
        ),
        (
            "POST",
            format!("/tasks/{id}/finish"),
            json!({"attempt": 1, "outcome": {"status": "completed"}}),
        ),
    ] {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        out.push((format!("{method} {path}"), api.raw(method, &path, body).await));
    }
    out
}

#[tokio::test]
async fn transient_failures_are_503_without_the_store_message() {
    let api = Api::new(app(Arc::new(FailingStore {
        error: StoreError::Unavailable(SECRET.to_string()),
    })));
    for (route, response) in every_route(&api).await {
        let body = response.error(503, "unavailable");
        assert!(!response.text().contains("hunter2"), "{route} leaks: {body}");
        assert!(response.headers.get("retry-after").is_some(), "{route}");
    }
    let health = api.get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "unavailable");
    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("aiopslab_store_up 0"));
}

#[tokio::test]
async fn permanent_failures_are_500_without_the_store_message() {
    let api = Api::new(app(Arc::new(FailingStore {
        error: StoreError::Internal(SECRET.to_string()),
    })));
    for (route, response) in every_route(&api).await {
        let body = response.error(500, "internal");
        assert!(!response.text().contains("hunter2"), "{route} leaks: {body}");
    }
}
