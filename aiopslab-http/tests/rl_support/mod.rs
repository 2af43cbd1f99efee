//! Shared by the `rl_*` test files (the online-RL path of issue 6: batches
//! and groups, idempotency, the dataset export, completion webhooks): a
//! store-agnostic [`Backing`] that can also *reopen* its store (a new
//! `PgStore` on the same database, or the same `MemoryStore`) to play a
//! server restart, a request helper with headers, episode helpers, and the
//! [`FakeReceiver`](receiver::FakeReceiver).

#![allow(dead_code)]

pub mod receiver;
pub mod suite;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::{
    ClaimRequest, NewTask, Task, TaskId, TaskOutcome, TaskResult, TaskStore, TerminalStatus, Trajectory,
    TrajectoryMessage, WorkerRegistration,
};
use aiopslab_http::server::{router, ApiConfig, ApiState};
use aiopslab_http::webhooks::{Backoff, WebhookConfig, WebhookDeliverer};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Reopens the store: what a restarted server would connect to.
pub type Reopen = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn TaskStore>> + Send>> + Send + Sync>;

/// A store under test, how to reopen it, and whatever must outlive it.
pub struct Backing {
    pub store: Arc<dyn TaskStore>,
    pub reopen: Reopen,
    pub guard: Option<Box<dyn Any + Send>>,
}

/// Expands the suite as `#[tokio::test]`s over the stores `$factory` makes.
#[macro_export]
macro_rules! rl_tests {
    ($factory:expr) => {
        $crate::rl_tests!(@each $factory;
            batch_is_atomic_and_makes_a_group,
            group_reads_back_rewards,
            group_refills_over_http,
            idempotency_key_replays_and_conflicts,
            concurrent_same_key_creates_once,
            export_is_valid_line_by_line_and_filters,
            trajectory_route_returns_the_episode,
            outcome_and_policy_version_are_labelled,
            webhook_is_signed_and_retried_until_delivered,
            webhook_waits_for_a_receiver_that_is_down,
            webhook_survives_a_server_restart,
            webhook_gives_up_after_max_attempts,
            webhook_refuses_private_destinations,
            callback_url_on_private_addresses_is_refused_at_create,
            failed_webhook_is_redelivered_on_request,
            default_schedule_retries_after_a_second,
            two_deliverers_deliver_each_webhook_once,
            openapi_lists_the_rl_routes,
            remote_client_batches_and_served_webhooks,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backing: $crate::rl_support::Backing = $factory.await;
                $crate::rl_support::suite::$name(&backing).await;
                drop(backing);
            }
        )*
    };
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        self.json()
    }

    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["details"].is_object(), "{body}");
        body
    }
}

/// Drives the router in-process.
#[derive(Clone)]
pub struct Api {
    pub router: Router,
}

impl Api {
    /// The router over `store`, accepting the tests' 127.0.0.1 receivers as
    /// callback URLs (`--webhook-allow-private-destinations`).
    pub fn new(store: Arc<dyn TaskStore>) -> Self {
        Self::with_config(store, private_destinations())
    }

    pub fn with_config(store: Arc<dyn TaskStore>, config: ApiConfig) -> Self {
        Self::from_state(ApiState::with_default_scheduler(store, config))
    }

    pub fn from_state(state: ApiState) -> Self {
        Self { router: router(state) }
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[], Body::empty()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, &[], body.to_string()).await
    }

    pub async fn post_keyed(&self, path: &str, key: &str, body: &str) -> Resp {
        self.send(Method::POST, path, &[("idempotency-key", key)], body.to_string())
            .await
    }
}

static WORKERS: AtomicU64 = AtomicU64::new(0);

/// A trajectory of `steps` agent steps shaped like AIOpsLab's, with `reward`.
pub fn trajectory(task_id: TaskId, steps: usize, reward: Option<f64>) -> Trajectory {
    let mut messages = vec![
        TrajectoryMessage::new("system", "You are an SRE agent. Use the APIs to find the fault."),
        TrajectoryMessage::new("user", "The hotel reservation service misbehaves. Is there a fault?"),
    ];
    for step in 0..steps {
        messages.push(TrajectoryMessage::new(
            "assistant",
            format!("exec_shell(\"kubectl get pods\") # step {step}"),
        ));
        messages.push(TrajectoryMessage::new(
            "env",
            format!("NAME READY STATUS\ngeo-1 0/1 CrashLoopBackOff # {step}"),
        ));
    }
    let mut evaluation = serde_json::Map::new();
    evaluation.insert(
        "Detection Accuracy".into(),
        json!(if reward == Some(1.0) { "Correct" } else { "Incorrect" }),
    );
    Trajectory {
        task_id,
        messages,
        llm_calls: Vec::new(),
        reward,
        evaluation,
        metadata: serde_json::Map::new(),
        outcome: None,
        model_version: None,
    }
}

/// Claims `task` for a fresh worker, saves `trajectory` (if any) and finishes
/// it with `status`. Returns the finished task.
pub async fn run_to_end(
    store: &Arc<dyn TaskStore>,
    task: TaskId,
    status: TerminalStatus,
    trajectory: Option<Trajectory>,
) -> Task {
    let worker = format!("rl-worker-{}", WORKERS.fetch_add(1, Ordering::Relaxed));
    let backend_type = store.get_task(task).await.unwrap().parameters.backend_type;
    store
        .register_worker(
            serde_json::from_value::<WorkerRegistration>(json!({"id": worker, "backend_type": backend_type})).unwrap(),
        )
        .await
        .unwrap();
    let claimed = store
        .claim(&ClaimRequest::new(worker.clone(), backend_type).for_task(Some(task)))
        .await
        .unwrap()
        .expect("the task is claimable");
    if let Some(trajectory) = trajectory {
        store.save_trajectory(claimed.lease_token(), trajectory).await.unwrap();
    }
    let result: TaskResult = serde_json::from_value(json!({
        "logs": ["done"], "metrics": {"duration_seconds": 1, "steps_taken": 3}, "output": {"solution": "Yes"}
    }))
    .unwrap();
    store
        .finish(
            claimed.lease_token(),
            TaskOutcome {
                status,
                result: Some(result),
                error: None,
            },
        )
        .await
        .unwrap()
}

/// Creates a task through the store.
pub async fn create(store: &Arc<dyn TaskStore>, new: NewTask) -> Task {
    store.create_task(new.validate().unwrap()).await.unwrap()
}

/// The API settings of a server whose webhook receivers are on 127.0.0.1.
pub fn private_destinations() -> ApiConfig {
    ApiConfig::default().allowing_private_webhook_destinations(true)
}

/// Deliverer settings that keep tests fast: retries after 75-100 ms (then
/// 150-200 ms), to the tests' receivers on 127.0.0.1.
pub fn fast_webhooks(secret: Option<&str>, max_attempts: u32) -> WebhookConfig {
    WebhookConfig {
        secret: secret.map(str::to_string),
        max_attempts,
        timeout: Duration::from_secs(2),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(200),
        },
        poll_interval: Duration::from_millis(20),
        batch_size: 4,
        claim_margin: Duration::from_secs(1),
        allow_private_destinations: true,
    }
}

/// A deliverer running in the background until stopped.
pub struct RunningDeliverer {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningDeliverer {
    pub fn start(store: Arc<dyn TaskStore>, config: WebhookConfig) -> Self {
        Self::start_with(WebhookDeliverer::new(store, config).unwrap())
    }

    pub fn start_with(deliverer: WebhookDeliverer) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(deliverer.run(stop.clone()));
        Self { stop, handle }
    }

    /// Stops it (a pass in progress finishes first).
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the deliverer stops")
            .unwrap();
    }
}

/// Polls `GET /tasks/{id}/webhooks` until `done` holds for the first delivery.
pub async fn wait_for_webhook(api: &Api, task: TaskId, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let path = &format!("/tasks/{task}/webhooks");
    poll_first_delivery(task, within, done, move || async move { api.get(path).await.ok(200) }).await
}

/// Reads the webhook list with `list` until `done` holds for its first
/// delivery, failing the test after `within`.
async fn poll_first_delivery<F, Fut>(
    task: TaskId,
    within: Duration,
    done: impl Fn(&Value) -> bool,
    mut list: F,
) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Value>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let list = list().await;
        if list["deliveries"].get(0).is_some_and(&done) {
            return list["deliveries"][0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook of {task} not in the expected state: {list:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole server (`app::serve_with`: API, webhook deliverer) on a real
/// socket, until stopped.
pub struct RunningApp {
    pub url: String,
    stop: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl RunningApp {
    pub async fn start(store: Arc<dyn TaskStore>, webhooks: WebhookConfig) -> Self {
        Self::start_with(
            ApiState::with_default_scheduler(store, private_destinations()),
            webhooks,
        )
        .await
    }

    /// Serves `state` (with `webhooks` delivered beside it).
    pub async fn start_with(state: ApiState, webhooks: WebhookConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let options = aiopslab_http::app::ServeOptions {
            sweep_interval: None,
            webhooks: Some(webhooks),
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(aiopslab_http::app::serve_with(listener, state, options, stop.clone()));
        Self { url, stop, handle }
    }

    /// `GET /tasks/{id}/webhooks` over the socket until `done` holds for the
    /// first delivery.
    pub async fn wait_for_webhook(&self, task: TaskId, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let client = &reqwest::Client::new();
        let url = &format!("{}/tasks/{task}/webhooks", self.url);
        poll_first_delivery(task, within, done, move || async move {
            client.get(url).send().await.unwrap().json().await.unwrap()
        })
        .await
    }

    /// Stops it: no new connections, requests in flight and the deliverer's
    /// pass finish.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}
