//! The `kind` command line: list, create and delete clusters, and fetch a
//! cluster's kubeconfig.
//!
//! Every call passes `--kubeconfig <the worker's own file>` where Kind would
//! otherwise edit `$KUBECONFIG` or `~/.kube/config`, so workers sharing a
//! host never touch each other's (or the user's) kubeconfig.

use std::ffi::OsStr;
use std::time::Duration;

use crate::config::KindConfig;
use crate::tools::{self, CommandError};

/// How long `kind create cluster` may take (image pulls on a cold host).
const CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long `kind delete cluster` may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the quick queries may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `kind` CLI, as configured.
#[derive(Debug, Clone, Copy)]
pub struct KindCli<'a> {
    config: &'a KindConfig,
}

impl<'a> KindCli<'a> {
    /// The CLI for this configuration.
    pub fn new(config: &'a KindConfig) -> Self {
        Self { config }
    }

    async fn kind(&self, args: &[&OsStr], timeout: Duration) -> Result<tools::CommandOutput, CommandError> {
        tools::run(self.config, &self.config.kind_bin, args, timeout).await
    }

    /// `kind get clusters`: the names of the clusters on this host.
    pub async fn clusters(&self) -> Result<Vec<String>, CommandError> {
        let output = self.kind(&["get".as_ref(), "clusters".as_ref()], QUERY_TIMEOUT).await?;
        Ok(output
            .stdout
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Whether the configured cluster exists.
    pub async fn exists(&self) -> Result<bool, CommandError> {
        Ok(self
            .clusters()
            .await?
            .iter()
            .any(|name| name == &self.config.cluster_name))
    }

    /// `kind create cluster --name <cluster> [--config <node config>] --kubeconfig <own file>`
    /// (the node config is [`KindConfig::effective_node_config`]).
    pub async fn create(&self) -> Result<(), CommandError> {
        let kubeconfig = self.config.kubeconfig_path();
        let mut args: Vec<&OsStr> = vec![
            "create".as_ref(),
            "cluster".as_ref(),
            "--name".as_ref(),
            self.config.cluster_name.as_ref(),
        ];
        let node_config = self.config.effective_node_config();
        if let Some(node_config) = &node_config {
            args.push("--config".as_ref());
            args.push(node_config.as_os_str());
        }
        args.push("--kubeconfig".as_ref());
        args.push(kubeconfig.as_os_str());
        self.kind(&args, CREATE_TIMEOUT).await.map(drop)
    }

    /// `kind delete cluster --name <cluster> --kubeconfig <own file>`.
    pub async fn delete(&self) -> Result<(), CommandError> {
        let kubeconfig = self.config.kubeconfig_path();
        let args: [&OsStr; 6] = [
            "delete".as_ref(),
            "cluster".as_ref(),
            "--name".as_ref(),
            self.config.cluster_name.as_ref(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
        ];
        self.kind(&args, DELETE_TIMEOUT).await.map(drop)
    }

    /// `kind get kubeconfig --name <cluster>`: the cluster's kubeconfig (YAML).
    pub async fn kubeconfig(&self) -> Result<String, CommandError> {
        let args: [&OsStr; 4] = [
            "get".as_ref(),
            "kubeconfig".as_ref(),
            "--name".as_ref(),
            self.config.cluster_name.as_ref(),
        ];
        Ok(self.kind(&args, QUERY_TIMEOUT).await?.stdout)
    }
}
