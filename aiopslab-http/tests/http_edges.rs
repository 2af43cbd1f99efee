//! Issue 11, item 12, over real sockets: every error has the JSON shape
//! `{"error", "code", "details"}` — also the ones hyper raises before any
//! route runs (a garbage request line, a 100 KB path, a 1 MB header, too many
//! headers) — a JSON body with another `Content-Type` (or none) is a 415, an
//! unknown query parameter is a 400 naming it on every route, and
//! `capabilities: []` is a 400.

use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::{MemoryStore, TaskStore};
use aiopslab_http::app::{serve_with, ServeOptions};
use aiopslab_http::server::{ApiConfig, ApiDoc, ApiState};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

struct Server {
    addr: std::net::SocketAddr,
    url: String,
    stop: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Self {
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ApiState::with_default_scheduler(store, ApiConfig::default());
        let options = ServeOptions {
            sweep_interval: None,
            webhooks: None,
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(serve_with(listener, state, options, stop.clone()));
        Self {
            addr,
            url: format!("http://{addr}"),
            stop,
            handle,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    /// Sends raw bytes on a fresh connection (while reading, so an early
    /// answer is not lost) and returns everything the server answered
    /// before closing.
    async fn raw(&self, request: Vec<u8>) -> RawResponse {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            // The server may answer and close before reading it all.
            let _ = write.write_all(&request).await;
            let _ = write.shutdown().await;
        });
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let read_all = async {
            loop {
                match read.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                    // A reset after the answer (unread request bytes) ends it too.
                    Err(_) => break,
                }
                if complete(&answer) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("the server answers");
        writer.abort();
        RawResponse::parse(&answer)
    }
}

/// True once `bytes` hold a head and the body its content-length announces.
fn complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        Self {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    #[track_caller]
    fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:#?}");
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{self:#?}"
        );
        let body: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"));
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        assert!(body["details"].is_object(), "{body}");
        body
    }
}

/// Asserts the JSON error shape of a reqwest answer; returns the body.
async fn json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["details"].is_object(), "{body}");
    body
}

#[tokio::test]
async fn errors_below_the_router_are_json() {
    let server = Server::start().await;

    // A garbage request line.
    let body = server
        .raw(b"THIS IS NOT HTTP\r\n\r\n".to_vec())
        .await
        .error(400, "bad_request");
    assert!(body["error"].as_str().unwrap().contains("HTTP/1.1"), "{body}");
    server
        .raw(b"GET /tasks HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n".to_vec())
        .await
        .error(400, "bad_request");
    server
        .raw(b"GET /\x01tasks HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
        .await
        .error(400, "bad_request");

    // A 100 KB path.
    let path = format!("/tasks/{}", "a".repeat(100 * 1024));
    let body = server
        .raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes())
        .await
        .error(414, "uri_too_long");
    assert_eq!(body["details"]["limit_bytes"], 65_534, "{body}");

    // A 1 MB header.
    let big = "b".repeat(1024 * 1024);
    let body = server
        .raw(format!("GET /tasks HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").into_bytes())
        .await
        .error(431, "headers_too_large");
    assert_eq!(body["details"]["max_headers"], 100, "{body}");

    // Too many headers.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    server
        .raw(format!("GET /tasks HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes())
        .await
        .error(431, "headers_too_large");

    // Requests that parse are untouched, on the same kind of connection: a
    // normal answer, and the router's own JSON errors.
    let ok = server
        .raw(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
        .await;
    assert_eq!(ok.status, 200, "{ok:#?}");
    assert!(ok.body.contains("\"status\":\"ok\""), "{ok:#?}");
    server
        .raw(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
        .await
        .error(404, "not_found");
    // A 60 KB path is within hyper's limits: the router answers it.
    let path = format!("/tasks/{}", "a".repeat(60 * 1024));
    let long = server
        .raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes())
        .await
        .error(400, "validation_error");
    assert_eq!(long["details"]["field"], "id");

    // Keep-alive still works through the wrapped connection, with big and streamed bodies.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .post(format!("{}/tasks", server.url))
            .json(&json!({"problem_id": "p", "metadata": {"blob": "x".repeat(200 * 1024)}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    let export = client
        .get(format!("{}/trajectories/export", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status().as_u16(), 200);
    let docs = client
        .get(format!("{}/redoc/redoc.standalone.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.bytes().await.unwrap().len() > 100_000);
    server.stop().await;
}

#[tokio::test]
async fn json_bodies_need_a_json_content_type() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let task = r#"{"problem_id": "misconfig_app_hotel_res-detection-1"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        None,
    ] {
        let mut request = client.post(format!("{}/tasks", server.url)).body(task);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let body = json_error(request.send().await.unwrap(), 415, "unsupported_media_type").await;
        assert_eq!(body["details"]["field"], "Content-Type", "{body}");
        assert_eq!(body["details"]["content_type"].as_str(), content_type, "{body}");
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
    ] {
        let response = client
            .post(format!("{}/tasks", server.url))
            .header("content-type", content_type)
            .body(task)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{content_type}");
    }
    // Every JSON route, the worker protocol included.
    let id = uuid::Uuid::new_v4();
    for (method, path) in [
        ("POST", "/tasks/batch".to_string()),
        ("POST", "/workers/register".to_string()),
        ("POST", "/workers/heartbeat".to_string()),
        ("POST", "/workers/claim".to_string()),
        ("POST", format!("/tasks/{id}/lease")),
        ("POST", format!("/tasks/{id}/logs")),
        ("PUT", format!("/tasks/{id}/trajectory")),
        ("POST", format!("/tasks/{id}/finish")),
    ] {
        let response = client
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        json_error(response, 415, "unsupported_media_type").await;
    }
    server.stop().await;
}

/// Every documented route refuses a query parameter it does not list,
/// naming it — checked route by route from the OpenAPI document itself.
#[tokio::test]
async fn unknown_query_parameters_are_refused_on_every_route() {
    let server = Server::start().await;
    let client = reqwest::Client::new();

    // The reported case: a typo in the export's filter returned everything.
    let response = client
        .get(format!("{}/trajectories/export?problem_idd=x", server.url))
        .send()
        .await
        .unwrap();
    let body = json_error(response, 400, "invalid_query").await;
    assert_eq!(body["details"]["field"], "problem_idd", "{body}");
    assert!(
        body["details"]["message"].as_str().unwrap().contains("problem_id"),
        "the message lists what the route takes: {body}"
    );

    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if ["/health", "/metrics", "/openapi.json", "/docs"].contains(&path.as_str()) || path.starts_with("/redoc") {
            continue;
        }
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{group_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{delivery_id}", "1");
        for method in ["get", "post", "put", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let documented: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let mut request = client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}?bogus_param=1", server.url),
                )
                .header("content-type", "application/json");
            if method != "get" && method != "delete" {
                request = request.body("{}");
            }
            let body = json_error(request.send().await.unwrap(), 400, "invalid_query").await;
            assert_eq!(body["details"]["field"], "bogus_param", "{method} {path}: {body}");
            for name in documented {
                assert!(
                    body["details"]["message"].as_str().unwrap().contains(name),
                    "{method} {path} takes {name}: {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routes checked");

    // Documented parameters still work, and /metrics takes anything.
    for path in [
        "/tasks?status=pending&limit=10",
        "/tasks?limit=100",
        "/trajectories/export?problem_id=x&format=episode",
        "/workers?status=idle",
        "/problems?task_type=detection",
        "/metrics?scraper=prometheus",
        "/health?probe=1",
    ] {
        let response = client.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    server.stop().await;
}

/// `capabilities: []` (and any array where the API wants an object) is a 400
/// naming the field: serde alone would read it as every default.
#[tokio::test]
async fn arrays_are_not_objects() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{}{path}", server.url)).json(&body).send();
    let body = json_error(
        post(
            "/workers/register",
            json!({"id": "worker-001", "backend_type": "default", "capabilities": []}),
        )
        .await
        .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert_eq!(body["details"]["field"], "capabilities", "{body}");
    let body = json_error(
        post(
            "/workers/register",
            json!({"id": "worker-001", "capabilities": [4, null]}),
        )
        .await
        .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert_eq!(body["details"]["field"], "capabilities", "{body}");
    let body = json_error(
        post("/tasks/batch", json!({"task": [], "count": 2})).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert_eq!(body["details"]["field"], "task", "{body}");

    // A registration with an object (or none) passes; arrays that are lists stay lists.
    let ok = post(
        "/workers/register",
        json!({"id": "worker-001", "capabilities": {"max_parallel_tasks": 2, "supported_problems": ["a", "b"]}}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 201);
    let ok = post(
        "/tasks",
        json!({"problem_id": "p", "agent_config": {"stop": ["\n"], "nested": [[1], {"a": []}]}, "metadata": {"tags": []}}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 201);
    server.stop().await;
}
