//! `aiopslab worker`: one process per cluster, running tasks from the queue.
//!
//! As in the quickstart, one worker per Kind cluster:
//!
//! ```text
//! kind create cluster --name worker-001-kind
//! aiopslab worker --id worker-001-kind --backend-type default --server http://localhost:8000
//! ```
//!
//! (from a build with the `kind` feature: `cargo install --path aiopslab-cli --features kind`).
//!
//! It talks to the server over HTTP (`--server`, the worker protocol, no
//! database credentials needed) or straight to PostgreSQL (`--database-url`
//! / `DATABASE_URL`). `--cluster simulated` runs scripted episodes with no
//! cluster at all, and is all a build without the `kind` feature can run: that build compiles no Kubernetes
//! client.

#[cfg(feature = "kind")]
mod kind;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::process::{cancel_on_signals, host_name, init_logging};
use aiopslab_core::runtime::{WorkerConfig, WorkerRuntime};
use aiopslab_core::{
    ClusterBackend, DefaultScheduler, LeasePolicy, Scheduler, SimulatedBackend, SimulatedConfig, WorkerQueue,
};
use aiopslab_http::client::HttpStore;
use aiopslab_postgres::PgStore;
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Where this worker runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cluster {
    /// A Kind cluster driven through AIOpsLab (needs docker, kind, kubectl, helm, Python and AIOpsLab, and a
    /// build with `--features kind`).
    Kind,
    /// Scripted AIOpsLab-shaped episodes, no cluster needed.
    Simulated,
}

/// The worker's flags: `aiopslab worker --help`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The worker id, e.g. worker-001-kind (for Kind, also the default cluster name).
    #[arg(long)]
    id: String,

    /// Only tasks of this backend type are claimed.
    #[arg(long, default_value = "default")]
    backend_type: String,

    /// The aiopslab server to work for, over HTTP (wins over --database-url).
    /// Default when neither is given: http://127.0.0.1:8000.
    #[arg(long, env = "AIOPSLAB_SERVER")]
    server: Option<String>,

    /// Work straight against PostgreSQL instead of a server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Bearer token for the worker protocol, when the server requires one.
    #[arg(long, env = "AIOPSLAB_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,

    /// Where tasks run.
    #[arg(long, value_enum, default_value_t = Cluster::Kind)]
    cluster: Cluster,

    /// How many tasks run at once (one Kind cluster runs one AIOpsLab problem at a time).
    #[arg(long, default_value_t = 1)]
    max_parallel: u32,

    /// Only these problem ids (comma-separated); default: any.
    #[arg(long, value_delimiter = ',')]
    supported_problems: Option<Vec<String>>,

    /// With --database-url: the server's --dispatch-delay-ms (a worker that
    /// claims straight from the database applies it itself). Keep them equal.
    #[arg(long, default_value_t = 1000)]
    dispatch_delay_ms: u64,

    /// The server's --lease-secs (how long a claim or a heartbeat keeps a
    /// task leased). Keep them equal: the heartbeat is checked against it,
    /// and with --database-url the claims made here use it.
    #[arg(long, default_value_t = 60)]
    lease_secs: u64,

    /// How often the worker heartbeats, which extends its leases: at most a
    /// third of --lease-secs (refused at start otherwise). Default: 10, or a
    /// third of --lease-secs when that is shorter.
    #[arg(long)]
    heartbeat_secs: Option<u64>,

    /// At shutdown, how long running tasks may go on before they are stopped.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,

    /// Simulated cluster: agent steps per episode.
    #[arg(long, default_value_t = 5)]
    sim_steps: u32,

    /// Simulated cluster: wall-clock delay per step, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    sim_step_delay_ms: u64,

    /// Also write logs to this file (appended), e.g. workers/logs/worker-001.log.
    #[arg(long)]
    log_file: Option<PathBuf>,

    /// The Kind options (only in a build with the `kind` feature).
    #[cfg(feature = "kind")]
    #[command(flatten)]
    kind: kind::KindArgs,
}

/// Runs the worker until SIGINT/SIGTERM (a second signal exits at once). `matches` are the subcommand's parsed
/// arguments, to tell a secret given as a flag from one taken from the environment.
pub async fn run(args: WorkerArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    init_logging(args.log_file.as_deref())?;
    warn_of_secrets_on_the_command_line(matches);

    // Settings are checked first, so a bad combination fails before any connection or preflight.
    let mut config =
        WorkerConfig::new(args.id.clone(), args.backend_type.clone()).with_max_parallel_tasks(args.max_parallel);
    config.capabilities.supported_problems = args.supported_problems.clone();
    heartbeat_settings(&mut config, &args)?;
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    if let Some(host) = host_name() {
        config.metadata.insert("host".into(), serde_json::Value::String(host));
    }
    #[cfg(feature = "kind")]
    if args.cluster == Cluster::Kind {
        let cluster = args.kind.cluster_name.clone().unwrap_or_else(|| args.id.clone());
        config
            .metadata
            .insert("kind_cluster".into(), serde_json::Value::String(cluster));
    }
    config.validate().context("invalid worker settings")?;

    let store = connect(&args).await?;
    let scheduler: Arc<dyn Scheduler> = Arc::new(DefaultScheduler::new(store.clone()));
    let backend = backend(&args).await?;

    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    tracing::info!(worker_id = %args.id, backend = backend.name(), "worker starting");
    WorkerRuntime::new(store, scheduler, backend, config)
        .run(shutdown)
        .await
        .with_context(|| format!("worker {} stopped", args.id))?;
    tracing::info!(worker_id = %args.id, "worker stopped");
    Ok(())
}

/// The heartbeat interval and the lease it must fit in: an explicit
/// --heartbeat-secs must be at most a third of --lease-secs, else the
/// worker refuses to start (its heartbeats would not keep its leases);
/// without one it is derived from the lease.
fn heartbeat_settings(config: &mut WorkerConfig, args: &WorkerArgs) -> anyhow::Result<()> {
    let lease = Duration::from_secs(args.lease_secs.max(1));
    let Some(heartbeat_secs) = args.heartbeat_secs else {
        *config = config.clone().with_lease_duration(lease);
        return Ok(());
    };
    config.heartbeat_interval = Duration::from_secs(heartbeat_secs.max(1));
    config.lease_duration = Some(lease);
    if config.heartbeat_interval * WorkerConfig::HEARTBEATS_PER_LEASE > lease {
        anyhow::bail!(
            "--heartbeat-secs {} is not comfortably under --lease-secs {}: heartbeats extend the leases, so \
             they must come at least {} times per lease, or healthy runs are lost as worker_lost. Lower \
             --heartbeat-secs (at most {:.1} s here), or set --lease-secs to the server's own --lease-secs if \
             that is longer",
            config.heartbeat_interval.as_secs(),
            lease.as_secs(),
            WorkerConfig::HEARTBEATS_PER_LEASE,
            lease.as_secs_f64() / f64::from(WorkerConfig::HEARTBEATS_PER_LEASE),
        );
    }
    Ok(())
}

/// A secret given as a flag is in this process's command line, which every
/// user of the host can read (`ps`), the agent's shell included: say so.
fn warn_of_secrets_on_the_command_line(matches: &clap::ArgMatches) {
    for (id, variable) in [
        ("worker_token", "AIOPSLAB_WORKER_TOKEN"),
        ("database_url", "DATABASE_URL"),
    ] {
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            tracing::warn!(
                "--{} was given on the command line, which every process on this host can read \
                 (the agent's shell too, with `ps`); set {variable} in the environment instead",
                id.replace('_', "-")
            );
        }
    }
}

/// The store the worker uses: the server over HTTP, or PostgreSQL directly.
async fn connect(args: &WorkerArgs) -> anyhow::Result<Arc<dyn WorkerQueue>> {
    match (&args.server, &args.database_url) {
        (None, Some(url)) => {
            // Claims made straight in the database follow this process's
            // policy, so it must be the server's (same defaults).
            let policy = LeasePolicy::default()
                .with_lease_duration(Duration::from_secs(args.lease_secs.max(1)))
                .with_dispatch_delay(Duration::from_millis(args.dispatch_delay_ms));
            let store = PgStore::connect(url, policy)
                .await
                .context("cannot connect to PostgreSQL (check --database-url / DATABASE_URL)")?;
            tracing::info!("working straight against PostgreSQL");
            Ok(Arc::new(store))
        }
        (server, _) => {
            let url = server.as_deref().unwrap_or("http://127.0.0.1:8000");
            let store = HttpStore::new(url, args.worker_token.clone()).context("invalid --server URL")?;
            tracing::info!(server = %store.base_url(), "working for an aiopslab server over HTTP");
            Ok(Arc::new(store))
        }
    }
}

/// The cluster backend, checked to be usable before the worker registers.
async fn backend(args: &WorkerArgs) -> anyhow::Result<Arc<dyn ClusterBackend>> {
    match args.cluster {
        Cluster::Simulated => Ok(Arc::new(SimulatedBackend::new(
            SimulatedConfig::default()
                .with_steps(args.sim_steps.max(1))
                .with_step_delay(Duration::from_millis(args.sim_step_delay_ms)),
        ))),
        #[cfg(feature = "kind")]
        Cluster::Kind => kind::backend(&args.id, &args.kind).await,
        #[cfg(not(feature = "kind"))]
        Cluster::Kind => anyhow::bail!(
            "this worker was built without the Kind backend: build it with `--features kind` \
             (cargo run --release -p aiopslab-cli --features kind -- worker ...), or use --cluster simulated"
        ),
    }
}
