//! The worker's Kind backend: its command-line options and the checked backend they build. Compiled only with
//! the `kind` feature, so a simulated worker (and the server) build without kube and k8s-openapi.

use std::path::PathBuf;
use std::sync::Arc;

use aiopslab_core::ClusterBackend;
use aiopslab_kind::{preflight, KindBackend, KindConfig, ResetPolicy};
use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};

/// How Kind clusters are reset between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Reset {
    /// Delete the namespaces a run leaves behind (fast; keeps the warm cluster).
    Namespaces,
    /// Delete and recreate the cluster (slow; leaves nothing behind).
    Recreate,
}

/// Options of the Kind backend (`--cluster kind`).
#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Kind cluster (--cluster kind)")]
pub(crate) struct KindArgs {
    /// The Kind cluster to use (default: the worker id, as in the quickstart).
    #[arg(long)]
    pub(crate) cluster_name: Option<String>,

    /// Create the cluster at start when it does not exist.
    #[arg(long)]
    pub(crate) create_cluster: bool,

    /// A Kind node config for creating the cluster (default: AIOpsLab's kind/kind-config-x86.yaml,
    /// or -arm, from --aiopslab-dir when it has one).
    #[arg(long)]
    pub(crate) node_config: Option<PathBuf>,

    /// Delete the cluster when the worker stops.
    #[arg(long)]
    pub(crate) delete_cluster_on_exit: bool,

    /// How the cluster is cleaned between tasks.
    #[arg(long, value_enum, default_value_t = Reset::Namespaces)]
    pub(crate) reset: Reset,

    /// The worker's own directory (kubeconfig, one directory per run); default ./aiopslab-work/<id>.
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,

    /// The AIOpsLab checkout (the directory holding the `aiopslab` package), unless it is pip-installed.
    #[arg(long, env = "AIOPSLAB_DIR")]
    pub(crate) aiopslab_dir: Option<PathBuf>,

    /// The Python interpreter that runs AIOpsLab (3.11 or 3.12).
    #[arg(long, default_value = "python3")]
    pub(crate) python: PathBuf,

    /// The `kind` executable (a name on PATH or a path).
    #[arg(long = "kind", default_value = "kind")]
    pub(crate) kind_bin: PathBuf,

    /// The `kubectl` executable (a name on PATH or a path).
    #[arg(long = "kubectl", default_value = "kubectl")]
    pub(crate) kubectl_bin: PathBuf,

    /// The `helm` executable (a name on PATH or a path).
    #[arg(long = "helm", default_value = "helm")]
    pub(crate) helm_bin: PathBuf,

    /// The OpenAI-compatible endpoint used when a task's agent_config has no base_url.
    #[arg(long, default_value = "https://api.openai.com/v1")]
    pub(crate) llm_base_url: String,

    /// The environment variable holding the LLM API key when agent_config has no api_key_env.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub(crate) llm_api_key_env: String,

    /// The model used when a task's agent_config names none.
    #[arg(long)]
    pub(crate) llm_model: Option<String>,

    /// At most this many LLM calls in flight per endpoint (default: no limit).
    #[arg(long)]
    pub(crate) llm_max_concurrency: Option<usize>,

    /// At most this many LLM calls started per minute per endpoint (default: no limit).
    #[arg(long)]
    pub(crate) llm_requests_per_minute: Option<u32>,

    /// The agent's context budget in tokens (older turns are trimmed, the system prompt stays).
    #[arg(long, default_value_t = 120_000)]
    pub(crate) max_context_tokens: u64,

    /// Run the driver (and so the agent's shell) as this unprivileged user. Required when the
    /// worker runs as root, unless --allow-root-driver: a root agent can read every secret.
    #[arg(long)]
    pub(crate) run_as: Option<String>,

    /// Let the driver run as root (the agent's shell then has root on this host).
    #[arg(long)]
    pub(crate) allow_root_driver: bool,

    /// An extra environment variable the driver may inherit (repeatable; secrets are refused anyway).
    #[arg(long = "driver-env", value_name = "NAME")]
    pub(crate) driver_env: Vec<String>,

    /// tiktoken's cache for the driver (AIOpsLab loads cl100k_base at import; default: $TIKTOKEN_CACHE_DIR).
    #[arg(long, env = "TIKTOKEN_CACHE_DIR")]
    pub(crate) tiktoken_cache_dir: Option<PathBuf>,

    /// Run AIOpsLab's own orchestrator, which installs OpenEBS and Prometheus on every task and
    /// removes them after it (default: installed once per cluster, problems run on a warm cluster).
    #[arg(long)]
    pub(crate) stock_orchestrator: bool,

    /// The OpenEBS operator manifest the shared infrastructure is installed from (URL or file).
    #[arg(long, default_value = aiopslab_kind::OPENEBS_MANIFEST_URL)]
    pub(crate) openebs_manifest: String,
}

/// The Kind backend, checked to be usable on this machine before the worker registers.
pub(crate) async fn backend(id: &str, args: &KindArgs) -> anyhow::Result<Arc<dyn ClusterBackend>> {
    let config = kind_config(id, args);
    // The checks run commands (kind version, python -c 'import aiopslab', ...): off the async threads.
    let checked = config.clone();
    tokio::task::spawn_blocking(move || preflight(&checked))
        .await
        .context("the preflight check did not finish")?
        .context("this machine cannot run a Kind worker yet (or use --cluster simulated)")?;
    Ok(Arc::new(KindBackend::new(config)))
}

/// The Kind backend's settings from the command line (paths made absolute by the builder).
fn kind_config(id: &str, kind: &KindArgs) -> KindConfig {
    let mut builder = KindConfig::builder(id.to_owned())
        .create_cluster(kind.create_cluster)
        .delete_on_shutdown(kind.delete_cluster_on_exit)
        .reset_policy(match kind.reset {
            Reset::Namespaces => ResetPolicy::DeleteNamespaces,
            Reset::Recreate => ResetPolicy::RecreateCluster,
        })
        .python(kind.python.clone())
        .kind_bin(kind.kind_bin.clone())
        .kubectl_bin(kind.kubectl_bin.clone())
        .helm_bin(kind.helm_bin.clone())
        .default_base_url(kind.llm_base_url.clone())
        .default_api_key_env(Some(kind.llm_api_key_env.clone()).filter(|name| !name.is_empty()))
        .default_model(kind.llm_model.clone())
        .llm_max_concurrency(kind.llm_max_concurrency)
        .llm_requests_per_minute(kind.llm_requests_per_minute)
        .max_context_tokens(kind.max_context_tokens)
        .run_as(kind.run_as.clone())
        .allow_driver_as_root(kind.allow_root_driver)
        .stock_orchestrator(kind.stock_orchestrator)
        .openebs_manifest(kind.openebs_manifest.clone());
    for name in &kind.driver_env {
        builder = builder.driver_env_passthrough(name.clone());
    }
    if let Some(path) = &kind.tiktoken_cache_dir {
        builder = builder.tiktoken_cache_dir(path);
    }
    if let Some(name) = &kind.cluster_name {
        builder = builder.cluster_name(name.clone());
    }
    if let Some(path) = &kind.node_config {
        builder = builder.node_config(path);
    }
    if let Some(path) = &kind.work_dir {
        builder = builder.work_dir(path);
    }
    if let Some(path) = &kind.aiopslab_dir {
        builder = builder.aiopslab_dir(path);
    }
    builder.build()
}
