//! Fakes for the worker runtime tests: a store wrapper that injects
//! failures, partitions, log-store outages and slow lease calls, and pushes
//! events; a scheduler that never hands out work; backends that count
//! concurrency, break on purpose or write numbered log lines; and a tracing
//! subscriber that captures what the runtime logs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiopslab_core::runtime::{RuntimeError, WorkerConfig, WorkerRuntime};
use aiopslab_core::*;
use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A fake store: a [`MemoryStore`] behind a switchboard of failures.
pub struct FakeFlakyStore {
    pub inner: MemoryStore,
    /// Fail this many upcoming `finish` calls with `Unavailable`.
    pub fail_finishes: AtomicU32,
    /// Every `finish` call seen, with its lease and status.
    pub finishes: Mutex<Vec<(LeaseToken, TerminalStatus)>>,
    /// While true, every call a worker makes fails with `Unavailable`.
    pub partitioned: AtomicBool,
    /// The next idle heartbeat claims this task for the beating worker and
    /// hands it over in `next_task`, as the HTTP server does.
    pub hand_over: Mutex<Option<TaskId>>,
    /// While true, every `append_logs` fails with `Unavailable` (the rest works).
    pub appends_down: AtomicBool,
    /// `append_logs` calls refused by `appends_down` or a partition.
    pub append_failures: AtomicUsize,
    /// Successful worker writes in the order they landed: `"append"`, `"finish"`.
    pub journal: Mutex<Vec<&'static str>>,
    /// How long a heartbeat takes to reach the store (a round trip over HTTP).
    pub heartbeat_delay: Mutex<Duration>,
    /// Pushed events, when built with [`FakeFlakyStore::with_events`].
    events: Option<broadcast::Sender<StoreEvent>>,
    /// Offer the final-report capability (as `MemoryStore` does); off by default, so the other tests see the
    /// three calls of a run's end.
    pub offer_final_reports: AtomicBool,
    /// Refuse every final report as a whole (`Invalid`), writing nothing, as a server whose store lacks the
    /// capability does.
    pub refuse_final_reports: AtomicBool,
    /// `finish_run` calls seen.
    pub final_report_calls: AtomicUsize,
}

impl FakeFlakyStore {
    pub fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            fail_finishes: AtomicU32::new(0),
            finishes: Mutex::new(Vec::new()),
            partitioned: AtomicBool::new(false),
            hand_over: Mutex::new(None),
            appends_down: AtomicBool::new(false),
            append_failures: AtomicUsize::new(0),
            journal: Mutex::new(Vec::new()),
            heartbeat_delay: Mutex::new(Duration::ZERO),
            events: None,
            offer_final_reports: AtomicBool::new(false),
            refuse_final_reports: AtomicBool::new(false),
            final_report_calls: AtomicUsize::new(0),
        }
    }

    pub fn with_events(inner: MemoryStore) -> Self {
        let (sender, _) = broadcast::channel(64);
        Self {
            events: Some(sender),
            ..Self::new(inner)
        }
    }

    fn reachable(&self) -> StoreResult<()> {
        if self.partitioned.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("fake network partition".into()))
        } else {
            Ok(())
        }
    }

    /// Creates a task in the memory store and pushes the event a store
    /// with push events sends for it.
    pub async fn create_and_announce(&self, task: NewTask) -> Task {
        let task = self.inner.create_task(task.validate().unwrap()).await.unwrap();
        self.emit(StoreEvent::TaskAvailable {
            backend_type: task.parameters.backend_type.clone(),
        });
        task
    }

    /// Cancels a task in the memory store and pushes the event a store
    /// with push events sends when that asks a running task to stop.
    pub async fn cancel_and_announce(&self, id: TaskId) -> CancelOutcome {
        let outcome = self.inner.cancel_task(id).await.unwrap();
        if outcome == CancelOutcome::CancelRequested {
            self.emit(StoreEvent::CancelRequested { task_id: id });
        }
        outcome
    }

    /// Pushes `event` to the subscribers, as a store with push events does.
    pub fn emit(&self, event: StoreEvent) {
        if let Some(sender) = &self.events {
            let _ = sender.send(event);
        }
    }
}

/// The task API, the operator's side and the rest are the memory store's:
/// only the worker side is flaky.
impl std::ops::Deref for FakeFlakyStore {
    type Target = MemoryStore;

    fn deref(&self) -> &MemoryStore {
        &self.inner
    }
}

#[async_trait]
impl WorkerQueue for FakeFlakyStore {
    async fn register_worker(&self, registration: WorkerRegistration) -> StoreResult<Worker> {
        self.reachable()?;
        self.inner.register_worker(registration).await
    }

    async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> StoreResult<HeartbeatAck> {
        let delay = *self.heartbeat_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.reachable()?;
        let mut ack = self.inner.heartbeat(heartbeat).await?;
        if heartbeat.status == WorkerStatus::Idle {
            let handed = self.hand_over.lock().unwrap().take();
            if let Some(task_id) = handed {
                let request = ClaimRequest::new(heartbeat.worker_id.clone(), "default").for_task(Some(task_id));
                ack.next_task = self.inner.claim(&request).await?;
            }
        }
        Ok(ack)
    }

    async fn deregister_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.reachable()?;
        self.inner.deregister_worker(worker_id).await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Task>> {
        self.reachable()?;
        self.inner.claim(request).await
    }

    async fn extend_lease(&self, lease: LeaseToken) -> StoreResult<LeaseState> {
        self.reachable()?;
        self.inner.extend_lease(lease).await
    }

    async fn append_logs(&self, lease: LeaseToken, entries: Vec<NewLogEntry>) -> StoreResult<()> {
        if self.reachable().is_err() || self.appends_down.load(Ordering::SeqCst) {
            self.append_failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable("fake: log store unreachable".into()));
        }
        self.inner.append_logs(lease, entries).await?;
        self.journal.lock().unwrap().push("append");
        Ok(())
    }

    async fn save_trajectory(&self, lease: LeaseToken, trajectory: Trajectory) -> StoreResult<()> {
        self.reachable()?;
        self.inner.save_trajectory(lease, trajectory).await
    }

    async fn finish(&self, lease: LeaseToken, outcome: TaskOutcome) -> StoreResult<Task> {
        self.finishes.lock().unwrap().push((lease, outcome.status));
        self.reachable()?;
        let injected = self
            .fail_finishes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(StoreError::Unavailable("fake: store restarting".into()));
        }
        let finished = self.inner.finish(lease, outcome).await?;
        self.journal.lock().unwrap().push("finish");
        Ok(finished)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        self.events.as_ref().map(broadcast::Sender::subscribe)
    }

    fn final_reports(&self) -> Option<&dyn FinalReports> {
        self.offer_final_reports
            .load(Ordering::SeqCst)
            .then_some(self as &dyn FinalReports)
    }
}

#[async_trait]
impl FinalReports for FakeFlakyStore {
    async fn finish_run(&self, lease: LeaseToken, report: FinalReport) -> StoreResult<Task> {
        self.final_report_calls.fetch_add(1, Ordering::SeqCst);
        self.reachable()?;
        if self.refuse_final_reports.load(Ordering::SeqCst) {
            return Err(StoreError::Invalid(ValidationError::new(
                "final_report",
                "fake: this store refuses final reports",
            )));
        }
        let reports = self.inner.final_reports().expect("MemoryStore offers final reports");
        let finished = reports.finish_run(lease, report).await?;
        self.journal.lock().unwrap().push("final_report");
        Ok(finished)
    }
}

/// A fake scheduler that never hands out work (only heartbeats do).
pub struct FakeIdleScheduler;

#[async_trait]
impl Scheduler for FakeIdleScheduler {
    async fn next_task(&self, _request: &ClaimRequest) -> StoreResult<Option<Task>> {
        Ok(None)
    }
}

/// A fake backend around [`SimulatedBackend`] that counts runs in flight,
/// the most seen at once, and resets; it can fail its first resets.
pub struct FakeCountingBackend {
    pub inner: SimulatedBackend,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub runs: AtomicUsize,
    pub resets: AtomicUsize,
    /// Fail this many upcoming resets.
    pub fail_resets: AtomicU32,
    /// Fail `prepare` with this message.
    pub prepare_error: Option<String>,
}

impl FakeCountingBackend {
    pub fn new(config: SimulatedConfig) -> Self {
        Self {
            inner: SimulatedBackend::new(config),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            fail_resets: AtomicU32::new(0),
            prepare_error: None,
        }
    }
}

#[async_trait]
impl ClusterBackend for FakeCountingBackend {
    fn name(&self) -> &str {
        "fake-counting"
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        match &self.prepare_error {
            Some(message) => Err(BackendError::new(message.clone())),
            None => Ok(()),
        }
    }

    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        let report = self.inner.run(task, ctx).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        report
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        let failed = self
            .fail_resets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            Err(BackendError::new("fake: namespace deletion timed out"))
        } else {
            Ok(())
        }
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A fake backend that writes `lines` numbered info entries (`line 00000`,
/// `line 00001`, ...), one every `interval`, then completes.
pub struct FakeChattyBackend {
    pub lines: usize,
    pub interval: Duration,
}

/// The messages [`FakeChattyBackend`] writes for `range`.
pub fn chatty_lines(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i:05}")).collect()
}

#[async_trait]
impl ClusterBackend for FakeChattyBackend {
    fn name(&self) -> &str {
        "fake-chatty"
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn run(&self, _task: &Task, ctx: RunContext) -> RunReport {
        for line in chatty_lines(0..self.lines) {
            ctx.logs.info(line).await;
            tokio::time::sleep(self.interval).await;
        }
        let mut result = TaskResult::default();
        result.metrics.insert("steps_taken".into(), self.lines.into());
        RunReport::completed(result, None)
    }

    async fn reset(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// One event the runtime logged, as [`capture_logs`] saw it.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub level: tracing::Level,
    pub message: String,
    /// The other fields, `name=value` (values in their `Debug` form).
    pub fields: Vec<String>,
}

impl CapturedEvent {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Events logged on this thread while the guard lives.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<CapturedEvent>>>);

impl CapturedLogs {
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Warnings (and worse) whose message contains `text`.
    pub fn warnings_containing(&self, text: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|event| event.level <= tracing::Level::WARN && event.message.contains(text))
            .collect()
    }

    /// Events of any level whose message contains `text`.
    pub fn containing(&self, text: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|event| event.message.contains(text))
            .collect()
    }
}

/// The process-wide subscriber: hands each event to the capture of the
/// thread it happens on, if any. One global subscriber that is always
/// interested avoids the per-callsite interest caching of thread-local
/// (`set_default`) subscribers, which misses events when tests on other
/// threads hit a callsite first.
struct CaptureSubscriber {
    next_span: AtomicU64,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<CapturedLogs>> = const { std::cell::RefCell::new(None) };
}

struct FieldVisitor<'a>(&'a mut CapturedEvent);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0.fields.push(format!("{}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for CaptureSubscriber {
    fn enabled(&self, _metadata: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let Some(logs) = CAPTURE.with(|capture| capture.borrow().clone()) else {
            return;
        };
        let mut captured = CapturedEvent {
            level: *event.metadata().level(),
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut FieldVisitor(&mut captured));
        logs.0.lock().unwrap().push(captured);
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

/// Stops the capture of this thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Captures every tracing event of this thread (a `#[tokio::test]` runs the
/// runtime and all its tasks on it) until the guard drops.
pub fn capture_logs() -> (CaptureGuard, CapturedLogs) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = CaptureSubscriber {
            next_span: AtomicU64::new(0),
        };
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in runtime tests");
    });
    let logs = CapturedLogs::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(logs.clone()));
    (CaptureGuard(()), logs)
}

/// A worker started in the background.
pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), RuntimeError>>,
}

impl Running {
    pub async fn stop(self) -> Result<(), RuntimeError> {
        self.shutdown.cancel();
        self.handle.await.expect("runtime task panicked")
    }
}

pub fn config(worker_id: &str) -> WorkerConfig {
    WorkerConfig::new(worker_id, "default")
}

pub fn start(
    store: Arc<dyn WorkerQueue>,
    scheduler: Arc<dyn Scheduler>,
    backend: Arc<dyn ClusterBackend>,
    config: WorkerConfig,
) -> Running {
    let shutdown = CancellationToken::new();
    let runtime = WorkerRuntime::new(store, scheduler, backend, config);
    let handle = tokio::spawn(runtime.run(shutdown.clone()));
    Running { shutdown, handle }
}

/// Starts a worker with the default scheduler over `store`.
pub fn start_default(store: Arc<dyn WorkerQueue>, backend: Arc<dyn ClusterBackend>, config: WorkerConfig) -> Running {
    let scheduler = Arc::new(DefaultScheduler::new(Arc::clone(&store)));
    start(store, scheduler, backend, config)
}

pub async fn submit(store: &dyn TaskApi, task: NewTask) -> Task {
    store.create_task(task.validate().unwrap()).await.unwrap()
}

/// Polls (on the paused clock) until the task satisfies `done`, at most `limit`.
pub async fn wait_for(store: &dyn TaskApi, id: TaskId, limit: Duration, done: impl Fn(&Task) -> bool) -> Task {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let task = store.get_task(id).await.unwrap();
        if done(&task) {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} still {} after {limit:?}",
            task.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_terminal(store: &dyn TaskApi, id: TaskId, limit: Duration) -> Task {
    wait_for(store, id, limit, |task| task.status.is_terminal()).await
}
