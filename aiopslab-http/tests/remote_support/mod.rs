//! A real server on a real socket and real worker runtimes over
//! [`HttpStore`], shared by the remote-worker tests.

#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::{RuntimeError, WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    DefaultScheduler, NewTask, SimulatedBackend, SimulatedConfig, Task, TaskApi, TaskId, TaskStatus, TaskStore,
    WorkerQueue,
};
use aiopslab_http::app::serve;
use aiopslab_http::client::HttpStore;
use aiopslab_http::server::{ApiConfig, ApiState};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A problem every simulated worker runs.
pub const PROBLEM: &str = "misconfig_app_hotel_res-detection-1";

/// A server running on a socket, stoppable.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Serves `store` on `addr` (port 0: any free port).
    pub async fn start(store: Arc<dyn TaskStore>, addr: SocketAddr, config: ApiConfig) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = ApiState::with_default_scheduler(store, config);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(serve(listener, state, Some(Duration::from_millis(200)), stop.clone()));
        Self { addr, stop, handle }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and waits until the socket is closed.
    pub async fn stop(self) -> SocketAddr {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
            .expect("server ran without I/O error");
        self.addr
    }
}

/// A worker configuration with short intervals.
pub fn worker_config(id: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(id, "default");
    config.heartbeat_interval = Duration::from_millis(200);
    config.poll_interval = Duration::from_millis(100);
    config.log_flush_interval = Duration::from_millis(50);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// Starts a worker using `store` (an [`HttpStore`]) for everything.
pub fn start_worker(
    store: HttpStore,
    backend: SimulatedConfig,
    config: WorkerConfig,
) -> (CancellationToken, JoinHandle<Result<(), RuntimeError>>) {
    let store: Arc<dyn WorkerQueue> = Arc::new(store);
    let scheduler = Arc::new(DefaultScheduler::new(store.clone()));
    let runtime = WorkerRuntime::new(store, scheduler, Arc::new(SimulatedBackend::new(backend)), config);
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(runtime.run(stop)))
}

/// Polls `store` until the task reaches `status` (or panics after `within`).
pub async fn wait_for_status(store: &dyn TaskApi, id: TaskId, status: TaskStatus, within: Duration) -> Task {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let task = store.get_task(id).await.expect("get_task");
        if task.status == status {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} still {} after {within:?}, expected {status}: {task:?}",
            task.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `new` in `store` and returns its id.
pub async fn submit(store: &dyn TaskApi, new: NewTask) -> TaskId {
    store
        .create_task(new.validate().expect("a valid task request"))
        .await
        .expect("create_task")
        .id
}

/// Stops a worker started with [`start_worker`] and the server, checking both stop cleanly.
pub async fn stop_all(worker: (CancellationToken, JoinHandle<Result<(), RuntimeError>>), server: RunningServer) {
    let (stop, handle) = worker;
    stop.cancel();
    handle.await.expect("worker task").expect("worker stops cleanly");
    server.stop().await;
}
