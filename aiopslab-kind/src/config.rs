//! [`KindConfig`]: everything a [`KindBackend`](crate::KindBackend) needs to
//! know, with defaults that match the quickstart (one Kind cluster per
//! worker, named after the worker), and a clap-free [`KindConfigBuilder`].
//!
//! The fields are public so a program can fill them from its own flags; the
//! builder is the convenient way when only a few differ from the defaults.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aiopslab_core::TaskType;

/// The namespaces AIOpsLab uses: the three applications, the observability
/// stack, the storage provisioner and Chaos Mesh (fixed names: one cluster
/// runs one problem at a time). The reset does not rely on this list: it
/// removes whatever is not in the cluster's baseline.
pub const AIOPSLAB_NAMESPACES: [&str; 6] = [
    "test-hotel-reservation",
    "test-social-network",
    "astronomy-shop",
    "observe",
    "openebs",
    "chaos-mesh",
];

/// How the cluster is brought back to a clean state between tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResetPolicy {
    /// The verified reset: delete what a run leaves behind (every namespace
    /// not in the cluster's baseline, Chaos Mesh experiments, released
    /// volumes), wait until it is really gone and check again. Keeps the warm
    /// cluster, its images and the shared infrastructure.
    #[default]
    DeleteNamespaces,
    /// Delete the Kind cluster and create it again: slow (minutes) but leaves
    /// nothing behind.
    RecreateCluster,
}

/// Settings of a [`KindBackend`](crate::KindBackend). Build one with
/// [`KindConfig::new`] or [`KindConfig::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct KindConfig {
    /// The worker this backend serves; used in logs and trajectories.
    pub worker_id: String,
    /// The Kind cluster to use; defaults to the worker id (the quickstart names
    /// both `worker-001-kind`). Its kubectl context is `kind-<cluster_name>`.
    pub cluster_name: String,
    /// Create the cluster on start when it does not exist (otherwise the
    /// worker refuses to start and says how to create it).
    pub create_cluster: bool,
    /// A Kind node config (`kind create cluster --config`), e.g. AIOpsLab's `kind/kind-config-x86.yaml`.
    pub node_config: Option<PathBuf>,
    /// Where this worker keeps its files: its `HOME` (with the kubeconfig) and one
    /// directory per run (driver, agent settings, AIOpsLab results, driver output).
    pub work_dir: PathBuf,
    /// Where the worker's own kubeconfig is written (as `config`); defaults to
    /// `<work_dir>/home/.kube`. The driver's `HOME` is always `<work_dir>/home`,
    /// whose `.kube/config` gets the same content. A shared kubeconfig is never touched.
    pub kubeconfig_dir: Option<PathBuf>,
    /// Reset between tasks.
    pub reset_policy: ResetPolicy,
    /// Recreate the cluster when it is unreachable or its nodes are not Ready.
    pub recreate_when_unhealthy: bool,
    /// Delete the cluster when the worker shuts down.
    pub delete_on_shutdown: bool,
    /// The AIOpsLab checkout (the directory holding the `aiopslab` package); put
    /// on the driver's `PYTHONPATH`. `None` when it is installed in the interpreter (`pip install -e .`).
    pub aiopslab_dir: Option<PathBuf>,
    /// The Python interpreter that runs the driver (AIOpsLab needs 3.11 or 3.12).
    pub python: PathBuf,
    /// The `kind` executable (a name looked up on `PATH`, or a path).
    pub kind_bin: PathBuf,
    /// The `kubectl` executable AIOpsLab shells out to.
    pub kubectl_bin: PathBuf,
    /// The `helm` executable AIOpsLab shells out to.
    pub helm_bin: PathBuf,
    /// How long a run gets between SIGTERM and SIGKILL when it is stopped.
    pub kill_grace: Duration,
    /// How many times the agent retries a failed LLM endpoint call before the
    /// task fails as an infrastructure failure.
    pub endpoint_retries: u32,
    /// The pause before the first retry (doubled for each further one).
    pub endpoint_retry_delay: Duration,
    /// The timeout of one LLM endpoint call (an `agent_config.request_timeout` overrides it).
    pub endpoint_timeout: Duration,
    /// The OpenAI-compatible endpoint used when `agent_config.base_url` is absent.
    pub default_base_url: String,
    /// The environment variable holding the API key when `agent_config.api_key_env`
    /// is absent. When it is not set, calls go without an `Authorization` header.
    pub default_api_key_env: Option<String>,
    /// The model used when `agent_config.model` is absent (`None`: the task must name one).
    pub default_model: Option<String>,
    /// The name the agent is registered under in AIOpsLab (`register_agent(agent, name=...)`).
    pub agent_name: String,
    /// How long to wait for every node to be Ready.
    pub node_ready_timeout: Duration,
    /// How long to wait for reset namespaces to disappear.
    pub namespace_delete_timeout: Duration,
    /// How often readiness and deletion are polled.
    pub poll_interval: Duration,
    /// Environment added to every process this backend starts (the `kind` CLI and
    /// the driver); e.g. `PATH`, proxies. Also where [`KindConfig::child_env`]
    /// looks first, so an LLM key may be set here for the worker's proxy: names
    /// that look like secrets never reach the driver (see [`crate::isolation`]).
    pub extra_env: Vec<(String, String)>,
    /// Problem ids outside the AIOpsLab catalog that this worker's AIOpsLab
    /// checkout knows (custom problems), with their task type.
    pub custom_problems: BTreeMap<String, TaskType>,
    /// The unprivileged user the driver (and so the agent's shell) runs as.
    /// Needed when the worker runs as root: a root agent could read every
    /// secret of the machine, `/proc/<worker>/environ` included.
    pub run_as: Option<String>,
    /// Let the driver run as root when `run_as` is not set. Off by default:
    /// the agent's shell then has root on the worker host.
    pub allow_driver_as_root: bool,
    /// Extra variable names the driver may inherit from the worker's
    /// environment, besides the built-in allow-list (secrets are refused
    /// whatever this says).
    pub driver_env_passthrough: Vec<String>,
    /// tiktoken's cache (`TIKTOKEN_CACHE_DIR` of the driver): AIOpsLab loads
    /// `cl100k_base` at import and downloads it when it is not cached there.
    /// `None`: the worker's own `TIKTOKEN_CACHE_DIR`, if any.
    pub tiktoken_cache_dir: Option<PathBuf>,
    /// Run AIOpsLab's own `init_problem`/`start_problem`, which install
    /// OpenEBS and Prometheus on every task and remove them after it.
    /// Off by default: the worker installs them once per cluster and the
    /// driver runs each problem without touching them.
    pub stock_orchestrator: bool,
    /// The OpenEBS operator manifest the shared infrastructure is installed
    /// from (a URL or a file; AIOpsLab's own is the URL below).
    pub openebs_manifest: String,
    /// How long installing the shared infrastructure may take.
    pub infra_timeout: Duration,
    /// The agent's context budget in tokens: older turns are dropped (the
    /// system prompt is kept) beyond it. AIOpsLab's reference client trims at 120k.
    pub max_context_tokens: u64,
    /// Where the per-task LLM proxy listens (loopback; port 0 picks one).
    pub llm_proxy_addr: std::net::SocketAddr,
    /// At most this many LLM calls in flight per upstream endpoint (`None`: no limit).
    pub llm_max_concurrency: Option<usize>,
    /// At most this many LLM calls started per minute per upstream endpoint (`None`: no limit).
    pub llm_requests_per_minute: Option<u32>,
    /// API groups whose custom resources left after a run are leftovers
    /// (Chaos Mesh experiments by default).
    pub leftover_crd_groups: Vec<String>,
}

/// The OpenEBS operator manifest AIOpsLab's `init_problem` applies.
pub const OPENEBS_MANIFEST_URL: &str = "https://openebs.github.io/charts/openebs-operator.yaml";

impl KindConfig {
    /// The defaults for worker `worker_id`: cluster named after it, reset by
    /// deleting namespaces, work dir `./aiopslab-work/<worker_id>`, `python3`.
    pub fn new(worker_id: impl Into<String>) -> Self {
        let worker_id = worker_id.into();
        let work_dir = absolute(Path::new("aiopslab-work").join(&worker_id));
        Self {
            cluster_name: worker_id.clone(),
            worker_id,
            create_cluster: false,
            node_config: None,
            work_dir,
            kubeconfig_dir: None,
            reset_policy: ResetPolicy::DeleteNamespaces,
            recreate_when_unhealthy: true,
            delete_on_shutdown: false,
            aiopslab_dir: None,
            python: PathBuf::from("python3"),
            kind_bin: PathBuf::from("kind"),
            kubectl_bin: PathBuf::from("kubectl"),
            helm_bin: PathBuf::from("helm"),
            kill_grace: Duration::from_secs(10),
            endpoint_retries: 3,
            endpoint_retry_delay: Duration::from_secs(2),
            endpoint_timeout: Duration::from_secs(120),
            default_base_url: "https://api.openai.com/v1".to_string(),
            default_api_key_env: Some("OPENAI_API_KEY".to_string()),
            default_model: None,
            agent_name: "aiopslab-worker-agent".to_string(),
            node_ready_timeout: Duration::from_secs(300),
            namespace_delete_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            extra_env: Vec::new(),
            custom_problems: BTreeMap::new(),
            run_as: None,
            allow_driver_as_root: false,
            driver_env_passthrough: Vec::new(),
            tiktoken_cache_dir: None,
            stock_orchestrator: false,
            openebs_manifest: OPENEBS_MANIFEST_URL.to_string(),
            infra_timeout: Duration::from_secs(20 * 60),
            max_context_tokens: 120_000,
            llm_proxy_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            llm_max_concurrency: None,
            llm_requests_per_minute: None,
            leftover_crd_groups: vec!["chaos-mesh.org".to_string()],
        }
    }

    /// A builder starting from [`KindConfig::new`].
    pub fn builder(worker_id: impl Into<String>) -> KindConfigBuilder {
        KindConfigBuilder {
            config: KindConfig::new(worker_id),
        }
    }

    /// The kubectl context Kind gives the cluster: `kind-<cluster_name>`.
    pub fn context_name(&self) -> String {
        format!("kind-{}", self.cluster_name)
    }

    /// The `HOME` the driver runs with: `<work_dir>/home`.
    pub fn home_dir(&self) -> PathBuf {
        self.work_dir.join("home")
    }

    /// The worker's own kubeconfig file: `<kubeconfig_dir>/config`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        match &self.kubeconfig_dir {
            Some(dir) => dir.join("config"),
            None => self.home_dir().join(".kube").join("config"),
        }
    }

    /// The node config `kind create cluster` gets: [`KindConfig::node_config`],
    /// else AIOpsLab's own (`<aiopslab_dir>/kind/kind-config-x86.yaml`, or
    /// `-arm` on arm64: one control plane and one worker node from its custom
    /// image, `/run/udev` mounted for OpenEBS) when the checkout has it.
    pub fn effective_node_config(&self) -> Option<PathBuf> {
        if let Some(path) = &self.node_config {
            return Some(path.clone());
        }
        let arch = if std::env::consts::ARCH == "aarch64" {
            "arm"
        } else {
            "x86"
        };
        let file = self
            .aiopslab_dir
            .as_ref()?
            .join("kind")
            .join(format!("kind-config-{arch}.yaml"));
        file.is_file().then_some(file)
    }

    /// Where per-run directories go: `<work_dir>/runs`.
    pub fn runs_dir(&self) -> PathBuf {
        self.work_dir.join("runs")
    }

    /// The value of `name` in the environment child processes get:
    /// [`KindConfig::extra_env`] first, then this process's environment.
    pub fn child_env(&self, name: &str) -> Option<OsString> {
        self.extra_env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| OsString::from(value))
            .or_else(|| std::env::var_os(name))
    }
}

/// Makes a path absolute against the current directory (the driver runs in
/// its own working directory, so relative paths would point elsewhere).
pub(crate) fn absolute(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    }
}

/// Builds a [`KindConfig`] step by step, without any CLI library.
///
/// ```
/// use aiopslab_kind::{KindConfig, ResetPolicy};
/// let config = KindConfig::builder("worker-001-kind")
///     .create_cluster(true)
///     .aiopslab_dir("/opt/AIOpsLab")
///     .reset_policy(ResetPolicy::DeleteNamespaces)
///     .build();
/// assert_eq!(config.cluster_name, "worker-001-kind");
/// assert_eq!(config.context_name(), "kind-worker-001-kind");
/// ```
#[derive(Debug, Clone)]
pub struct KindConfigBuilder {
    config: KindConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl KindConfigBuilder {
    /// Sets [`KindConfig::cluster_name`].
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.config.cluster_name = name.into();
        self
    }

    setter!(
        /// Sets [`KindConfig::create_cluster`].
        create_cluster: bool
    );
    setter!(
        /// Sets [`KindConfig::reset_policy`].
        reset_policy: ResetPolicy
    );
    setter!(
        /// Sets [`KindConfig::recreate_when_unhealthy`].
        recreate_when_unhealthy: bool
    );
    setter!(
        /// Sets [`KindConfig::delete_on_shutdown`].
        delete_on_shutdown: bool
    );
    setter!(
        /// Sets [`KindConfig::kill_grace`].
        kill_grace: Duration
    );
    setter!(
        /// Sets [`KindConfig::endpoint_retries`].
        endpoint_retries: u32
    );
    setter!(
        /// Sets [`KindConfig::endpoint_retry_delay`].
        endpoint_retry_delay: Duration
    );
    setter!(
        /// Sets [`KindConfig::endpoint_timeout`].
        endpoint_timeout: Duration
    );
    setter!(
        /// Sets [`KindConfig::node_ready_timeout`].
        node_ready_timeout: Duration
    );
    setter!(
        /// Sets [`KindConfig::namespace_delete_timeout`].
        namespace_delete_timeout: Duration
    );
    setter!(
        /// Sets [`KindConfig::poll_interval`].
        poll_interval: Duration
    );
    setter!(
        /// Sets [`KindConfig::allow_driver_as_root`].
        allow_driver_as_root: bool
    );
    setter!(
        /// Sets [`KindConfig::stock_orchestrator`].
        stock_orchestrator: bool
    );
    setter!(
        /// Sets [`KindConfig::infra_timeout`].
        infra_timeout: Duration
    );
    setter!(
        /// Sets [`KindConfig::max_context_tokens`].
        max_context_tokens: u64
    );
    setter!(
        /// Sets [`KindConfig::llm_max_concurrency`].
        llm_max_concurrency: Option<usize>
    );
    setter!(
        /// Sets [`KindConfig::llm_requests_per_minute`].
        llm_requests_per_minute: Option<u32>
    );

    /// Sets [`KindConfig::run_as`].
    pub fn run_as(mut self, user: Option<String>) -> Self {
        self.config.run_as = user;
        self
    }

    /// Adds a name to [`KindConfig::driver_env_passthrough`].
    pub fn driver_env_passthrough(mut self, name: impl Into<String>) -> Self {
        self.config.driver_env_passthrough.push(name.into());
        self
    }

    /// Sets [`KindConfig::tiktoken_cache_dir`] (made absolute).
    pub fn tiktoken_cache_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.config.tiktoken_cache_dir = Some(absolute(path));
        self
    }

    /// Sets [`KindConfig::openebs_manifest`].
    pub fn openebs_manifest(mut self, manifest: impl Into<String>) -> Self {
        self.config.openebs_manifest = manifest.into();
        self
    }

    /// Sets [`KindConfig::llm_proxy_addr`].
    pub fn llm_proxy_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.llm_proxy_addr = addr;
        self
    }

    /// Replaces [`KindConfig::leftover_crd_groups`].
    pub fn leftover_crd_groups<I, S>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.leftover_crd_groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`KindConfig::node_config`].
    pub fn node_config(mut self, path: impl AsRef<Path>) -> Self {
        self.config.node_config = Some(absolute(path));
        self
    }

    /// Sets [`KindConfig::work_dir`] (made absolute).
    pub fn work_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.config.work_dir = absolute(path);
        self
    }

    /// Sets [`KindConfig::kubeconfig_dir`] (made absolute).
    pub fn kubeconfig_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.config.kubeconfig_dir = Some(absolute(path));
        self
    }

    /// Sets [`KindConfig::aiopslab_dir`] (made absolute).
    pub fn aiopslab_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.config.aiopslab_dir = Some(absolute(path));
        self
    }

    /// Sets [`KindConfig::python`].
    pub fn python(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.python = path.into();
        self
    }

    /// Sets [`KindConfig::kind_bin`].
    pub fn kind_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.kind_bin = path.into();
        self
    }

    /// Sets [`KindConfig::kubectl_bin`].
    pub fn kubectl_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.kubectl_bin = path.into();
        self
    }

    /// Sets [`KindConfig::helm_bin`].
    pub fn helm_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.helm_bin = path.into();
        self
    }

    /// Sets [`KindConfig::default_base_url`].
    pub fn default_base_url(mut self, url: impl Into<String>) -> Self {
        self.config.default_base_url = url.into();
        self
    }

    /// Sets [`KindConfig::default_api_key_env`].
    pub fn default_api_key_env(mut self, name: Option<String>) -> Self {
        self.config.default_api_key_env = name;
        self
    }

    /// Sets [`KindConfig::default_model`].
    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.config.default_model = model;
        self
    }

    /// Sets [`KindConfig::agent_name`].
    pub fn agent_name(mut self, name: impl Into<String>) -> Self {
        self.config.agent_name = name.into();
        self
    }

    /// Adds one variable to [`KindConfig::extra_env`].
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.extra_env.push((name.into(), value.into()));
        self
    }

    /// Adds a custom problem id with its task type ([`KindConfig::custom_problems`]).
    pub fn custom_problem(mut self, problem_id: impl Into<String>, task_type: TaskType) -> Self {
        self.config.custom_problems.insert(problem_id.into(), task_type);
        self
    }

    /// The finished configuration.
    pub fn build(self) -> KindConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_quickstart() {
        let config = KindConfig::new("worker-001-kind");
        assert_eq!(config.cluster_name, "worker-001-kind");
        assert_eq!(config.context_name(), "kind-worker-001-kind");
        assert_eq!(config.reset_policy, ResetPolicy::DeleteNamespaces);
        assert_eq!(config.leftover_crd_groups, ["chaos-mesh.org"]);
        assert!(!config.allow_driver_as_root && !config.stock_orchestrator);
        assert!(config.work_dir.is_absolute());
        assert!(config.kubeconfig_path().ends_with("home/.kube/config"));
        assert!(!config.create_cluster);
    }

    #[test]
    fn builder_sets_fields_and_env_overrides() {
        let config = KindConfig::builder("w1")
            .cluster_name("c1")
            .kubeconfig_dir("/tmp/kc")
            .env("PATH", "/fake")
            .env("PATH", "/fake2")
            .custom_problem("my-problem", TaskType::Detection)
            .build();
        assert_eq!(config.kubeconfig_path(), PathBuf::from("/tmp/kc/config"));
        assert_eq!(config.child_env("PATH"), Some(OsString::from("/fake2")));
        assert_eq!(config.custom_problems.get("my-problem"), Some(&TaskType::Detection));
    }
}
