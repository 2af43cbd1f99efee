//! `aiopslab serve`: the HTTP API (public API, worker protocol, OpenAPI, docs pages, metrics), the sweeper, the
//! completion-webhook deliverer, and optionally in-process workers.
//!
//! A working system on a fresh machine, no database and no cluster:
//!
//! ```text
//! cargo run --release -p aiopslab-cli -- serve --workers 2
//! ```
//!
//! serves the quickstart's API on http://localhost:8000 with the embedded in-memory store (nothing survives a
//! restart) and two simulated workers. Production: `--database-url` (or `DATABASE_URL`) for PostgreSQL, no
//! in-process workers, and one `aiopslab worker` per Kind cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::process::{cancel_on_signals, host_name, init_logging};
use aiopslab_core::runtime::{WorkerConfig, WorkerPool, WorkerRuntime};
use aiopslab_core::{
    ClusterBackend, DefaultScheduler, LeasePolicy, MemoryOptions, Scheduler, SimulatedBackend, SimulatedConfig,
    WorkerQueue,
};
use aiopslab_http::app::{serve_with, ServeOptions};
use aiopslab_http::server::{ApiConfig, ApiState};
use aiopslab_http::webhooks::{Backoff, WebhookConfig};
use aiopslab_postgres::{open_store, PgStoreOptions, StoreChoice};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Where the in-process workers run their tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cluster {
    /// Scripted AIOpsLab-shaped episodes, no cluster needed.
    Simulated,
    /// One Kind cluster per worker (needs docker, kind, kubectl and AIOpsLab, and a build with `--features kind`).
    Kind,
}

/// The server's flags: `aiopslab serve --help`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind. The default keeps the API on this machine; use
    /// 0.0.0.0 to serve other hosts (and set tokens).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,

    /// PostgreSQL URL (migrations are applied at start). Without it the
    /// embedded in-memory store is used and everything is lost on exit.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// With --database-url: the most connections the server holds to PostgreSQL. Each request that touches the
    /// store waits for one (503 after 5 s); a large fleet of remote workers may want more than the default.
    #[arg(long, default_value_t = PgStoreOptions::default().max_connections)]
    database_max_connections: u32,

    /// In-process workers to run next to the API (0: rely on remote workers).
    #[arg(long, default_value_t = 0)]
    workers: u32,

    /// Where the in-process workers run tasks.
    #[arg(long, value_enum, default_value_t = Cluster::Simulated)]
    cluster: Cluster,

    /// With --cluster kind: create each worker's cluster (worker-NNN-kind) when missing.
    #[arg(long)]
    create_clusters: bool,

    /// Backend type the in-process workers serve.
    #[arg(long, default_value = "default")]
    backend_type: String,

    /// Parallel tasks per in-process worker.
    #[arg(long, default_value_t = 1)]
    max_parallel: u32,

    /// Simulated backend: agent steps per episode.
    #[arg(long, default_value_t = 5)]
    sim_steps: u32,

    /// Simulated backend: wall-clock delay per step, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    sim_step_delay_ms: u64,

    /// Bearer token required on the public API (tasks, workers, stats, ...).
    #[arg(long, env = "AIOPSLAB_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,

    /// Bearer token required on the worker protocol (register, heartbeat,
    /// claim, lease, logs, trajectory, finish).
    #[arg(long, env = "AIOPSLAB_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,

    /// A new task becomes claimable only this long after its creation, so a
    /// client that creates a task and reads it straight back sees it
    /// `pending` (the quickstart's end-to-end script asserts exactly that).
    /// 0 hands tasks out at once.
    #[arg(long, default_value_t = 1000)]
    dispatch_delay_ms: u64,

    /// How long a claim or heartbeat keeps a task leased to its worker.
    /// In-process workers heartbeat every 10 s, or every third of this
    /// when that is shorter.
    #[arg(long, default_value_t = 60)]
    lease_secs: u64,

    /// A worker silent this long is marked offline, and a registration
    /// under its id that names no instance may replace it. (Workers built on
    /// the runtime name a fresh instance each start, so a restarted one
    /// takes its id over at once whatever this says.)
    #[arg(long, default_value_t = 90)]
    worker_offline_secs: u64,

    /// Largest trajectory a worker may upload, in MiB of JSON (after gzip
    /// decompression). A trajectory grows with the square of its steps: a
    /// 1000-step simulated episode is ~160 MB.
    #[arg(long, default_value_t = 512)]
    max_trajectory_mb: usize,

    /// How often the sweeper looks for timed-out tasks, expired leases and
    /// silent workers.
    #[arg(long, default_value_t = 5)]
    sweep_interval_secs: u64,

    /// Embedded store only (no --database-url): most finished tasks it
    /// keeps. Past it, the tasks that finished first are dropped with their
    /// logs and trajectories (reads of them answer 404; listings and /stats
    /// no longer count them); pending and running tasks are never dropped.
    /// 0 keeps every task (memory then grows with each one, ~20 KB per
    /// finished simulated episode).
    #[arg(long, default_value_t = MemoryOptions::DEFAULT_MAX_FINISHED_TASKS)]
    memory_max_finished_tasks: usize,

    /// At shutdown, how long in-process workers may finish running tasks.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,

    /// Also write logs to this file (appended).
    #[arg(long)]
    log_file: Option<PathBuf>,

    /// Sign completion webhooks with this secret: each POST to a task's
    /// callback_url carries `X-Aiopslab-Signature: sha256=<hex
    /// HMAC-SHA256(secret, body)>`. Unsigned without it.
    #[arg(long, env = "AIOPSLAB_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,

    /// Tries per completion webhook (exponential backoff from 1 s, doubling,
    /// at most --webhook-max-backoff-secs apart, jittered to 75-100 %)
    /// before it is marked failed. The default 44 with the default 1 h cap
    /// keeps retrying for 24 h 6 min to 32 h 8 min. A failed delivery can be
    /// retried with POST /tasks/{id}/webhooks/{delivery_id}/redeliver.
    #[arg(long, default_value_t = WebhookConfig::DEFAULT_MAX_ATTEMPTS)]
    webhook_max_attempts: u32,

    /// The longest wait between two tries of a completion webhook, in seconds.
    #[arg(long, default_value_t = Backoff::DEFAULT_MAX.as_secs())]
    webhook_max_backoff_secs: u64,

    /// How long one webhook POST may take, in seconds.
    #[arg(long, default_value_t = WebhookConfig::DEFAULT_TIMEOUT.as_secs())]
    webhook_timeout_secs: u64,

    /// Also accept and deliver callback URLs on loopback, private (RFC 1918,
    /// fc00::/7), link-local, metadata and other non-public addresses. Off:
    /// such a callback_url is refused at create when it names the address
    /// (400), and a delivery whose host resolves to one fails without a POST.
    /// For receivers on this host or network.
    #[arg(
        long,
        env = "AIOPSLAB_WEBHOOK_ALLOW_PRIVATE",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    webhook_allow_private_destinations: bool,
}

/// Runs the server until SIGINT/SIGTERM (a second signal exits at once), then stops the in-process workers
/// gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_file.as_deref())?;
    if args.sweep_interval_secs == 0 || args.lease_secs == 0 || args.worker_offline_secs == 0 {
        bail!("--sweep-interval-secs, --lease-secs and --worker-offline-secs must be at least 1");
    }
    if args.max_trajectory_mb == 0 || args.max_trajectory_mb > 1024 {
        bail!("--max-trajectory-mb must be between 1 and 1024 (PostgreSQL holds at most 1 GB in one field)");
    }
    if args.webhook_max_attempts == 0 || args.webhook_timeout_secs == 0 || args.webhook_max_backoff_secs == 0 {
        bail!("--webhook-max-attempts, --webhook-max-backoff-secs and --webhook-timeout-secs must be at least 1");
    }
    let webhooks = WebhookConfig {
        max_attempts: args.webhook_max_attempts,
        timeout: Duration::from_secs(args.webhook_timeout_secs),
        backoff: Backoff {
            max: Duration::from_secs(args.webhook_max_backoff_secs),
            ..Backoff::default()
        },
        allow_private_destinations: args.webhook_allow_private_destinations,
        ..WebhookConfig::default()
    }
    .with_secret(args.webhook_secret.clone().unwrap_or_default());
    if webhooks.secret.is_none() {
        tracing::info!(
            "completion webhooks are sent unsigned (set --webhook-secret or AIOPSLAB_WEBHOOK_SECRET to sign them)"
        );
    }
    let (shortest, longest) = webhooks.retry_window();
    tracing::info!(
        max_attempts = webhooks.max_attempts,
        retried_for_at_least_secs = shortest.as_secs(),
        retried_for_at_most_secs = longest.as_secs(),
        private_destinations = webhooks.allow_private_destinations,
        "completion webhook schedule"
    );
    if shortest < Duration::from_secs(24 * 3600) {
        tracing::warn!(
            "completion webhooks give up within a day ({} s at the least): a receiver down longer loses its \
             notifications unless they are redelivered (raise --webhook-max-attempts)",
            shortest.as_secs()
        );
    }
    let policy = LeasePolicy::default()
        .with_lease_duration(Duration::from_secs(args.lease_secs))
        .with_worker_offline_after(Duration::from_secs(args.worker_offline_secs))
        .with_dispatch_delay(Duration::from_millis(args.dispatch_delay_ms));

    if args.database_max_connections == 0 {
        bail!("--database-max-connections must be at least 1");
    }
    let bound = (args.memory_max_finished_tasks > 0).then_some(args.memory_max_finished_tasks);
    let choice = StoreChoice::from_url(
        args.database_url.as_deref(),
        PgStoreOptions::default().max_connections(args.database_max_connections),
        MemoryOptions::default().with_max_finished_tasks(bound),
    );
    let opened = open_store(&choice, policy)
        .await
        .context("cannot open PostgreSQL (check --database-url / DATABASE_URL)")?;
    let (store, store_kind) = (opened.store, opened.kind);
    let scheduler: Arc<dyn Scheduler> = Arc::new(DefaultScheduler::new(store.clone()));

    let mut api = ApiConfig::for_store(store_kind);
    api.client_token = args.client_token.clone().filter(|t| !t.is_empty());
    api.worker_token = args.worker_token.clone().filter(|t| !t.is_empty());
    api.allow_private_webhook_destinations = args.webhook_allow_private_destinations;
    api.trajectory_body_limit = args.max_trajectory_mb * 1024 * 1024;
    if !args.host.is_loopback() && (api.client_token.is_none() || api.worker_token.is_none()) {
        tracing::warn!(host = %args.host, "serving beyond this machine without a client and a worker token");
    }
    let state = ApiState::new(store.clone(), scheduler.clone(), api);

    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());

    // In-process workers write through the API state's store so their
    // finishes feed the task-duration histogram like remote workers' do.
    let workers = start_workers(&args, state.queue.clone(), scheduler, shutdown.child_token())?;

    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another server running? try --port)"))?;
    tracing::info!(
        "aiopslab server ready on http://{addr} (docs: http://{addr}/docs, store: {store_kind}, in-process workers: {})",
        args.workers
    );
    let options = ServeOptions {
        sweep_interval: Some(Duration::from_secs(args.sweep_interval_secs)),
        webhooks: Some(webhooks),
    };
    let served = serve_with(listener, state, options, shutdown.clone()).await;
    // However the API stopped, stop the workers too and wait for them.
    shutdown.cancel();
    workers.join().await;
    served.context("the HTTP server failed")?;
    tracing::info!("aiopslab server stopped");
    Ok(())
}

/// Starts `args.workers` in-process workers against the store itself.
fn start_workers(
    args: &ServeArgs,
    store: Arc<dyn WorkerQueue>,
    scheduler: Arc<dyn Scheduler>,
    shutdown: CancellationToken,
) -> anyhow::Result<WorkerPool> {
    let mut pool = WorkerPool::new(shutdown);
    if args.workers == 0 {
        tracing::info!("no in-process workers: tasks wait for remote workers (aiopslab worker)");
        return Ok(pool);
    }
    let simulated: Arc<dyn ClusterBackend> = Arc::new(SimulatedBackend::new(
        SimulatedConfig::default()
            .with_steps(args.sim_steps.max(1))
            .with_step_delay(Duration::from_millis(args.sim_step_delay_ms)),
    ));
    for i in 1..=args.workers {
        let (id, backend) = match args.cluster {
            Cluster::Simulated => (format!("worker-{i:03}-simulated"), simulated.clone()),
            Cluster::Kind => {
                let id = format!("worker-{i:03}-kind");
                let backend = kind_backend(&id, args.create_clusters)?;
                (id, backend)
            }
        };
        let config =
            WorkerConfig::new(id.clone(), args.backend_type.clone()).with_max_parallel_tasks(args.max_parallel);
        // Heartbeats extend the leases: at most a third of --lease-secs apart.
        let mut config = config.with_lease_duration(Duration::from_secs(args.lease_secs));
        config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
        config
            .metadata
            .insert("in_process".into(), serde_json::Value::Bool(true));
        if let Some(host) = host_name() {
            config.metadata.insert("host".into(), serde_json::Value::String(host));
        }
        if args.cluster == Cluster::Kind {
            config
                .metadata
                .insert("kind_cluster".into(), serde_json::Value::String(id.clone()));
        }
        config
            .validate()
            .with_context(|| format!("invalid settings for worker {id}"))?;
        pool.spawn(WorkerRuntime::new(store.clone(), scheduler.clone(), backend, config));
    }
    tracing::info!(workers = args.workers, cluster = ?args.cluster, "in-process workers started");
    Ok(pool)
}

/// One Kind cluster per in-process worker, named after it, with the defaults (kind, kubectl, helm and python3
/// on PATH); the worker program exposes every Kind option.
#[cfg(feature = "kind")]
fn kind_backend(id: &str, create_cluster: bool) -> anyhow::Result<Arc<dyn ClusterBackend>> {
    use aiopslab_kind::{preflight, KindBackend, KindConfig};
    let config = KindConfig::builder(id.to_owned())
        .create_cluster(create_cluster)
        .build();
    preflight(&config).with_context(|| format!("worker {id} cannot use Kind on this machine"))?;
    Ok(Arc::new(KindBackend::new(config)))
}

/// Without the `kind` feature the server has no Kind backend (and does not compile kube): say how to get one.
#[cfg(not(feature = "kind"))]
fn kind_backend(_id: &str, _create_cluster: bool) -> anyhow::Result<Arc<dyn ClusterBackend>> {
    bail!(
        "this server was built without the Kind backend: build it with `--features kind` \
         (cargo run --release -p aiopslab-cli --features kind -- serve ...), or use --cluster simulated"
    )
}
