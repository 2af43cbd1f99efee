//! [`preflight`]: checks at worker start that everything a Kind worker needs
//! is there, and names exactly what is missing and how to install it.
//!
//! Checked: the cluster name, `kind`, `kubectl`, `helm`, a container runtime
//! for Kind (Docker or Podman), the node config file when one is given, the
//! Python interpreter (AIOpsLab needs 3.11 or 3.12), that `aiopslab` imports
//! (from `aiopslab_dir` or the interpreter's packages), and that its
//! `config.yml` says `k8s_host: localhost`. Every problem is reported, not
//! just the first.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::config::KindConfig;
use crate::tools::{child_path, tail, which};

/// How long one probe command may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`PreflightProblem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The cluster name Kind will accept.
    ClusterName,
    /// The `kind` CLI.
    Kind,
    /// The `kubectl` CLI.
    Kubectl,
    /// The `helm` CLI.
    Helm,
    /// Docker or Podman, which Kind runs its nodes in.
    ContainerRuntime,
    /// The Kind node config file.
    NodeConfig,
    /// The Python interpreter.
    Python,
    /// The `aiopslab` package.
    Aiopslab,
    /// AIOpsLab's `config.yml`.
    AiopslabConfig,
    /// The worker's work directory.
    WorkDir,
}

impl Requirement {
    /// A short name (`kind`, `python`, `aiopslab config.yml`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::ClusterName => "cluster name",
            Requirement::Kind => "kind",
            Requirement::Kubectl => "kubectl",
            Requirement::Helm => "helm",
            Requirement::ContainerRuntime => "docker",
            Requirement::NodeConfig => "kind node config",
            Requirement::Python => "python",
            Requirement::Aiopslab => "aiopslab",
            Requirement::AiopslabConfig => "aiopslab config.yml",
            Requirement::WorkDir => "work dir",
        }
    }
}

/// One thing that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightProblem {
    /// What it is about.
    pub requirement: Requirement,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// Everything [`preflight`] found missing; its message lists each problem with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightError {
    /// The problems, in check order.
    pub problems: Vec<PreflightProblem>,
}

impl PreflightError {
    /// Whether a problem concerns `requirement`.
    pub fn concerns(&self, requirement: Requirement) -> bool {
        self.problems.iter().any(|p| p.requirement == requirement)
    }
}

impl std::error::Error for PreflightError {}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.problems.iter().map(|p| p.requirement.as_str()).collect();
        writeln!(
            f,
            "this machine cannot run AIOpsLab problems on Kind yet; missing or wrong: {}",
            names.join(", ")
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {}: {}", problem.requirement.as_str(), problem.problem)?;
            writeln!(f, "    fix: {}", problem.fix)?;
        }
        Ok(())
    }
}

const KIND_INSTALL: &str = "install Kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation), e.g. \
    `curl -Lo /usr/local/bin/kind https://kind.sigs.k8s.io/dl/v0.27.0/kind-linux-amd64 && chmod +x /usr/local/bin/kind` \
    or `go install sigs.k8s.io/kind@v0.27.0`; or give its path (kind_bin / --kind)";
const KUBECTL_INSTALL: &str = "install kubectl (https://kubernetes.io/docs/tasks/tools/), e.g. \
    `curl -LO https://dl.k8s.io/release/v1.32.0/bin/linux/amd64/kubectl && install kubectl /usr/local/bin/`; \
    AIOpsLab shells out to it";
const HELM_INSTALL: &str = "install Helm 3 (https://helm.sh/docs/intro/install/), e.g. \
    `curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash`; AIOpsLab deploys \
    Prometheus and OpenEBS with it";
const RUNTIME_INSTALL: &str = "Kind runs its nodes as containers: install Docker \
    (https://docs.docker.com/engine/install/) and start it, or Podman with KIND_EXPERIMENTAL_PROVIDER=podman";
const AIOPSLAB_INSTALL: &str = "clone https://github.com/microsoft/AIOpsLab and run `pip install -e .` in it \
    with this interpreter, or pass the checkout as aiopslab_dir (--aiopslab-dir) with its dependencies installed";

/// Runs a probe with the child environment and a timeout.
fn probe(program: &Path, args: &[&OsStr], config: &KindConfig, python_path: Option<&OsStr>) -> Result<Output, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in &config.extra_env {
        command.env(key, value);
    }
    if let Some(python_path) = python_path {
        command.env("PYTHONPATH", python_path);
    }
    let mut child = command.spawn().map_err(|err| format!("cannot run it: {err}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not answer within {} s", PROBE_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(err.to_string()),
        }
    }
    let output = child.wait_with_output().map_err(|err| err.to_string())?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "exited with {}: {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 600)
        ))
    }
}

fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// The value of a top-level `key:` in a flat YAML file (quotes and comments stripped).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.trim_start().strip_prefix(':')?;
        let value = rest.split('#').next().unwrap_or_default().trim();
        Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

struct Checks<'a> {
    config: &'a KindConfig,
    problems: Vec<PreflightProblem>,
}

impl Checks<'_> {
    fn fail(&mut self, requirement: Requirement, problem: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(PreflightProblem {
            requirement,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Finds a tool and runs it once; returns its path when it works.
    fn tool(&mut self, requirement: Requirement, program: &Path, args: &[&str], fix: &str) -> Option<PathBuf> {
        let path = child_path(self.config);
        let Some(found) = which(program, &path) else {
            let problem = format!("`{}` not found on PATH ({})", program.display(), path.to_string_lossy());
            self.fail(requirement, problem, fix);
            return None;
        };
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        match probe(&found, &args, self.config, None) {
            Ok(_) => Some(found),
            Err(err) => {
                self.fail(requirement, format!("`{}` does not work: {err}", found.display()), fix);
                None
            }
        }
    }

    /// Docker (or Podman) must be installed and its engine must answer: Kind's nodes are containers.
    fn container_runtime(&mut self) {
        let path = child_path(self.config);
        let runtime = which(Path::new("docker"), &path).or_else(|| which(Path::new("podman"), &path));
        let Some(runtime) = runtime else {
            let problem = format!(
                "neither `docker` nor `podman` found on PATH ({})",
                path.to_string_lossy()
            );
            self.fail(Requirement::ContainerRuntime, problem, RUNTIME_INSTALL);
            return;
        };
        let args: [&OsStr; 3] = ["info".as_ref(), "--format".as_ref(), "{{.ServerVersion}}".as_ref()];
        if let Err(err) = probe(&runtime, &args, self.config, None) {
            self.fail(
                Requirement::ContainerRuntime,
                format!("`{} info` cannot reach the container engine: {err}", runtime.display()),
                "start the engine (e.g. `systemctl start docker`) and make sure the worker's user may use it \
                 (e.g. membership of the docker group)",
            );
        }
    }

    fn python_path(&self) -> Option<std::ffi::OsString> {
        let mut parts: Vec<PathBuf> = self.config.aiopslab_dir.iter().cloned().collect();
        if let Some(existing) = self.config.child_env("PYTHONPATH") {
            parts.extend(std::env::split_paths(&existing));
        }
        if parts.is_empty() {
            None
        } else {
            std::env::join_paths(parts).ok()
        }
    }

    fn python(&mut self) -> Option<PathBuf> {
        let fix = "install Python 3.11 or 3.12 (AIOpsLab requires >=3.11,<3.13) and point the worker at it \
                   (python / --python)";
        let path = child_path(self.config);
        let Some(python) = which(&self.config.python, &path) else {
            let problem = format!(
                "interpreter `{}` not found on PATH ({})",
                self.config.python.display(),
                path.to_string_lossy()
            );
            self.fail(Requirement::Python, problem, fix);
            return None;
        };
        let script = "import sys; print('%d.%d' % sys.version_info[:2])";
        let output = match probe(&python, &["-c".as_ref(), script.as_ref()], self.config, None) {
            Ok(output) => output,
            Err(err) => {
                self.fail(
                    Requirement::Python,
                    format!("`{}` does not work: {err}", python.display()),
                    fix,
                );
                return None;
            }
        };
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let parsed: Option<(u32, u32)> = version
            .split_once('.')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
        match parsed {
            Some((3, minor)) if (11..13).contains(&minor) => Some(python),
            _ => {
                self.fail(
                    Requirement::Python,
                    format!(
                        "`{}` is Python {version}, AIOpsLab needs >=3.11,<3.13",
                        python.display()
                    ),
                    fix,
                );
                None
            }
        }
    }

    /// Imports `aiopslab`; returns the package directory.
    fn aiopslab(&mut self, python: &Path) -> Option<PathBuf> {
        if let Some(dir) = &self.config.aiopslab_dir {
            if !dir.join("aiopslab").is_dir() {
                self.fail(
                    Requirement::Aiopslab,
                    format!("aiopslab_dir {} has no `aiopslab` package directory", dir.display()),
                    "point aiopslab_dir (--aiopslab-dir) at the root of an AIOpsLab checkout (the directory holding \
                     pyproject.toml and aiopslab/)",
                );
                return None;
            }
        }
        let script = "import os, aiopslab; print(os.path.dirname(os.path.abspath(aiopslab.__file__)))";
        let python_path = self.python_path();
        match probe(
            python,
            &["-c".as_ref(), script.as_ref()],
            self.config,
            python_path.as_deref(),
        ) {
            Ok(output) => {
                let stdout = String::from_utf8_lossy(&output.stdout);
                stdout.lines().last().map(|line| PathBuf::from(line.trim()))
            }
            Err(err) => {
                let from = match &self.config.aiopslab_dir {
                    Some(dir) => format!(" (PYTHONPATH starts with {})", dir.display()),
                    None => String::new(),
                };
                self.fail(
                    Requirement::Aiopslab,
                    format!("`{} -c 'import aiopslab'` failed{from}: {err}", python.display()),
                    AIOPSLAB_INSTALL,
                );
                None
            }
        }
    }

    fn aiopslab_config(&mut self, package_dir: &Path) {
        let file = package_dir.join("config.yml");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(_) => {
                self.fail(
                    Requirement::AiopslabConfig,
                    format!("{} does not exist", file.display()),
                    format!(
                        "cp {dir}/config.yml.example {dir}/config.yml and set `k8s_host: localhost`",
                        dir = package_dir.display()
                    ),
                );
                return;
            }
        };
        match yaml_value(&text, "k8s_host") {
            Some(host) if host == "localhost" => {}
            Some(host) => self.fail(
                Requirement::AiopslabConfig,
                format!(
                    "{} says `k8s_host: {host}`; with `kind` AIOpsLab runs shell actions in the container of the \
                     cluster named `kind` only, with another host over SSH",
                    file.display()
                ),
                format!(
                    "set `k8s_host: localhost` in {} so each worker uses its own cluster",
                    file.display()
                ),
            ),
            None => self.fail(
                Requirement::AiopslabConfig,
                format!("{} has no `k8s_host` key", file.display()),
                format!("add `k8s_host: localhost` to {}", file.display()),
            ),
        }
    }
}

/// Checks that this machine can run the worker; the error lists every
/// missing piece with how to install or fix it. Blocking (it runs a few
/// short probe commands); call it once at worker start.
pub fn preflight(config: &KindConfig) -> Result<(), PreflightError> {
    let mut checks = Checks {
        config,
        problems: Vec::new(),
    };
    if !valid_cluster_name(&config.cluster_name) {
        checks.fail(
            Requirement::ClusterName,
            format!(
                "{:?} is not a valid Kind cluster name (lowercase letters, digits, `-` and `.`, at most 50)",
                config.cluster_name
            ),
            "choose a worker id or cluster name such as worker-001-kind",
        );
    }
    checks.tool(Requirement::Kind, &config.kind_bin, &["version"], KIND_INSTALL);
    checks.tool(
        Requirement::Kubectl,
        &config.kubectl_bin,
        &["version", "--client"],
        KUBECTL_INSTALL,
    );
    checks.tool(
        Requirement::Helm,
        &config.helm_bin,
        &["version", "--short"],
        HELM_INSTALL,
    );
    checks.container_runtime();
    if let Some(node_config) = &config.node_config {
        if !node_config.is_file() {
            checks.fail(
                Requirement::NodeConfig,
                format!("{} does not exist", node_config.display()),
                "give an existing Kind config, e.g. AIOpsLab's kind/kind-config-x86.yaml",
            );
        }
    }
    if let Some(python) = checks.python() {
        if let Some(package_dir) = checks.aiopslab(&python) {
            checks.aiopslab_config(&package_dir);
        }
    }
    if let Err(err) = std::fs::create_dir_all(&config.work_dir) {
        checks.fail(
            Requirement::WorkDir,
            format!("cannot create {}: {err}", config.work_dir.display()),
            "choose a writable work directory (work_dir / --work-dir)",
        );
    }
    if checks.problems.is_empty() {
        Ok(())
    } else {
        Err(PreflightError {
            problems: checks.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_kind_rules() {
        assert!(valid_cluster_name("worker-001-kind"));
        assert!(!valid_cluster_name("Worker_1"));
        assert!(!valid_cluster_name(""));
        assert!(!valid_cluster_name("-x"));
    }

    #[test]
    fn reads_flat_yaml_values() {
        let text = "k8s_user: me\nk8s_host: localhost # the local cluster\nqualitative_eval: false\n";
        assert_eq!(yaml_value(text, "k8s_host").as_deref(), Some("localhost"));
        assert_eq!(yaml_value("k8s_host: \"kind\"", "k8s_host").as_deref(), Some("kind"));
        assert_eq!(yaml_value("other: 1", "k8s_host"), None);
    }
}
