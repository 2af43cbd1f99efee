//! The Kubernetes API calls the backend makes with kube-rs: node readiness,
//! namespace listing and deletion (and, in [`crate::cluster_check`], the
//! verified reset between runs).
//!
//! The client is built from the worker's own kubeconfig file and the
//! cluster's context (`kind-<cluster>`), never from a shared kubeconfig or
//! its current context, so tests can point it at a fake API server simply
//! by writing a kubeconfig that names one.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A failed Kubernetes API call or client setup.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or has no usable context.
    #[error("kubeconfig {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The API server refused or could not be reached. The message carries
    /// the whole cause chain (kube-rs's own `Display` stops at "client error
    /// (Connect)" and hides the TLS or connection reason beneath it).
    #[error("Kubernetes API: {}", error_chain(.0))]
    Api(#[from] kube::Error),
    /// Nodes did not become Ready in time.
    #[error("nodes not Ready after {seconds:.1} s: {state}")]
    NodesNotReady {
        /// How long was waited.
        seconds: f64,
        /// The last readiness seen.
        state: String,
    },
    /// Namespaces were still there after the deadline.
    #[error("namespaces still present after {seconds:.1} s: {namespaces:?}")]
    NamespacesRemain {
        /// How long was waited.
        seconds: f64,
        /// The ones left.
        namespaces: Vec<String>,
    },
    /// The verified reset found leftovers of a run that cleaning could not
    /// remove, or shared infrastructure of the baseline is gone: the cluster
    /// is not fit for the next run (recreate it).
    #[error("cluster not clean after the reset: {}", .remaining.summary())]
    LeftoversRemain {
        /// What the last check still found.
        remaining: Box<crate::cluster_check::Leftovers>,
    },
}

/// `err` and every distinct message of its `source()` chain, joined by ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// A namespace as [`KubeApi::namespaces`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceState {
    /// Its name.
    pub name: String,
    /// Whether it is being deleted (`deletionTimestamp` set / phase `Terminating`).
    pub terminating: bool,
}

/// How many of the cluster's nodes are Ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReadiness {
    /// Every node's name.
    pub nodes: Vec<String>,
    /// The names of those whose `Ready` condition is `True`.
    pub ready: Vec<String>,
}

impl NodeReadiness {
    /// At least one node, and all of them Ready.
    pub fn all_ready(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.len() == self.ready.len()
    }
}

impl std::fmt::Display for NodeReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} nodes Ready", self.ready.len(), self.nodes.len())
    }
}

/// A kube-rs client for one Kind cluster.
#[derive(Clone)]
pub struct KubeApi {
    client: kube::Client,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").finish_non_exhaustive()
    }
}

impl KubeApi {
    /// A client for `context` of the kubeconfig at `path`.
    pub async fn from_kubeconfig(path: &Path, context: &str) -> Result<Self, KubeError> {
        let config_error = |message: String| KubeError::Config {
            path: path.display().to_string(),
            message,
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|err| config_error(err.to_string()))?;
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..KubeConfigOptions::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|err| config_error(err.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        config.write_timeout = Some(Duration::from_secs(60));
        let client = kube::Client::try_from(config)?;
        Ok(Self { client })
    }

    /// The kube-rs client (for calls this type has no method for).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Every namespace, with whether it is being deleted.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceState>, KubeError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let list = namespaces.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .map(|namespace| NamespaceState {
                terminating: namespace.metadata.deletion_timestamp.is_some()
                    || namespace.status.as_ref().and_then(|status| status.phase.as_deref()) == Some("Terminating"),
                name: namespace.metadata.name.unwrap_or_default(),
            })
            .collect())
    }

    /// Lists the nodes and their `Ready` condition.
    pub async fn node_readiness(&self) -> Result<NodeReadiness, KubeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list(&ListParams::default()).await?;
        let mut readiness = NodeReadiness::default();
        for node in list.items {
            let name = node.metadata.name.clone().unwrap_or_default();
            let ready = node
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
                });
            if ready {
                readiness.ready.push(name.clone());
            }
            readiness.nodes.push(name);
        }
        Ok(readiness)
    }

    /// Polls until every node is Ready, for at most `timeout`.
    pub async fn wait_nodes_ready(&self, timeout: Duration, poll: Duration) -> Result<NodeReadiness, KubeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = match self.node_readiness().await {
                Ok(readiness) if readiness.all_ready() => return Ok(readiness),
                Ok(readiness) => readiness.to_string(),
                Err(err) => err.to_string(),
            };
            if tokio::time::Instant::now() + poll > deadline {
                return Err(KubeError::NodesNotReady {
                    seconds: timeout.as_secs_f64(),
                    state,
                });
            }
            tracing::debug!(%state, "waiting for nodes to be Ready");
            tokio::time::sleep(poll).await;
        }
    }

    /// Whether namespace `name` exists (in any phase, including Terminating).
    pub async fn namespace_exists(&self, name: &str) -> Result<bool, KubeError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        Ok(namespaces.get_opt(name).await?.is_some())
    }

    /// Asks to delete namespace `name`; `false` when it did not exist.
    pub async fn delete_namespace(&self, name: &str) -> Result<bool, KubeError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.code == 404 => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes every namespace in `names` that exists and waits until all are
    /// gone, for at most `timeout`. Returns the ones that existed.
    pub async fn delete_namespaces_and_wait(
        &self,
        names: &[String],
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<String>, KubeError> {
        let mut deleted = Vec::new();
        for name in names {
            if self.delete_namespace(name).await? {
                deleted.push(name.clone());
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut remaining = deleted.clone();
        loop {
            let mut still = Vec::new();
            for name in &remaining {
                if self.namespace_exists(name).await? {
                    still.push(name.clone());
                }
            }
            if still.is_empty() {
                return Ok(deleted);
            }
            if tokio::time::Instant::now() + poll > deadline {
                return Err(KubeError::NamespacesRemain {
                    seconds: timeout.as_secs_f64(),
                    namespaces: still,
                });
            }
            tracing::debug!(namespaces = ?still, "waiting for namespaces to disappear");
            remaining = still;
            tokio::time::sleep(poll).await;
        }
    }
}
