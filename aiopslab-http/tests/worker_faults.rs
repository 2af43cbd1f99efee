//! Faults between a remote worker and the server, reproduced as they were
//! found (issue 11), each against the real router on a real socket and the
//! real worker runtime over [`HttpStore`]:
//!
//! - the one reply that hands a task over is lost (a TCP proxy closes the
//!   connection instead of forwarding it): the task is running under the
//!   worker's id but the worker never got it. Its next heartbeat lists what
//!   it holds, the store hands the task back, and it runs for real within
//!   about one heartbeat (it used to sit `running` until its timeout, 31
//!   minutes by default);
//! - a worker dies without a word (its whole runtime is dropped, as
//!   `kill -9` would) and restarts under the same id: the new instance takes
//!   the id over at once (it used to wait ~90 s for the old registration to
//!   go offline) and runs the task it had, requeued;
//! - a 1000-step trajectory (~160 MB of JSON: every LLM call carries its
//!   whole request) arrives whole over HTTP (it used to be refused by the
//!   8 MiB worker-protocol limit while the task still ended `completed`);
//! - a trajectory the server does refuse leaves the task `failed` with code
//!   `trajectory_refused`, never `completed`.

mod remote_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiopslab_core::store::prelude::*;
use aiopslab_core::{MemoryStore, NewTask, SimulatedConfig, TaskStatus};
use aiopslab_http::client::HttpStore;
use aiopslab_http::server::ApiConfig;
use remote_support::{start_worker, stop_all, submit, wait_for_status, worker_config, RunningServer, PROBLEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What marks a response that hands a task over: a claim's `"task":{"id"`
/// and a heartbeat's `"next_task":{"id"` both contain it.
const HANDS_A_TASK: &[u8] = br#"task":{"id""#;

/// A TCP proxy that forwards everything, except that it closes the
/// connection instead of forwarding the first response that hands a task
/// over. `dropped_at` says when it did.
struct DroppingProxy {
    addr: SocketAddr,
    dropped_at: Arc<Mutex<Option<Instant>>>,
}

impl DroppingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let dropped_at = Arc::new(Mutex::new(None));
        let armed = Arc::new(AtomicBool::new(true));
        let marker = Arc::clone(&dropped_at);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, Arc::clone(&armed), Arc::clone(&marker)));
            }
        });
        Self { addr, dropped_at }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn dropped_at(&self) -> Option<Instant> {
        *self.dropped_at.lock().unwrap()
    }
}

/// Copies both ways; drops the connection on the first task hand-over while armed.
async fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, dropped_at: Arc<Mutex<Option<Instant>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut window: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if armed.load(Ordering::SeqCst) {
            // Keep the tail of what came before, so a marker split across reads is found.
            let keep = window.len().saturating_sub(HANDS_A_TASK.len());
            window.drain(..keep);
            window.extend_from_slice(&buf[..n]);
            if window.windows(HANDS_A_TASK.len()).any(|w| w == HANDS_A_TASK) && armed.swap(false, Ordering::SeqCst) {
                *dropped_at.lock().unwrap() = Some(Instant::now());
                break; // dropping both halves closes the connection: the reply is lost
            }
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_hand_over_reply_is_lost_runs_for_real_within_a_heartbeat() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let proxy = DroppingProxy::start(server.addr).await;
    let client = HttpStore::new(&proxy.url(), None)
        .unwrap()
        .with_request_timeout(Duration::from_secs(5));
    let mut config = worker_config("phantom-1");
    config.heartbeat_interval = Duration::from_millis(500);
    let heartbeat = config.heartbeat_interval;
    let (stop, worker) = start_worker(client, SimulatedConfig::instant(2), config);
    // Register first, so the task is handed over by a claim or a heartbeat, not raced by registration.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = submit(store.as_ref(), NewTask::new(PROBLEM)).await;
    let done = wait_for_status(store.as_ref(), id, TaskStatus::Completed, Duration::from_secs(30)).await;
    let dropped_at = proxy
        .dropped_at()
        .expect("the proxy dropped the reply that handed the task over");
    let elapsed = dropped_at.elapsed();
    assert_eq!(
        done.attempt, 2,
        "the first attempt never reached the worker; the second ran: {done:?}"
    );
    assert_eq!(done.worker_id.as_deref(), Some("phantom-1"));
    // One heartbeat to hand it back, a claim (or the next beat) to take it: well under the old 31 minutes.
    assert!(
        elapsed < heartbeat * 2 + Duration::from_secs(3),
        "the undelivered task ran for real {elapsed:?} after its reply was lost (heartbeat {heartbeat:?})"
    );
    eprintln!("phantom task: completed {elapsed:?} after its hand-over reply was lost (heartbeat {heartbeat:?})");

    stop_all((stop, worker), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_its_id_takes_it_over_at_once() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let url = server.url();

    // The first instance runs in a runtime of its own, so it can die without
    // a word: shutting that runtime down drops every task it has, as
    // `kill -9` would (no report, no deregistration).
    let slow = SimulatedConfig::default()
        .with_steps(50)
        .with_step_delay(Duration::from_millis(200));
    let first_url = url.clone();
    let (first_runtime, first_stop) = {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = HttpStore::new(&first_url, None).unwrap();
        // Entered, the worker's tasks are spawned on that runtime.
        let stop = {
            let _entered = runtime.enter();
            start_worker(client, slow.clone(), worker_config("restarted-1")).0
        };
        (runtime, stop)
    };
    let id = submit(
        store.as_ref(),
        NewTask {
            max_retries: Some(1),
            ..NewTask::new(PROBLEM)
        },
    )
    .await;
    let running = wait_for_status(store.as_ref(), id, TaskStatus::Running, Duration::from_secs(10)).await;
    assert_eq!(running.worker_id.as_deref(), Some("restarted-1"));
    let first_instance = store.get_worker("restarted-1").await.unwrap().instance_id;
    assert!(first_instance.is_some(), "the runtime names its instance");
    drop(first_stop);
    first_runtime.shutdown_background();

    // The restart: a new process, the same id, a fresh instance.
    let restarted_at = Instant::now();
    let client = HttpStore::new(&url, None).unwrap();
    let (stop, worker) = start_worker(client, SimulatedConfig::instant(2), worker_config("restarted-1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let registered = loop {
        let worker = store.get_worker("restarted-1").await.unwrap();
        if worker.instance_id != first_instance {
            break restarted_at.elapsed();
        }
        assert!(Instant::now() < deadline, "the restarted worker never took its id over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let done = wait_for_status(store.as_ref(), id, TaskStatus::Completed, Duration::from_secs(10)).await;
    let completed = restarted_at.elapsed();
    assert_eq!(done.attempt, 2, "the dead instance's attempt was requeued at once");
    assert_eq!(done.worker_id.as_deref(), Some("restarted-1"));
    // The lease is 60 s and the offline threshold 90 s: either would show here.
    assert!(
        completed < Duration::from_secs(10),
        "the restarted worker ran its task {completed:?} after the restart"
    );
    eprintln!("same-id restart: registered after {registered:?}, task completed after {completed:?}");

    stop_all((stop, worker), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_step_trajectory_arrives_whole() {
    let store = Arc::new(MemoryStore::new());
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), ApiConfig::default()).await;
    let client = HttpStore::new(&server.url(), None).unwrap();
    let (stop, worker) = start_worker(client, SimulatedConfig::instant(1000), worker_config("long-1"));
    let id = submit(
        store.as_ref(),
        NewTask {
            max_steps: Some(1000),
            ..NewTask::new(PROBLEM)
        },
    )
    .await;
    let done = wait_for_status(store.as_ref(), id, TaskStatus::Completed, Duration::from_secs(300)).await;
    assert_eq!(done.result.as_ref().unwrap().metrics["steps_taken"], 1000);
    let trajectory = store.get_trajectory(id).await.unwrap().expect("the trajectory arrived");
    assert_eq!(trajectory.llm_calls.len(), 1000, "every LLM call arrived");
    assert!(
        trajectory
            .llm_calls
            .windows(2)
            .all(|pair| pair[0].request.len() < pair[1].request.len()),
        "each call holds the whole conversation so far"
    );
    let text: usize = trajectory
        .llm_calls
        .iter()
        .flat_map(|call| &call.request)
        .map(|message| message.content.len())
        .sum();
    assert!(
        text > ApiConfig::DEFAULT_WORKER_BODY_LIMIT * 4,
        "the trajectory is far over the worker protocol's limit ({text} bytes of message text in its calls)"
    );
    stop_all((stop, worker), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_trajectory_never_ends_completed() {
    let store = Arc::new(MemoryStore::new());
    let config = ApiConfig {
        trajectory_body_limit: 16 * 1024,
        ..ApiConfig::default()
    };
    let server = RunningServer::start(store.clone(), "127.0.0.1:0".parse().unwrap(), config).await;
    let client = HttpStore::new(&server.url(), None).unwrap();
    let (stop, worker) = start_worker(client, SimulatedConfig::instant(30), worker_config("refused-1"));
    let id = submit(store.as_ref(), NewTask::new(PROBLEM)).await;
    let done = wait_for_status(store.as_ref(), id, TaskStatus::Failed, Duration::from_secs(30)).await;
    let error = done.error_details.expect("the failure says why");
    assert_eq!(error.code, "trajectory_refused", "{error:?}");
    assert!(
        error.message.contains("larger than the limit"),
        "it names the store's answer: {error:?}"
    );
    assert!(done.result.is_some(), "the evaluation is kept");
    assert!(store.get_trajectory(id).await.unwrap().is_none());
    stop_all((stop, worker), server).await;
}
