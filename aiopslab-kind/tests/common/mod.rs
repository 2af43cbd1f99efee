//! Shared test harness: the named fakes (a fake OpenAI-compatible LLM server
//! and a fake Kubernetes API, both tiny axum servers; the fake `kind`,
//! `kubectl`, `helm` executables and the fake `aiopslab` package under
//! `tests/fakes/`) wired into a `KindConfig`.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopslab_core::{JsonObject, LogSink, NewLogEntry, RunContext, Task, TaskParameters, TaskStatus};
use aiopslab_kind::{KindConfig, KindConfigBuilder};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const WORKER: &str = "worker-test";

/// tiktoken's cache file name for `cl100k_base`: sha1 of its blob URL
/// (`https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken`).
pub const TIKTOKEN_CL100K_CACHE_FILE: &str = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4";

pub fn fakes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fakes")
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

// ----------------------------------------------------------------- fake LLM

/// What the fake LLM server answers to one request.
#[derive(Debug, Clone)]
pub enum LlmReply {
    /// A chat completion with this text.
    Text(String),
    /// An HTTP error with this status.
    Status(u16),
    /// No answer for ten minutes (the run's deadline or cancel must end it).
    Hang,
}

#[derive(Debug)]
struct LlmState {
    script: VecDeque<LlmReply>,
    fallback: LlmReply,
    requests: Vec<(Option<String>, Value)>,
}

/// FAKE OpenAI-compatible chat endpoint: answers `POST /v1/chat/completions`
/// from a script, records every request body and Authorization header.
#[derive(Clone)]
pub struct FakeLlm {
    pub base_url: String,
    state: Arc<Mutex<LlmState>>,
}

async fn llm_handler(
    State(state): State<Arc<Mutex<LlmState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (reply, n) = {
        let mut state = state.lock().unwrap();
        state.requests.push((auth, body.clone()));
        let reply = state.script.pop_front().unwrap_or_else(|| state.fallback.clone());
        (reply, state.requests.len() as u64)
    };
    match reply {
        LlmReply::Text(text) => {
            let mut choice = json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            });
            if body.get("logprobs") == Some(&json!(true)) {
                choice["logprobs"] = json!({"content": [{"token": "```", "logprob": -0.25}]});
            }
            let prompt = 100 + n;
            (
                StatusCode::OK,
                Json(json!({
                    "id": format!("chatcmpl-fake-{n}"),
                    "object": "chat.completion",
                    "model": format!("{}-fake", body["model"].as_str().unwrap_or("model")),
                    "choices": [choice],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7},
                })),
            )
        }
        LlmReply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": "fake endpoint failure", "type": "server_error"}})),
        ),
        LlmReply::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            (StatusCode::GATEWAY_TIMEOUT, Json(json!({})))
        }
    }
}

impl FakeLlm {
    pub async fn start(script: Vec<LlmReply>, fallback: LlmReply) -> FakeLlm {
        let state = Arc::new(Mutex::new(LlmState {
            script: script.into(),
            fallback,
            requests: Vec::new(),
        }));
        let router = Router::new()
            .route("/v1/chat/completions", post(llm_handler))
            .with_state(state.clone());
        let addr = serve(router).await;
        FakeLlm {
            base_url: format!("http://{addr}/v1"),
            state,
        }
    }

    pub fn set_script(&self, script: Vec<LlmReply>, fallback: LlmReply) {
        let mut state = self.state.lock().unwrap();
        state.script = script.into();
        state.fallback = fallback;
    }

    pub fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A reply in the format AIOpsLab parses.
pub fn action(call: &str) -> LlmReply {
    LlmReply::Text(format!("I will look at the cluster.\n```\n{call}\n```"))
}

// ----------------------------------------------------------------- fake Kubernetes API

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Active,
    /// Terminating; disappears after this many more reads.
    Terminating(u32),
}

#[derive(Debug, Default)]
pub struct KubeState {
    /// Node lists answered "NotReady" before nodes turn Ready.
    pub not_ready_polls: u32,
    /// A broken cluster: nodes stay NotReady until this fake-kind call log
    /// records a `create cluster` (the cluster was recreated).
    pub broken_until_created: Option<PathBuf>,
    pub nodes: Vec<String>,
    pub namespaces: BTreeMap<String, Ns>,
    /// Reads a deleted namespace stays Terminating for.
    pub terminating_polls: u32,
    pub requests: Vec<String>,
}

/// FAKE Kubernetes API server: answers the node list and the namespace
/// get/delete calls kube-rs makes, and records each request.
#[derive(Clone)]
pub struct FakeKube {
    pub url: String,
    pub state: Arc<Mutex<KubeState>>,
}

fn status_404(name: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("namespaces \"{name}\" not found"), "reason": "NotFound",
            "details": {"name": name, "kind": "namespaces"}, "code": 404
        })),
    )
}

fn namespace(name: &str, phase: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": phase}})
}

async fn list_nodes(State(state): State<Arc<Mutex<KubeState>>>) -> Json<Value> {
    let mut state = state.lock().unwrap();
    state.requests.push("GET /api/v1/nodes".into());
    let broken = state.broken_until_created.as_ref().is_some_and(|log| {
        !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("create cluster")
    });
    let ready = if broken {
        "False"
    } else if state.not_ready_polls > 0 {
        state.not_ready_polls -= 1;
        "False"
    } else {
        "True"
    };
    let items: Vec<Value> = state
        .nodes
        .iter()
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                   "status": {"conditions": [{"type": "Ready", "status": ready}]}})
        })
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": items}))
}

async fn get_namespace(
    State(state): State<Arc<Mutex<KubeState>>>,
    UrlPath(name): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    state.requests.push(format!("GET /api/v1/namespaces/{name}"));
    match state.namespaces.get(&name).copied() {
        None => status_404(&name),
        Some(Ns::Active) => (StatusCode::OK, Json(namespace(&name, "Active"))),
        Some(Ns::Terminating(0)) => {
            state.namespaces.remove(&name);
            status_404(&name)
        }
        Some(Ns::Terminating(n)) => {
            state.namespaces.insert(name.clone(), Ns::Terminating(n - 1));
            (StatusCode::OK, Json(namespace(&name, "Terminating")))
        }
    }
}

async fn delete_namespace(
    State(state): State<Arc<Mutex<KubeState>>>,
    UrlPath(name): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    state.requests.push(format!("DELETE /api/v1/namespaces/{name}"));
    let polls = state.terminating_polls;
    match state.namespaces.get(&name).copied() {
        None => status_404(&name),
        Some(Ns::Active) => {
            state.namespaces.insert(name.clone(), Ns::Terminating(polls));
            (StatusCode::OK, Json(namespace(&name, "Terminating")))
        }
        Some(Ns::Terminating(_)) => (StatusCode::OK, Json(namespace(&name, "Terminating"))),
    }
}

async fn list_namespaces(State(state): State<Arc<Mutex<KubeState>>>) -> Json<Value> {
    let mut state = state.lock().unwrap();
    state.requests.push("GET /api/v1/namespaces".into());
    let items: Vec<Value> = state
        .namespaces
        .iter()
        .map(|(name, ns)| namespace(name, if *ns == Ns::Active { "Active" } else { "Terminating" }))
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}))
}

/// An empty list of `kind` (the fake cluster has no CRDs, webhooks or volumes).
fn empty_list(api_version: &'static str, kind: &'static str) -> impl Fn() -> std::future::Ready<Json<Value>> + Clone {
    move || {
        std::future::ready(Json(
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []}),
        ))
    }
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let state = Arc::new(Mutex::new(KubeState {
            nodes: vec![format!("{WORKER}-control-plane"), format!("{WORKER}-worker")],
            ..KubeState::default()
        }));
        let router = Router::new()
            .route("/api/v1/nodes", get(list_nodes))
            .route("/api/v1/namespaces", get(list_namespaces))
            .route("/api/v1/namespaces/{name}", get(get_namespace).delete(delete_namespace))
            .route(
                "/api/v1/persistentvolumes",
                get(empty_list("v1", "PersistentVolumeList")),
            )
            .route(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                get(empty_list("apiextensions.k8s.io/v1", "CustomResourceDefinitionList")),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                get(empty_list(
                    "admissionregistration.k8s.io/v1",
                    "MutatingWebhookConfigurationList",
                )),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                get(empty_list(
                    "admissionregistration.k8s.io/v1",
                    "ValidatingWebhookConfigurationList",
                )),
            )
            .with_state(state.clone());
        let addr = serve(router).await;
        FakeKube {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

// ----------------------------------------------------------------- harness

pub struct Harness {
    pub root: tempfile::TempDir,
    pub llm: FakeLlm,
    pub kube: FakeKube,
    pub kind_state: PathBuf,
    pub aiopslab_state: PathBuf,
    pub tools_log: PathBuf,
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Harness {
    pub async fn start() -> Harness {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let kind_state = root.path().join("kind-state");
        std::fs::create_dir_all(kind_state.join("clusters")).unwrap();
        // What the fake aiopslab and the fake tools write must be writable by
        // the driver's user too (the isolation tests switch users).
        let shared =
            |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        let aiopslab_state = root.path().join("aiopslab-state");
        std::fs::create_dir_all(&aiopslab_state).unwrap();
        shared(&aiopslab_state, 0o777);
        // The fake helm keeps its releases as marker files beside its log.
        let tools_dir = root.path().join("tools");
        std::fs::create_dir_all(&tools_dir).unwrap();
        shared(&tools_dir, 0o777);
        let tools_log = tools_dir.join("tools.log");
        std::fs::write(&tools_log, "").unwrap();
        shared(&tools_log, 0o666);
        // tiktoken's cl100k_base, cached where tiktoken (and the fake) looks for it.
        let tiktoken = root.path().join("tiktoken");
        std::fs::create_dir_all(&tiktoken).unwrap();
        std::fs::write(tiktoken.join(TIKTOKEN_CL100K_CACHE_FILE), "FAKE cl100k_base ranks\n").unwrap();
        Harness {
            llm: FakeLlm::start(Vec::new(), LlmReply::Status(500)).await,
            kube: FakeKube::start().await,
            kind_state,
            aiopslab_state,
            tools_log,
            root,
        }
    }

    /// The fake kind knows a cluster with this name.
    pub fn with_cluster(&self, name: &str) {
        std::fs::write(self.kind_state.join("clusters").join(name), "").unwrap();
    }

    pub fn cluster_exists(&self, name: &str) -> bool {
        self.kind_state.join("clusters").join(name).exists()
    }

    /// PATH with the fakes first, then this process's PATH (for python3, sleep, sh).
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            fakes_dir().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A config with every fake wired in and short timeouts.
    pub fn builder(&self) -> KindConfigBuilder {
        KindConfig::builder(WORKER)
            .work_dir(self.root.path().join("work"))
            .aiopslab_dir(fakes_dir().join("aiopslab"))
            .default_base_url(self.llm.base_url.clone())
            .default_api_key_env(None)
            .endpoint_retries(2)
            .endpoint_retry_delay(Duration::from_millis(50))
            .endpoint_timeout(Duration::from_secs(30))
            .kill_grace(Duration::from_secs(3))
            .node_ready_timeout(Duration::from_secs(5))
            .namespace_delete_timeout(Duration::from_secs(5))
            .poll_interval(Duration::from_millis(20))
            .allow_driver_as_root(true)
            .tiktoken_cache_dir(self.root.path().join("tiktoken"))
            .env("PATH", self.path())
            .env("FAKE_AIOPSLAB_MAX_WAIT", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("FAKE_KIND_STATE", self.kind_state.display().to_string())
            .env("FAKE_KUBE_API_URL", self.kube.url.clone())
            .env("FAKE_AIOPSLAB_STATE", self.aiopslab_state.display().to_string())
            .env("FAKE_TOOLS_LOG", self.tools_log.display().to_string())
    }

    pub fn kind_calls(&self) -> Vec<String> {
        read_lines(&self.kind_state.join("calls.log"))
    }

    pub fn aiopslab_calls(&self) -> Vec<String> {
        read_lines(&self.aiopslab_state.join("calls.log"))
    }

    pub fn tool_calls(&self) -> Vec<String> {
        read_lines(&self.tools_log)
    }

    pub fn aiopslab_env(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.aiopslab_state.join("env.json")).unwrap()).unwrap()
    }

    pub fn workload_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.aiopslab_state.join("workload.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// A backend over the fake cluster named after the worker, prepared.
pub async fn prepared(h: &Harness, config: aiopslab_kind::KindConfig) -> aiopslab_kind::KindBackend {
    use aiopslab_core::ClusterBackend;
    h.with_cluster(WORKER);
    let backend = aiopslab_kind::KindBackend::new(config);
    backend.prepare().await.unwrap();
    backend
}

/// Whether a process is alive (a zombie awaiting its reaper counts as gone).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

pub fn obj(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

pub fn task(problem_id: &str, agent_config: Value, max_steps: u32, timeout_minutes: u32) -> Task {
    let now = chrono::Utc::now();
    Task {
        id: uuid::Uuid::new_v4(),
        problem_id: problem_id.to_string(),
        status: TaskStatus::Running,
        parameters: TaskParameters {
            agent_config: obj(agent_config),
            max_steps,
            timeout_minutes,
            priority: 5,
            callback_url: None,
            metadata: JsonObject::new(),
            backend_type: "default".into(),
            max_retries: 0,
        },
        worker_id: Some(WORKER.into()),
        attempt: 1,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        completed_at: None,
        lease_expires_at: None,
        result: None,
        error_details: None,
        group_id: None,
        experiment: None,
        replaces: None,
    }
}

pub fn context(task: &Task, deadline_in: Duration) -> (RunContext, mpsc::Receiver<NewLogEntry>) {
    let (logs, receiver) = LogSink::channel(100_000);
    let ctx = RunContext {
        worker_id: WORKER.into(),
        lease: task.lease_token(),
        logs,
        cancel: CancellationToken::new(),
        deadline: tokio::time::Instant::now() + deadline_in,
    };
    (ctx, receiver)
}

pub fn drain(receiver: &mut mpsc::Receiver<NewLogEntry>) -> Vec<NewLogEntry> {
    let mut entries = Vec::new();
    while let Ok(entry) = receiver.try_recv() {
        entries.push(entry);
    }
    entries
}

// ----------------------------------------------------------------- the driver's user

/// The unprivileged user the isolation tests run the driver as.
pub const DRIVER_USER: &str = "aiopslab-driver-test";

/// Creates [`DRIVER_USER`] when it does not exist yet and returns its name.
/// These tests switch users, so they need root (CI runs as root).
pub fn ensure_driver_user() -> String {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs the driver as another user and needs root (run `cargo test` as root, as CI does)"
    );
    let exists = std::process::Command::new("id")
        .args(["-u", DRIVER_USER])
        .output()
        .is_ok_and(|out| out.status.success());
    if !exists {
        let status = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                DRIVER_USER,
            ])
            .status()
            .expect("useradd runs");
        // Two test binaries may race to create it.
        let created = std::process::Command::new("id").args(["-u", DRIVER_USER]).output();
        assert!(
            status.success() || created.is_ok_and(|out| out.status.success()),
            "useradd {DRIVER_USER} failed"
        );
    }
    DRIVER_USER.to_string()
}

/// The uid of `user`.
pub fn uid_of(user: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a uid")
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

impl Harness {
    /// Lets another user traverse the harness's directory (temp dirs are 0700).
    pub fn open_to_driver_user(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Polls until the task is terminal, at most `limit`.
pub async fn wait_terminal(store: &dyn aiopslab_core::TaskStore, id: aiopslab_core::TaskId, limit: Duration) -> Task {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let task = store.get_task(id).await.unwrap();
        if task.status.is_terminal() {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} still {} after {limit:?}",
            task.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
