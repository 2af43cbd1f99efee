//! [`KindBackend`]: the [`ClusterBackend`] over one Kind cluster per worker.
//!
//! `prepare` checks who the driver will run as, makes sure the cluster
//! exists (creating it when configured, from AIOpsLab's own node config by
//! default), writes the worker's own kubeconfig, waits for Ready nodes,
//! starts the per-task LLM proxy, installs the shared infrastructure
//! (OpenEBS, Prometheus) **once**, and records the cluster's baseline.
//!
//! `run` starts the AIOpsLab driver (see the runner), then runs the
//! **verified reset** before it reports, so every task's metrics carry
//! `reset_seconds`: whatever the run left (application namespaces, Chaos
//! Mesh experiments, released volumes) is found, cleaned and checked again.
//! When that cannot finish before the deadline, or fails, the cluster is
//! marked dirty and `reset` (which the runtime calls before the next claim,
//! retrying until it succeeds) cleans or recreates it: a worker never claims
//! onto a cluster that failed its check. `shutdown` deletes the cluster when
//! configured. One cluster runs one problem at a time (AIOpsLab's
//! namespaces are fixed), so runs are serialised.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use aiopslab_core::{BackendError, ClusterBackend, LogLevel, NewLogEntry, RunContext, RunReport, Task, TerminalStatus};

use crate::cluster_check::{self, ClusterBaseline, LeftoverRules};
use crate::config::{KindConfig, ResetPolicy};
use crate::isolation::{self, DriverUser};
use crate::kind_cli::KindCli;
use crate::kube_api::KubeApi;
use crate::llm_proxy::{LlmProxy, ProxyLimits};
use crate::runner::{self, DriverHost};

/// Runs AIOpsLab problems on the worker's Kind cluster. See the module docs.
#[derive(Debug)]
pub struct KindBackend {
    config: KindConfig,
    kube: Mutex<Option<KubeApi>>,
    host: Mutex<Option<PreparedHost>>,
    cluster: Mutex<ClusterState>,
    run_lock: Mutex<()>,
}

/// What `prepare` set up for the driver.
#[derive(Debug, Clone)]
struct PreparedHost {
    python: PathBuf,
    proxy: LlmProxy,
    user: Option<DriverUser>,
}

/// What the worker knows of its cluster between runs.
#[derive(Debug, Default)]
struct ClusterState {
    /// What a clean cluster holds (captured after the shared infrastructure was installed).
    baseline: Option<ClusterBaseline>,
    /// The last check passed and nothing ran since.
    verified: bool,
    /// How many times the shared infrastructure was installed (or found in place).
    infra_installs: u32,
}

fn backend_error(what: &str, err: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("{what}: {err}"))
}

async fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let temp = path.with_extension("tmp");
    tokio::fs::write(&temp, contents).await?;
    tokio::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)).await?;
    tokio::fs::rename(&temp, path).await
}

impl KindBackend {
    /// A backend with these settings. Nothing happens until `prepare`.
    pub fn new(config: KindConfig) -> Self {
        Self {
            config,
            kube: Mutex::new(None),
            host: Mutex::new(None),
            cluster: Mutex::new(ClusterState::default()),
            run_lock: Mutex::new(()),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &KindConfig {
        &self.config
    }

    /// How many times the shared infrastructure was installed since the
    /// worker started (once, unless the cluster had to be recreated).
    pub async fn infra_installs(&self) -> u32 {
        self.cluster.lock().await.infra_installs
    }

    fn cli(&self) -> KindCli<'_> {
        KindCli::new(&self.config)
    }

    fn rules(&self) -> LeftoverRules {
        LeftoverRules {
            crd_groups: self.config.leftover_crd_groups.clone(),
            ..LeftoverRules::default()
        }
    }

    /// Fetches the cluster's kubeconfig with `kind get kubeconfig` and writes
    /// it to the worker's own file (and the driver's `HOME/.kube/config`).
    pub async fn write_kubeconfig(&self) -> Result<(), BackendError> {
        let kubeconfig = self
            .cli()
            .kubeconfig()
            .await
            .map_err(|err| backend_error("cannot read the cluster's kubeconfig", err))?;
        let own = self.config.kubeconfig_path();
        let home = self.config.home_dir().join(".kube").join("config");
        for path in [&own, &home] {
            write_private(path, &kubeconfig)
                .await
                .map_err(|err| backend_error(&format!("cannot write {}", path.display()), err))?;
            if own == home {
                break;
            }
        }
        if let Some(user) = self.driver_user().await {
            // The driver's HOME (and its kubeconfig) belong to the driver's user.
            isolation::prepare_for_user(&self.config.home_dir(), &user)
                .map_err(|err| backend_error("cannot hand the driver's HOME to its user", err))?;
        }
        *self.kube.lock().await = None;
        Ok(())
    }

    async fn driver_user(&self) -> Option<DriverUser> {
        self.host.lock().await.as_ref().and_then(|host| host.user.clone())
    }

    async fn api(&self) -> Result<KubeApi, BackendError> {
        let mut slot = self.kube.lock().await;
        if let Some(api) = slot.as_ref() {
            return Ok(api.clone());
        }
        let api = KubeApi::from_kubeconfig(&self.config.kubeconfig_path(), &self.config.context_name())
            .await
            .map_err(|err| backend_error("cannot build a Kubernetes client", err))?;
        *slot = Some(api.clone());
        Ok(api)
    }

    async fn wait_ready(&self) -> Result<(), BackendError> {
        let api = self.api().await?;
        let readiness = api
            .wait_nodes_ready(self.config.node_ready_timeout, self.config.poll_interval)
            .await
            .map_err(|err| backend_error(&format!("Kind cluster {}", self.config.cluster_name), err))?;
        tracing::info!(cluster = %self.config.cluster_name, %readiness, "cluster ready");
        Ok(())
    }

    /// Deletes the cluster when `kind get clusters` lists it.
    async fn delete_cluster_if_exists(&self) -> Result<(), BackendError> {
        let cli = self.cli();
        if cli
            .exists()
            .await
            .map_err(|err| backend_error("kind get clusters", err))?
        {
            tracing::info!(cluster = %self.config.cluster_name, "deleting the Kind cluster");
            cli.delete()
                .await
                .map_err(|err| backend_error("cannot delete the Kind cluster", err))?;
        }
        Ok(())
    }

    /// Deletes the cluster (when it exists) and creates it again, waits for
    /// Ready nodes, installs the shared infrastructure and records the new baseline.
    pub async fn recreate_cluster(&self) -> Result<(), BackendError> {
        tracing::warn!(cluster = %self.config.cluster_name, "recreating the Kind cluster");
        self.cluster.lock().await.verified = false;
        self.delete_cluster_if_exists().await?;
        self.cli()
            .create()
            .await
            .map_err(|err| backend_error("cannot create the Kind cluster", err))?;
        self.write_kubeconfig().await?;
        self.wait_ready().await?;
        self.install_infra_and_baseline().await
    }

    /// Installs OpenEBS and Prometheus (unless AIOpsLab's stock orchestrator
    /// does it per task) and records what a clean cluster holds.
    async fn install_infra_and_baseline(&self) -> Result<(), BackendError> {
        if !self.config.stock_orchestrator {
            let (python, user) = {
                let host = self.host.lock().await;
                let host = host
                    .as_ref()
                    .ok_or_else(|| BackendError::new("the backend was not prepared"))?;
                (host.python.clone(), host.user.clone())
            };
            let started = Instant::now();
            let components = runner::install_infra(&self.config, &python, user.as_ref())
                .await
                .map_err(|err| backend_error("cannot install the shared infrastructure (OpenEBS, Prometheus)", err))?;
            self.cluster.lock().await.infra_installs += 1;
            tracing::info!(
                ?components,
                seconds = started.elapsed().as_secs_f64(),
                "shared infrastructure in place (installed once per cluster)"
            );
        }
        let baseline = self
            .api()
            .await?
            .capture_baseline(&self.rules())
            .await
            .map_err(|err| backend_error("cannot read the cluster's baseline", err))?;
        tracing::info!(namespaces = ?baseline.namespaces, "cluster baseline recorded");
        let mut state = self.cluster.lock().await;
        state.baseline = Some(baseline);
        state.verified = true;
        Ok(())
    }

    /// `attempt`'s error when the config forbids recreating the cluster;
    /// otherwise logs it as `what` and recreates the cluster once.
    async fn or_recreate(&self, attempt: Result<(), BackendError>, what: &str) -> Result<(), BackendError> {
        match attempt {
            Err(err) if self.config.recreate_when_unhealthy => {
                tracing::warn!(%err, "{what}");
                self.recreate_cluster().await
            }
            other => other,
        }
    }

    /// Waits for Ready nodes; when that fails and the config allows it,
    /// recreates the cluster once.
    async fn ensure_healthy(&self) -> Result<(), BackendError> {
        let ready = self.wait_ready().await;
        self.or_recreate(ready, "cluster unhealthy").await
    }

    /// The verified reset, now: find what the last run left, clean it, check
    /// again; a shared component gone missing is installed again; anything
    /// that will not go makes the cluster be recreated (when
    /// [`KindConfig::recreate_when_unhealthy`]). Returns what it did. `run`
    /// calls it after every episode and `reset` when that did not pass.
    pub async fn verified_reset(&self) -> Result<String, BackendError> {
        if self.config.reset_policy == ResetPolicy::RecreateCluster {
            self.recreate_cluster().await?;
            return Ok("cluster recreated (reset policy)".into());
        }
        self.ensure_healthy().await?;
        let baseline = self.cluster.lock().await.baseline.clone();
        let Some(baseline) = baseline else {
            self.install_infra_and_baseline().await?;
            return Ok("baseline recorded".into());
        };
        let api = self.api().await?;
        let checked = cluster_check::verified_reset(
            &api,
            &baseline,
            &self.rules(),
            self.config.namespace_delete_timeout,
            self.config.poll_interval,
        )
        .await;
        let summary = match checked {
            Ok(outcome) if outcome.cleaned => format!("cleaned: {}", outcome.found.summary()),
            Ok(_) => "nothing left behind".to_string(),
            Err(crate::kube_api::KubeError::LeftoversRemain { remaining })
                if !remaining.missing_baseline.is_empty() =>
            {
                // A shared component is gone (the agent may delete anything): put it back.
                tracing::warn!(missing = ?remaining.missing_baseline, "reset: shared infrastructure missing; installing it again");
                let reinstalled = self.install_infra_and_baseline().await;
                self.or_recreate(reinstalled, "reinstalling the shared infrastructure failed")
                    .await?;
                format!(
                    "shared infrastructure reinstalled (missing: {:?})",
                    remaining.missing_baseline
                )
            }
            Err(err) => {
                let failed = Err(backend_error("the verified reset failed", err));
                self.or_recreate(failed, "the cluster could not be cleaned").await?;
                "cluster recreated: it could not be cleaned".to_string()
            }
        };
        self.cluster.lock().await.verified = true;
        Ok(summary)
    }

    /// The reset at the end of a run, within what is left of its deadline
    /// (or until it is cancelled); when it cannot finish, the runtime's
    /// `reset` does it before the next claim.
    async fn reset_after_run(&self, report: &mut RunReport, ctx: &RunContext) {
        self.cluster.lock().await.verified = false;
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = self.verified_reset() => Some(outcome),
            _ = ctx.cancel.cancelled() => None,
            _ = tokio::time::sleep_until(ctx.deadline) => None,
        };
        let seconds = started.elapsed().as_secs_f64();
        let (level, message) = match &outcome {
            Some(Ok(summary)) => (LogLevel::Info, format!("verified reset in {seconds:.1} s: {summary}")),
            Some(Err(err)) => (
                LogLevel::Error,
                format!(
                    "verified reset failed after {seconds:.1} s: {err}; the worker takes no task until it succeeds"
                ),
            ),
            None => (
                LogLevel::Warning,
                format!("verified reset interrupted after {seconds:.1} s; it finishes before the next claim"),
            ),
        };
        ctx.logs.log(NewLogEntry::new(level, message)).await;
        if let Some(result) = report.result.as_mut() {
            match outcome {
                Some(Ok(_)) => {
                    result.metrics.insert("reset_seconds".into(), json!(seconds));
                }
                _ => {
                    result.metrics.insert("reset_seconds".into(), json!(null));
                    result.metrics.insert("reset_deferred".into(), json!(true));
                }
            }
        }
    }

    /// `reset` between tasks: nothing when the check after the run passed;
    /// otherwise the verified reset (cleaning, or recreating the cluster).
    async fn reset_cluster(&self) -> Result<(), BackendError> {
        let _guard = self.run_lock.lock().await;
        if self.cluster.lock().await.verified {
            return Ok(());
        }
        let summary = self.verified_reset().await?;
        tracing::info!(%summary, "reset done");
        Ok(())
    }

    /// `shutdown`: stops the LLM proxy; deletes the cluster when configured.
    async fn shutdown_cluster(&self) -> Result<(), BackendError> {
        if let Some(host) = self.host.lock().await.take() {
            host.proxy.shutdown().await;
        }
        if !self.config.delete_on_shutdown {
            return Ok(());
        }
        self.delete_cluster_if_exists().await
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!("kind", operation, worker_id = %self.config.worker_id, cluster = %self.config.cluster_name)
    }

    /// `prepare`: see the module docs.
    async fn prepare_cluster(&self) -> Result<(), BackendError> {
        let config = &self.config;
        let user = isolation::check_driver_user_policy(config).map_err(|err| BackendError::new(err.to_string()))?;
        if let Err(err) = isolation::forbid_inspection() {
            tracing::warn!(%err, "cannot make the worker process non-dumpable");
        }
        for dir in [config.home_dir(), config.runs_dir()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|err| backend_error(&format!("cannot create {}", dir.display()), err))?;
        }
        let python = runner::resolve_python(config).await.map_err(BackendError::new)?;
        tracing::info!(python = %python.display(), user = ?user.as_ref().map(|u| &u.name), "driver interpreter");
        let proxy = LlmProxy::start(
            config.llm_proxy_addr,
            ProxyLimits {
                max_concurrency: config.llm_max_concurrency,
                requests_per_minute: config.llm_requests_per_minute,
            },
        )
        .await
        .map_err(|err| backend_error("cannot start the LLM proxy", err))?;
        tracing::info!(addr = %proxy.local_addr(), "LLM proxy listening (loopback, one session per task)");
        if let Some(previous) = self.host.lock().await.replace(PreparedHost { python, proxy, user }) {
            previous.proxy.shutdown().await;
        }

        let cli = self.cli();
        let clusters = cli
            .clusters()
            .await
            .map_err(|err| backend_error("kind get clusters", err))?;
        if !clusters.contains(&config.cluster_name) {
            if !config.create_cluster {
                return Err(BackendError::new(format!(
                    "Kind cluster {name:?} does not exist (`kind get clusters` lists {clusters:?}); create it with \
                     `kind create cluster --name {name}` or let the worker create it (create_cluster / --create-cluster)",
                    name = config.cluster_name
                )));
            }
            tracing::info!(cluster = %config.cluster_name, "creating the Kind cluster (this takes minutes)");
            cli.create()
                .await
                .map_err(|err| backend_error("cannot create the Kind cluster", err))?;
        }
        self.write_kubeconfig().await?;
        self.ensure_healthy().await?;
        if self.cluster.lock().await.baseline.is_none() {
            self.install_infra_and_baseline().await?;
        }
        Ok(())
    }

    async fn run_episode(&self, task: &Task, ctx: RunContext) -> RunReport {
        // One problem at a time per cluster; waiting still honours cancel and deadline.
        let _guard = tokio::select! {
            guard = self.run_lock.lock() => guard,
            _ = ctx.cancel.cancelled() => {
                return RunReport::ended(TerminalStatus::Cancelled, "cancelled", "cancelled before the cluster was free");
            }
            _ = tokio::time::sleep_until(ctx.deadline) => {
                return RunReport::ended(TerminalStatus::Timeout, "timeout", "the deadline passed while waiting for the cluster");
            }
        };
        let host = self.host.lock().await.clone();
        let Some(host) = host else {
            return RunReport::failed("backend_not_prepared", "the Kind backend was not prepared");
        };
        let driver_host = DriverHost {
            python: Ok(&host.python),
            proxy: &host.proxy,
            user: host.user.as_ref(),
        };
        let outcome = runner::run_task(&self.config, &driver_host, task, &ctx).await;
        let mut report = outcome.report;
        if let Some(failure) = &outcome.cleanup_failure {
            tracing::warn!(stage = %failure.stage, error = %failure.message, "AIOpsLab failed after its evaluation: a cluster-health event");
        }
        self.reset_after_run(&mut report, &ctx).await;
        report
    }
}

#[async_trait]
impl ClusterBackend for KindBackend {
    fn name(&self) -> &str {
        "kind"
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        self.prepare_cluster().instrument(self.span("kind_prepare")).await
    }

    async fn run(&self, task: &Task, ctx: RunContext) -> RunReport {
        let span = tracing::info_span!("kind_run", task_id = %task.id, worker_id = %ctx.worker_id, problem_id = %task.problem_id);
        self.run_episode(task, ctx).instrument(span).await
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.reset_cluster().instrument(self.span("kind_reset")).await
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.shutdown_cluster().instrument(self.span("kind_shutdown")).await
    }
}
