//! [`KindBackend`]: the [`ClusterBackend`] over one Kind cluster per worker.
//!
//! `prepare` makes sure the cluster exists (creating it when configured),
//! writes the worker's own kubeconfig and waits for Ready nodes; `run`
//! starts the AIOpsLab driver (see the runner); `reset` applies the
//! [`ResetPolicy`] and recreates an unhealthy cluster; `shutdown` deletes
//! the cluster when configured. One cluster runs one problem at a time
//! (AIOpsLab's namespaces are fixed), so runs are serialised.

use std::path::Path;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::Instrument;

use aiopslab_core::{BackendError, ClusterBackend, RunContext, RunReport, Task, TerminalStatus};

use crate::config::{KindConfig, ResetPolicy};
use crate::kind_cli::KindCli;
use crate::kube_api::KubeApi;
use crate::runner;

/// Runs AIOpsLab problems on the worker's Kind cluster. See the crate docs.
#[derive(Debug)]
pub struct KindBackend {
    config: KindConfig,
    kube: Mutex<Option<KubeApi>>,
    python: Mutex<Option<std::path::PathBuf>>,
    run_lock: Mutex<()>,
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
            python: Mutex::new(None),
            run_lock: Mutex::new(()),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &KindConfig {
        &self.config
    }

    fn cli(&self) -> KindCli<'_> {
        KindCli::new(&self.config)
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
        *self.kube.lock().await = None;
        Ok(())
    }

    /// The interpreter executable, resolved once (see [`runner::resolve_python`]).
    async fn python(&self) -> Result<std::path::PathBuf, String> {
        let mut slot = self.python.lock().await;
        if let Some(python) = slot.as_ref() {
            return Ok(python.clone());
        }
        let python = runner::resolve_python(&self.config).await?;
        *slot = Some(python.clone());
        Ok(python)
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

    /// Deletes the cluster (when it exists) and creates it again, then waits for Ready nodes.
    pub async fn recreate_cluster(&self) -> Result<(), BackendError> {
        tracing::warn!(cluster = %self.config.cluster_name, "recreating the Kind cluster");
        self.delete_cluster_if_exists().await?;
        self.cli()
            .create()
            .await
            .map_err(|err| backend_error("cannot create the Kind cluster", err))?;
        self.write_kubeconfig().await?;
        self.wait_ready().await
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

    async fn delete_namespaces(&self) -> Result<(), BackendError> {
        let api = self.api().await?;
        let deleted = api
            .delete_namespaces_and_wait(
                &self.config.reset_namespaces,
                self.config.namespace_delete_timeout,
                self.config.poll_interval,
            )
            .await
            .map_err(|err| backend_error("cannot delete the run's namespaces", err))?;
        tracing::info!(?deleted, "reset: namespaces deleted");
        Ok(())
    }

    /// `reset`: the [`ResetPolicy`], with recreation when the cluster is unhealthy.
    async fn reset_cluster(&self) -> Result<(), BackendError> {
        let _guard = self.run_lock.lock().await;
        match self.config.reset_policy {
            ResetPolicy::RecreateCluster => self.recreate_cluster().await,
            ResetPolicy::DeleteNamespaces => {
                self.ensure_healthy().await?;
                let deleted = self.delete_namespaces().await;
                self.or_recreate(deleted, "namespace reset failed").await
            }
        }
    }

    /// `shutdown`: deletes the cluster when configured.
    async fn shutdown_cluster(&self) -> Result<(), BackendError> {
        if !self.config.delete_on_shutdown {
            return Ok(());
        }
        self.delete_cluster_if_exists().await
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!("kind", operation, worker_id = %self.config.worker_id, cluster = %self.config.cluster_name)
    }

    /// `prepare`: the cluster exists (or is created), the kubeconfig is written, nodes are Ready.
    async fn prepare_cluster(&self) -> Result<(), BackendError> {
        let config = &self.config;
        for dir in [config.home_dir(), config.runs_dir()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|err| backend_error(&format!("cannot create {}", dir.display()), err))?;
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
        let python = self.python().await.map_err(BackendError::new)?;
        tracing::info!(python = %python.display(), "driver interpreter");
        Ok(())
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
        async {
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
            let python = self.python().await;
            let python = python.as_deref().map_err(String::as_str);
            runner::run_task(&self.config, python, task, &ctx).await
        }
        .instrument(span)
        .await
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.reset_cluster().instrument(self.span("kind_reset")).await
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        self.shutdown_cluster().instrument(self.span("kind_shutdown")).await
    }
}
