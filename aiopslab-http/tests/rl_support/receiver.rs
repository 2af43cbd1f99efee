//! `FakeReceiver`: a named fake of a client's webhook endpoint — a tiny axum
//! server on 127.0.0.1 that answers 500 to the first `fail_first` POSTs and
//! 200 afterwards, verifies each POST's HMAC signature against the secret it
//! was given, and keeps every POST it got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopslab_http::webhooks::{verify, ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body as JSON.
    pub body: Value,
    /// `X-Aiopslab-Event`.
    pub event: String,
    /// `X-Aiopslab-Delivery`.
    pub delivery: String,
    /// `X-Aiopslab-Attempt`.
    pub attempt: String,
    /// Whether `X-Aiopslab-Signature` verified against the receiver's secret
    /// (`None` when the POST carried no signature).
    pub signature_ok: Option<bool>,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
struct Shared {
    fail_first: usize,
    seen: usize,
    received: Vec<Received>,
}

#[derive(Clone)]
struct ReceiverState {
    secret: Option<String>,
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
}

/// The fake receiver; stopped on [`FakeReceiver::stop`] or drop.
pub struct FakeReceiver {
    pub addr: SocketAddr,
    state: ReceiverState,
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl FakeReceiver {
    /// Serves on a free port.
    pub async fn start(fail_first: usize, secret: Option<&str>) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), fail_first, secret).await
    }

    /// Serves on `addr`.
    pub async fn start_on(addr: SocketAddr, fail_first: usize, secret: Option<&str>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the fake receiver");
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            secret: secret.map(str::to_string),
            shared: Arc::new(Mutex::new(Shared {
                fail_first,
                ..Shared::default()
            })),
            notify: Arc::new(Notify::new()),
        };
        let app = Router::new().route("/hook", post(hook)).with_state(state.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            addr,
            state,
            stop,
            handle: Some(handle),
        }
    }

    /// A free port with nothing listening on it (connections are refused).
    pub async fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// The callback URL.
    pub fn url(&self) -> String {
        url_of(self.addr)
    }

    /// Every POST so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.shared.lock().unwrap().received.clone()
    }

    /// Waits until `count` POSTs were answered 2xx (panics after `within`).
    pub async fn wait_for_successes(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.state.notify.notified();
            let received = self.received();
            if received.iter().filter(|r| r.answered == 200).count() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the fake receiver got {} successful POSTs, not {count}: {received:#?}",
                    received.iter().filter(|r| r.answered == 200).count()
                );
            }
        }
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
    }
}

impl Drop for FakeReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The callback URL of a receiver on `addr`.
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}/hook")
}

async fn hook(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signature_ok = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(|sig| {
        state
            .secret
            .as_deref()
            .is_some_and(|secret| verify(secret.as_bytes(), &body, sig))
    });
    let answered = {
        let mut shared = state.shared.lock().unwrap();
        shared.seen += 1;
        let answered = if shared.seen <= shared.fail_first { 500 } else { 200 };
        shared.received.push(Received {
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            event: header(EVENT_HEADER),
            delivery: header(DELIVERY_HEADER),
            attempt: header(ATTEMPT_HEADER),
            signature_ok,
            answered,
        });
        answered
    };
    state.notify.notify_waiters();
    StatusCode::from_u16(answered).unwrap()
}
