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
mod config;
mod driver;
mod episode;
mod events;
mod kind_cli;
mod kube_api;
mod preflight;
mod process;
mod runner;
mod tools;

pub use agent::{AgentConfigError, AgentSettings};
pub use backend::KindBackend;
pub use config::{KindConfig, KindConfigBuilder, ResetPolicy, AIOPSLAB_NAMESPACES};
pub use driver::{DRIVER_FILE_NAME, DRIVER_SOURCE};
pub use episode::{EpisodeInfo, EpisodeRecorder, RunEnd};
pub use events::{DriverEvent, PROTOCOL_VERSION};
pub use kind_cli::KindCli;
pub use kube_api::{KubeApi, KubeError, NodeReadiness};
pub use preflight::{preflight, PreflightError, PreflightProblem, Requirement};
pub use process::{group_alive, EVENTS_FD};
pub use runner::{run_dir, task_type_of};
pub use tools::{which, CommandError, CommandOutput};
