//! # aiopslab-kind
//!
//! [`KindBackend`]: the [`ClusterBackend`](aiopslab_core::ClusterBackend) that
//! runs AIOpsLab problems on the worker's own Kind cluster.
//!
//! - **Cluster** ([`KindCli`], [`KubeApi`]): on start the cluster named after
//!   the worker must exist (or is created with `create_cluster`); the worker
//!   writes its own kubeconfig (`kind get kubeconfig`), never switching a
//!   shared context, and waits until every node is Ready (kube-rs). Between
//!   tasks it deletes the namespaces a run leaves behind, or recreates the
//!   cluster ([`ResetPolicy`]); an unhealthy cluster is recreated.
//! - **Runner**: one Python driver per task (`driver/aiopslab_driver.py`,
//!   embedded), in a process group of its own with its own `HOME`,
//!   `KUBECONFIG`, `AIOPSLAB_CLUSTER` and working directory. It registers an
//!   LLM agent (any OpenAI-compatible endpoint), calls `init_problem` and
//!   `start_problem`, and reports JSON events on file descriptor 3, which
//!   become task logs, the [`Trajectory`](aiopslab_core::Trajectory), the
//!   metrics and the solution ([`EpisodeRecorder`]). At the deadline or on
//!   cancel the whole group gets SIGTERM, then SIGKILL after a grace.
//! - **Preflight** ([`preflight`]): checks `kind`, `kubectl`, `helm`, Docker,
//!   the Python interpreter, `import aiopslab` and its `config.yml`, and names
//!   what is missing and how to install it.
//!
//! Nothing here can run Kind or AIOpsLab in CI: the tests drive the real
//! driver and process handling against named fakes (fake `kind`/`kubectl`/
//! `helm` executables, a fake Kubernetes API, a fake `aiopslab` package and a
//! fake OpenAI-compatible server) under `tests/fakes/`.

#![warn(missing_docs)]

mod agent;
mod backend;
mod cluster_check;
mod config;
mod driver;
mod episode;
mod events;
mod isolation;
mod kind_cli;
mod kube_api;
mod llm_proxy;
mod preflight;
mod process;
mod runner;
mod tools;

pub use agent::{AgentConfigError, AgentSettings};
pub use backend::KindBackend;
pub use cluster_check::{
    verified_reset, ClusterBaseline, LeftoverResource, LeftoverRules, Leftovers, ResetOutcome, WebhookConfiguration,
    WebhookKind, DEFAULT_CRD_GROUPS, PROTECTED_NAMESPACES,
};
pub use config::{KindConfig, KindConfigBuilder, ResetPolicy, AIOPSLAB_NAMESPACES, OPENEBS_MANIFEST_URL};
pub use driver::{DRIVER_FILE_NAME, DRIVER_SOURCE};
pub use episode::{EpisodeInfo, EpisodeRecorder, RunEnd};
pub use events::{DriverEvent, PROTOCOL_VERSION};
pub use isolation::{
    apply_isolation, apply_isolation_std, check_driver_user_policy, driver_environment, forbid_inspection, is_withheld,
    prepare_for_user, resolve_user, running_as_root, DriverUser, IsolationError, CREATE_DRIVER_USER,
    DRIVER_ENV_ALLOWED_PREFIX, DRIVER_ENV_ALLOWLIST, WITHHELD_NAMES, WITHHELD_SUFFIXES,
};
pub use kind_cli::KindCli;
pub use kube_api::{KubeApi, KubeError, NamespaceState, NodeReadiness};
pub use llm_proxy::{LlmProxy, ProxyError, ProxyLimits, ProxySession, RecordedCall, Secret, Upstream};
pub use preflight::{preflight, PreflightError, PreflightProblem, PreflightReport, Requirement};
pub use process::{group_alive, EVENTS_FD};
pub use runner::{run_dir, task_type_of};
pub use tools::{which, CommandError, CommandOutput};
