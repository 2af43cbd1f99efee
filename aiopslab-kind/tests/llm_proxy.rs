//! The per-task LLM proxy against a FAKE OpenAI-compatible upstream, over
//! real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiopslab_kind::{LlmProxy, ProxyLimits, ProxySession, RecordedCall, Secret, Upstream};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The key the proxy adds; it must never leak.
const KEY: &str = "sk-FAKE-secret-0123456789abcdef";

/// One request the FAKE upstream received.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Value,
    started: Instant,
    finished: Option<Instant>,
}

/// What the FAKE upstream observed.
#[derive(Default)]
struct FakeState {
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A FAKE OpenAI-compatible upstream answering `POST /v1/chat/completions`.
/// The request's `model` picks the behaviour (`fake-ok`, `fake-500`,
/// `fake-text`, `fake-echo-auth`); `fake_delay_ms` delays the reply.
struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(fake_chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind FAKE upstream");
        let addr = listener.local_addr().expect("FAKE upstream address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream { addr, state }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn upstream(&self) -> Upstream {
        Upstream::new(self.base_url())
            .with_api_key(Secret::new(KEY))
            .with_timeout(Duration::from_secs(5))
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("FAKE state").clone()
    }
}

async fn fake_chat(State(state): State<Arc<FakeState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let index = {
        let mut seen = state.seen.lock().expect("FAKE state");
        seen.push(Seen {
            headers: headers.clone(),
            body: body.clone(),
            started: Instant::now(),
            finished: None,
        });
        seen.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(ms) = body.get("fake_delay_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let reply = match body.get("model").and_then(Value::as_str) {
        Some("fake-500") => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "FAKE internal error", "type": "server_error"}})),
        )
            .into_response(),
        Some("fake-text") => (StatusCode::SERVICE_UNAVAILABLE, "FAKE upstream overloaded").into_response(),
        Some("fake-echo-auth") => {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"message": format!("FAKE rejects {auth}"), "type": "invalid_request_error"}})),
            )
                .into_response()
        }
        _ => Json(json!({
            "id": "chatcmpl-FAKE",
            "object": "chat.completion",
            "model": "fake-served-model",
            "prompt_token_ids": [1, 2, 3],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "hello from FAKE"},
                "finish_reason": "stop",
                "logprobs": {"content": [{"token": "hello", "logprob": -0.25, "top_logprobs": []}]},
                "token_ids": [9906, 1917]
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
        .into_response(),
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.seen.lock().expect("FAKE state")[index].finished = Some(Instant::now());
    reply
}

async fn proxy(limits: ProxyLimits) -> LlmProxy {
    LlmProxy::start("127.0.0.1:0".parse().expect("address"), limits)
        .await
        .expect("start proxy")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

fn chat_body(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are an SRE."},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}
        ],
        "temperature": 0.5,
        "max_tokens": 64,
        "seed": 7,
        "logprobs": true
    })
}

/// POSTs `body` to the session's chat endpoint as the driver would.
async fn call(session: &ProxySession, body: &Value, step: u32) -> (u16, Value) {
    call_url(&format!("{}/chat/completions", session.base_url()), body, step).await
}

async fn call_url(url: &str, body: &Value, step: u32) -> (u16, Value) {
    let reply = client()
        .post(url)
        .header("authorization", "Bearer driver-must-not-pass")
        .header("x-aiopslab-step", step.to_string())
        .header("x-aiopslab-attempt", "2")
        .json(body)
        .send()
        .await
        .expect("reach the proxy");
    let status = reply.status().as_u16();
    let body = reply.json::<Value>().await.expect("a JSON reply");
    (status, body)
}

fn error_message(body: &Value) -> &str {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[tokio::test]
async fn forwards_with_the_key_and_records_the_call() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-1".into());
    assert!(session
        .base_url()
        .starts_with(&format!("http://{}/t/", proxy.local_addr())));
    assert!(session.base_url().ends_with("/v1"));

    let (status, reply) = call(&session, &chat_body("fake-ok"), 3).await;
    assert_eq!(status, 200);
    assert_eq!(reply["choices"][0]["message"]["content"], "hello from FAKE");
    assert_eq!(reply["choices"][0]["token_ids"], json!([9906, 1917]));

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
    assert!(
        headers.keys().all(|k| !k.as_str().starts_with("x-aiopslab")),
        "{headers:?}"
    );
    assert_eq!(seen[0].body, chat_body("fake-ok"));

    let calls = session.calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert!(c.forwarded);
    assert_eq!(c.step, Some(3));
    assert_eq!(c.attempt, Some(2));
    assert_eq!(c.request, chat_body("fake-ok"));
    assert_eq!(c.status, Some(200));
    assert_eq!(c.proxy_status, 200);
    assert_eq!(c.response.as_ref(), Some(&reply));
    assert_eq!(c.error, None);
    assert!(c.latency_ms < 5_000);

    let llm = c.to_llm_call().expect("a 2xx reply maps to an LlmCall");
    assert_eq!(llm.step, Some(3));
    assert_eq!(llm.request.len(), 2);
    assert_eq!(llm.request[0].role, "system");
    assert_eq!(llm.request[0].content, "You are an SRE.");
    assert_eq!(llm.request[1].content, "part one\npart two");
    assert_eq!(llm.response, "hello from FAKE");
    assert_eq!(llm.model.as_deref(), Some("fake-served-model"));
    assert_eq!(llm.sampling.get("temperature"), Some(&json!(0.5)));
    assert_eq!(llm.sampling.get("max_tokens"), Some(&json!(64)));
    assert_eq!(llm.sampling.get("seed"), Some(&json!(7)));
    assert_eq!(llm.sampling.get("logprobs"), Some(&json!(true)));
    assert!(!llm.sampling.contains_key("model"));
    let usage = llm.usage.expect("usage");
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (3, 2, 5)
    );
    assert_eq!(llm.latency_ms, c.latency_ms);
    assert_eq!(
        llm.logprobs.as_ref().and_then(|l| l.pointer("/content/0/logprob")),
        Some(&json!(-0.25))
    );
    assert_eq!(llm.token_ids, Some(json!([9906, 1917])));
    assert_eq!(llm.prompt_token_ids, Some(json!([1, 2, 3])));
    assert_eq!(session.llm_calls(), vec![llm]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn calls_are_recorded_in_order() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-order".into());
    for step in 1..=3 {
        let (status, _) = call(&session, &chat_body("fake-ok"), step).await;
        assert_eq!(status, 200);
    }
    let steps: Vec<_> = session.calls().iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![Some(1), Some(2), Some(3)]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn closed_and_unknown_sessions_answer_404_and_forward_nothing() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-closed".into());
    let url = format!("{}/chat/completions", session.base_url());
    session.close();
    assert!(session.is_closed());
    let (status, body) = call_url(&url, &chat_body("fake-ok"), 1).await;
    assert_eq!(status, 404);
    assert_eq!(error_message(&body), "unknown or closed session");

    // Dropping closes too.
    let dropped = proxy.open_session(fake.upstream(), "task-dropped".into());
    let dropped_url = format!("{}/chat/completions", dropped.base_url());
    drop(dropped);
    let (status, _) = call_url(&dropped_url, &chat_body("fake-ok"), 1).await;
    assert_eq!(status, 404);

    let unknown = format!("http://{}/t/{}/v1/chat/completions", proxy.local_addr(), "0".repeat(64));
    let (status, body) = call_url(&unknown, &chat_body("fake-ok"), 1).await;
    assert_eq!(status, 404);
    assert_eq!(error_message(&body), "unknown or closed session");

    assert!(fake.seen().is_empty(), "nothing may be forwarded");
    assert!(session.calls().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn other_paths_answer_openai_style_404() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-paths".into());
    let (status, body) = call_url(&format!("{}/completions", session.base_url()), &chat_body("fake-ok"), 1).await;
    assert_eq!(status, 404);
    assert!(body.pointer("/error/message").is_some_and(Value::is_string), "{body}");
    let reply = client()
        .get(format!("{}/models", session.base_url()))
        .send()
        .await
        .expect("reach the proxy");
    assert_eq!(reply.status().as_u16(), 404);
    let body: Value = reply.json().await.expect("JSON");
    assert!(body.pointer("/error/message").is_some());
    assert!(fake.seen().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_and_are_recorded() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-500".into());

    let (status, body) = call(&session, &chat_body("fake-500"), 1).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"error": {"message": "FAKE internal error", "type": "server_error"}})
    );

    let (status, body) = call(&session, &chat_body("fake-text"), 2).await;
    assert_eq!(status, 503);
    assert!(error_message(&body).contains("FAKE upstream overloaded"), "{body}");

    let calls = session.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, Some(500));
    assert_eq!(calls[0].proxy_status, 500);
    assert_eq!(calls[0].response.as_ref(), Some(&body_of_500()));
    assert!(calls[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("FAKE internal error")));
    assert!(calls[0].to_llm_call().is_none());
    assert_eq!(calls[1].status, Some(503));
    assert_eq!(calls[1].response, None);
    assert!(calls[1].error.as_deref().is_some_and(|e| e.contains("non-JSON")));
    assert!(calls[1].to_llm_call().is_none());
    proxy.shutdown().await;
}

fn body_of_500() -> Value {
    json!({"error": {"message": "FAKE internal error", "type": "server_error"}})
}

/// An address nobody listens on.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    addr
}

#[tokio::test]
async fn an_unreachable_upstream_answers_502_and_is_recorded() {
    let dead = dead_addr().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let upstream = Upstream::new(format!("http://{dead}/v1")).with_api_key(Secret::new(KEY));
    let session = proxy.open_session(upstream, "task-down".into());
    let (status, body) = call(&session, &chat_body("fake-ok"), 4).await;
    assert_eq!(status, 502);
    let message = error_message(&body);
    assert!(
        message.contains(&dead.to_string()),
        "names the upstream host: {message}"
    );
    assert!(!body.to_string().contains(KEY));

    let calls = session.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].forwarded);
    assert_eq!(calls[0].step, Some(4));
    assert_eq!(calls[0].status, None);
    assert_eq!(calls[0].proxy_status, 502);
    assert!(calls[0].error.as_deref().is_some_and(|e| e.contains("unreachable")));
    assert!(calls[0].to_llm_call().is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_answers_504() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(
        fake.upstream().with_timeout(Duration::from_millis(100)),
        "task-slow".into(),
    );
    let mut body = chat_body("fake-ok");
    body["fake_delay_ms"] = json!(1_000);
    let (status, reply) = call(&session, &body, 1).await;
    assert_eq!(status, 504);
    assert!(error_message(&reply).contains(&fake.addr.to_string()), "{reply}");
    let calls = session.calls();
    assert_eq!(calls[0].proxy_status, 504);
    assert_eq!(calls[0].status, None);
    proxy.shutdown().await;
}

#[tokio::test]
async fn streaming_and_bad_bodies_are_refused() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-stream".into());
    let mut body = chat_body("fake-ok");
    body["stream"] = json!(true);
    let (status, reply) = call(&session, &body, 1).await;
    assert_eq!(status, 400);
    assert!(error_message(&reply).contains("stream"), "{reply}");

    let reply = client()
        .post(format!("{}/chat/completions", session.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("reach the proxy");
    assert_eq!(reply.status().as_u16(), 400);
    let reply: Value = reply.json().await.expect("JSON");
    assert!(error_message(&reply).contains("not valid JSON"), "{reply}");

    assert!(fake.seen().is_empty());
    let calls = session.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls
        .iter()
        .all(|c| !c.forwarded && c.proxy_status == 400 && c.status.is_none()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_key_appears_nowhere() {
    let fake = FakeUpstream::start().await;
    let dead = dead_addr().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-key".into());
    let down = proxy.open_session(
        Upstream::new(format!("http://{dead}/v1")).with_api_key(Secret::new(KEY)),
        "task-key-down".into(),
    );

    let mut replies = Vec::new();
    replies.push(call(&session, &chat_body("fake-ok"), 1).await);
    replies.push(call(&session, &chat_body("fake-500"), 2).await);
    replies.push(call(&session, &chat_body("fake-text"), 3).await);
    // The FAKE echoes the Authorization header it got: the proxy scrubs it.
    let (status, echoed) = call(&session, &chat_body("fake-echo-auth"), 4).await;
    assert_eq!(status, 401);
    assert_eq!(error_message(&echoed), "FAKE rejects Bearer [redacted]");
    replies.push((status, echoed));
    replies.push(call(&down, &chat_body("fake-ok"), 1).await);

    for (_, body) in &replies {
        assert!(!body.to_string().contains(KEY), "reply leaks the key: {body}");
    }
    let records: Vec<RecordedCall> = session.calls().into_iter().chain(down.calls()).collect();
    assert_eq!(records.len(), 5);
    for text in [
        format!("{proxy:?}"),
        format!("{session:?}"),
        format!("{down:?}"),
        format!("{records:?}"),
        format!("{:?}", fake.upstream()),
        format!("{:?}", Secret::new(KEY)),
        format!("{}", Secret::new(KEY)),
    ] {
        assert!(!text.contains(KEY), "leaks the key: {text}");
    }
    let token = session
        .base_url()
        .trim_end_matches("/v1")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(
        !format!("{session:?}").contains(&token),
        "Debug keeps the session token out of logs"
    );
    assert_eq!(Secret::new(KEY).expose(), KEY);
    proxy.shutdown().await;
}

#[tokio::test]
async fn concurrency_limit_serialises_calls_to_one_upstream() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits {
        max_concurrency: Some(1),
        requests_per_minute: None,
    })
    .await;
    // Two sessions on the same base_url share the limit.
    let a = proxy.open_session(fake.upstream(), "task-a".into());
    let b = proxy.open_session(fake.upstream(), "task-b".into());
    let mut body = chat_body("fake-ok");
    body["fake_delay_ms"] = json!(150);
    let (ra, rb) = tokio::join!(call(&a, &body, 1), call(&b, &body, 1));
    assert_eq!((ra.0, rb.0), (200, 200));

    assert_eq!(fake.state.max_in_flight.load(Ordering::SeqCst), 1);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let first_done = seen[0].finished.expect("first finished");
    assert!(
        seen[1].started >= first_done,
        "the second call started before the first finished"
    );
    let queued: u64 = a
        .calls()
        .iter()
        .chain(b.calls().iter())
        .map(|c| c.queued_ms)
        .max()
        .unwrap_or(0);
    assert!(queued >= 100, "one call waited for the other: {queued} ms");
    proxy.shutdown().await;
}

#[tokio::test]
async fn rate_limit_spaces_call_starts() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits {
        max_concurrency: None,
        requests_per_minute: Some(600),
    })
    .await;
    let session = proxy.open_session(fake.upstream(), "task-rpm".into());
    let body = chat_body("fake-ok");
    let (r1, r2, r3) = tokio::join!(
        call(&session, &body, 1),
        call(&session, &body, 2),
        call(&session, &body, 3)
    );
    assert_eq!((r1.0, r2.0, r3.0), (200, 200, 200));

    let mut starts: Vec<Instant> = fake.seen().iter().map(|s| s.started).collect();
    starts.sort();
    assert_eq!(starts.len(), 3);
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(90), "calls started only {gap:?} apart");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let fake = FakeUpstream::start().await;
    let proxy = proxy(ProxyLimits::default()).await;
    let session = proxy.open_session(fake.upstream(), "task-shutdown".into());
    let (status, _) = call(&session, &chat_body("fake-ok"), 1).await;
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(3), proxy.shutdown())
        .await
        .expect("shutdown is prompt");
    let result = client()
        .post(format!("{}/chat/completions", session.base_url()))
        .json(&chat_body("fake-ok"))
        .send()
        .await;
    assert!(result.is_err(), "the proxy still answers after shutdown");
    assert_eq!(session.calls().len(), 1);
}
