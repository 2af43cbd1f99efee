//! [`preflight`]: checks at worker start that everything a Kind worker needs
//! is there, and names exactly what is missing and how to install it.
//!
//! The AIOpsLab checks run the way the driver will run: with the driver's
//! cleared environment ([`driver_environment`]), as the driver's user
//! ([`KindConfig::run_as`]) when there is one, in a throwaway directory under
//! the work directory whose throwaway `HOME` holds a placeholder
//! `.kube/config` (context `kind-<cluster>`, an unreachable server): the
//! cluster is not prepared yet, and importing AIOpsLab's orchestrator loads
//! `~/.kube/config`.
//!
//! Checked, in this order (every problem is reported, not just the first):
//! the cluster name; `kind`, `kubectl`, `helm` and a container runtime for
//! Kind (Docker or Podman); the node config file when one is given; the
//! driver-user policy (a root worker needs `--run-as` or
//! `--allow-root-driver`; the user must exist); the work directory (the
//! driver's user must be able to write it); the Python interpreter (3.11 or
//! 3.12, runnable by the driver's user); `import aiopslab` (from
//! `aiopslab_dir` or the interpreter's packages; AIOpsLab's `__init__.py` is
//! empty, so this alone proves little); tiktoken's `cl100k_base` data in the
//! cache the driver will use (AIOpsLab downloads it at import otherwise);
//! `from aiopslab.orchestrator import Orchestrator` (all of AIOpsLab's
//! dependencies; skipped, and said so, when the tiktoken data is missing,
//! since it would try to download it); AIOpsLab's `config.yml`
//! (`k8s_host: localhost`); and the `aiopslab-applications` submodule.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::KindConfig;
use crate::isolation::{
    apply_isolation_std, check_driver_user_policy, driver_environment, prepare_for_user, DriverUser,
};
use crate::tools::{child_path, tail, which};

/// How long one tool probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long importing AIOpsLab's orchestrator may take (it imports a lot).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// The prefix of the line a probe script reports on.
const MARKER: &str = "AIOPSLAB_PREFLIGHT ";

/// Where `import aiopslab` finds the package, and what the driver's user sees
/// of the `aiopslab-applications` submodule next to it.
const LOCATE_SCRIPT: &str = r#"
import json, os, traceback
out = {"uid": os.getuid()}
blocked = []
for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if not entry:
        continue
    try:
        os.stat(entry)
    except PermissionError:
        blocked.append(entry)
        continue
    except OSError:
        continue
    if not os.access(entry, os.R_OK | os.X_OK):
        blocked.append(entry)
out["blocked"] = blocked
try:
    import aiopslab
    where = getattr(aiopslab, "__file__", None)
    pkg = os.path.dirname(os.path.abspath(where)) if where else list(aiopslab.__path__)[0]
    out["package"] = pkg
    apps = os.path.join(os.path.dirname(pkg), "aiopslab-applications")
    try:
        if not os.path.exists(apps):
            out["applications_state"] = "missing"
        elif not os.path.isdir(apps):
            out["applications_state"] = "not a directory"
        else:
            out["applications_state"] = "ok" if os.listdir(apps) else "empty"
    except OSError as e:
        out["applications_state"] = "unreadable"
        out["applications_error"] = "%s: %s" % (type(e).__name__, e)
except BaseException as e:
    out["import_error"] = traceback.format_exception_only(type(e), e)[-1].strip()
print("AIOPSLAB_PREFLIGHT " + json.dumps(out))
"#;

/// Whether `import tiktoken` works, and where tiktoken looks for the
/// `cl100k_base` data in this environment, computed the way tiktoken does
/// (`tiktoken/load.py`, `read_file_cached`): `$TIKTOKEN_CACHE_DIR`, else
/// `$DATA_GYM_CACHE_DIR`, else `<tempfile.gettempdir()>/data-gym-cache`; an
/// empty value disables the cache; the file is the sha1 of the blob URL. When
/// the real `tiktoken_ext` is installed its URL and expected sha256 are read
/// from it (so the check follows tiktoken), and a cached file that does not
/// match is reported (tiktoken would delete it and download again).
const TIKTOKEN_SCRIPT: &str = r#"
import hashlib, json, os, re, tempfile
url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
sha256 = None
out = {"uid": os.getuid()}
try:
    import tiktoken
    out["tiktoken"] = getattr(tiktoken, "__file__", None) or "namespace"
except BaseException as e:
    out["import_error"] = "%s: %s" % (type(e).__name__, e)
try:
    import inspect
    import tiktoken_ext.openai_public as public
    source = inspect.getsource(public.cl100k_base)
    found = re.search(r'"(https://[^"]*cl100k_base\.tiktoken)"', source)
    if found:
        url = found.group(1)
        digest = re.search(r'expected_hash\s*=\s*"([0-9a-f]{64})"', source)
        sha256 = digest.group(1) if digest else None
except BaseException:
    pass
if "TIKTOKEN_CACHE_DIR" in os.environ:
    cache_dir, source = os.environ["TIKTOKEN_CACHE_DIR"], "TIKTOKEN_CACHE_DIR"
elif "DATA_GYM_CACHE_DIR" in os.environ:
    cache_dir, source = os.environ["DATA_GYM_CACHE_DIR"], "DATA_GYM_CACHE_DIR"
else:
    cache_dir, source = os.path.join(tempfile.gettempdir(), "data-gym-cache"), "default"
out.update(url=url, cache_dir=cache_dir, source=source)
if cache_dir == "":
    out["state"] = "disabled"
else:
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    out["file"] = path
    if not os.path.exists(path):
        out["state"] = "missing"
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
                out["state"] = "corrupt"
                out["expected_sha256"] = sha256
            else:
                out["state"] = "ok"
        except OSError as e:
            out["state"] = "unreadable"
            out["error"] = "%s: %s" % (type(e).__name__, e)
print("AIOPSLAB_PREFLIGHT " + json.dumps(out))
"#;

/// What the driver imports first; reports the uid it ran as.
const ORCHESTRATOR_SCRIPT: &str = r#"
import json, os
from aiopslab.orchestrator import Orchestrator
print("AIOPSLAB_PREFLIGHT " + json.dumps({"uid": os.getuid(), "orchestrator": Orchestrator.__name__}))
"#;

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
    /// The user the driver (and the agent's shell) runs as.
    DriverUser,
    /// The worker's work directory.
    WorkDir,
    /// The Python interpreter.
    Python,
    /// The `aiopslab` package and its dependencies (`aiopslab.orchestrator` must import).
    Aiopslab,
    /// tiktoken's `cl100k_base` data, which AIOpsLab loads at import.
    TiktokenData,
    /// AIOpsLab's `config.yml`.
    AiopslabConfig,
    /// The `aiopslab-applications` git submodule (the applications' charts and manifests).
    AiopslabApplications,
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
            Requirement::DriverUser => "driver user",
            Requirement::WorkDir => "work dir",
            Requirement::Python => "python",
            Requirement::Aiopslab => "aiopslab",
            Requirement::TiktokenData => "tiktoken data",
            Requirement::AiopslabConfig => "aiopslab config.yml",
            Requirement::AiopslabApplications => "aiopslab-applications",
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

/// What a successful [`preflight`] found: how the driver will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    /// The interpreter's own executable (`sys.executable`), which the driver runs.
    pub python: PathBuf,
    /// The `aiopslab` package directory the driver imports.
    pub aiopslab_package: PathBuf,
    /// The user the driver runs as (`None`: the worker's own user).
    pub driver_user: Option<DriverUser>,
    /// The uid the orchestrator import probe reported running as.
    pub driver_uid: u32,
    /// The cached `cl100k_base` file tiktoken will read.
    pub tiktoken_cache_file: PathBuf,
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
const AIOPSLAB_INSTALL: &str = "clone https://github.com/microsoft/AIOpsLab with `--recurse-submodules` and run \
    `pip install -U pip setuptools wheel && pip install -e .` in it with this interpreter, or pass the checkout as \
    aiopslab_dir (--aiopslab-dir) with its dependencies installed";
const PYTHON_INSTALL: &str = "install Python 3.11 or 3.12 (AIOpsLab requires >=3.11,<3.13) and point the worker at \
    it (python / --python)";

/// Who a probe runs as.
enum Identity<'a> {
    /// The worker itself: its environment plus [`KindConfig::extra_env`] (the tools, resolving the interpreter).
    Worker,
    /// As the driver will run: a cleared environment, the driver's user, the throwaway directory.
    Driver(&'a DriverContext),
}

/// How the driver will run, for the probes.
struct DriverContext {
    user: Option<DriverUser>,
    /// The throwaway working directory; its `home/` is the probes' `HOME`.
    dir: PathBuf,
    env: Vec<(OsString, OsString)>,
    /// Whether `dir` was made here (and must be removed).
    owned: bool,
}

impl DriverContext {
    /// " as user NAME (uid N)" for messages; empty without a user.
    fn as_whom(&self) -> String {
        match &self.user {
            Some(user) => format!(" as the driver user {} (uid {})", user.name, user.uid),
            None => String::new(),
        }
    }
}

impl Drop for DriverContext {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs a probe with a timeout; `Ok` whatever its exit status, `Err` when it
/// could not be started, waited for, or finished in time.
fn run_probe(
    program: &Path,
    args: &[&OsStr],
    config: &KindConfig,
    identity: &Identity<'_>,
    timeout: Duration,
) -> Result<Output, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match identity {
        Identity::Worker => {
            for (key, value) in &config.extra_env {
                command.env(key, value);
            }
        }
        Identity::Driver(driver) => {
            apply_isolation_std(&mut command, &driver.env, driver.user.as_ref());
            command.current_dir(&driver.dir);
        }
    }
    let mut child = command.spawn().map_err(|err| format!("cannot run it: {err}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not answer within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => return Err(err.to_string()),
        }
    }
    child.wait_with_output().map_err(|err| err.to_string())
}

/// [`run_probe`], and an unsuccessful exit is an error too.
fn probe(program: &Path, args: &[&OsStr], config: &KindConfig, identity: &Identity<'_>) -> Result<Output, String> {
    let output = run_probe(program, args, config, identity, PROBE_TIMEOUT)?;
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

/// The JSON a probe script printed after [`MARKER`].
fn marked_json(stdout: &[u8]) -> Option<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(MARKER))
        .and_then(|json| serde_json::from_str(json).ok())
}

/// The last non-empty line of a Python error output: the exception.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().map(str::trim).find(|line| !line.is_empty());
    tail(line.unwrap_or("(no output)"), 400)
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

/// A kubeconfig whose only context is `context`, pointing at a server nobody
/// listens on: enough for the imports, which load it without calling it.
fn placeholder_kubeconfig(context: &str) -> String {
    format!(
        "# Placeholder written by the aiopslab worker's preflight: the cluster is not prepared yet.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {context}\n  cluster:\n    server: https://127.0.0.1:1\n\
         contexts:\n\
         - name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n\
         current-context: {context}\n\
         users:\n\
         - name: {context}\n  user: {{}}\n\
         preferences: {{}}\n"
    )
}

/// A fresh name for a throwaway directory.
fn throwaway_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes the throwaway directory (`<parent>/.preflight-…/` with `home/.kube/config`) for `user`.
fn make_throwaway(parent: &Path, config: &KindConfig, user: Option<&DriverUser>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join(throwaway_name(".preflight"));
    let kube = dir.join("home").join(".kube");
    std::fs::create_dir_all(&kube)?;
    let file = kube.join("config");
    std::fs::write(&file, placeholder_kubeconfig(&config.context_name()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    if let Some(user) = user {
        prepare_for_user(&dir, user)?;
    }
    Ok(dir)
}

/// Whether a Python exception line looks like a failed download.
fn looks_like_network(exception: &str) -> bool {
    [
        "ConnectionError",
        "URLError",
        "MaxRetryError",
        "NameResolutionError",
        "Max retries exceeded",
        "openaipublic",
        "Temporary failure in name resolution",
    ]
    .iter()
    .any(|needle| exception.contains(needle))
}

fn deps_fix(python: &Path, checkout: Option<&Path>) -> String {
    let checkout = checkout.map_or_else(
        || "<your AIOpsLab checkout>".to_string(),
        |dir| dir.display().to_string(),
    );
    format!(
        "install AIOpsLab's dependencies into this interpreter: `pip install -U pip setuptools wheel && pip install \
         -e {checkout}` with its own pip (`{python} -m pip ...`); the bundled pip 23.0 of a fresh Python 3.11 venv \
         fails on the `importlib==1.0.4` sdist, hence the upgrade first",
        python = python.display()
    )
}

fn tiktoken_fix(config: &KindConfig) -> String {
    let dir = config
        .tiktoken_cache_dir
        .as_ref()
        .map_or_else(|| "/opt/tiktoken-cache".to_string(), |dir| dir.display().to_string());
    format!(
        "on a machine with internet run `TIKTOKEN_CACHE_DIR={dir} python -c 'import tiktoken; \
         tiktoken.get_encoding(\"cl100k_base\")'` (with tiktoken installed), copy {dir} to this machine, readable \
         by the driver's user, and give the worker `--tiktoken-cache-dir {dir}` (tiktoken_cache_dir)"
    )
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
        match probe(&found, &args, self.config, &Identity::Worker) {
            Ok(_) => Some(found),
            Err(err) => {
                self.fail(requirement, format!("`{}` does not work: {err}", found.display()), fix);
                None
            }
        }
    }

    /// A tool the driver runs (kubectl, helm) must work as the driver's user too.
    fn driver_tool(&mut self, requirement: Requirement, found: &Path, args: &[&str], driver: &DriverContext) {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        if let Err(err) = probe(found, &args, self.config, &Identity::Driver(driver)) {
            let name = driver
                .user
                .as_ref()
                .map_or("the driver's user", |user| user.name.as_str());
            self.fail(
                requirement,
                format!("`{}` does not work{}: {err}", found.display(), driver.as_whom()),
                format!(
                    "AIOpsLab runs it from the driver: install it where {name} can run it (e.g. /usr/local/bin, \
                     not under /root)"
                ),
            );
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
        if let Err(err) = probe(&runtime, &args, self.config, &Identity::Worker) {
            self.fail(
                Requirement::ContainerRuntime,
                format!("`{} info` cannot reach the container engine: {err}", runtime.display()),
                "start the engine (e.g. `systemctl start docker`) and make sure the worker's user may use it \
                 (e.g. membership of the docker group)",
            );
        }
    }

    /// The driver-user policy; the user the probes run as.
    fn driver_user(&mut self) -> Option<DriverUser> {
        match check_driver_user_policy(self.config) {
            Ok(user) => user,
            Err(err) => {
                self.fail(Requirement::DriverUser, err.problem(), err.fix());
                None
            }
        }
    }

    /// The work directory exists (made here if needed, then handed to the
    /// driver's user) and the driver's user can write it. Returns whether the
    /// probes can run under it.
    fn work_dir(&mut self, user: Option<&DriverUser>) -> bool {
        let work_dir = &self.config.work_dir;
        let existed = work_dir.exists();
        if let Err(err) = std::fs::create_dir_all(work_dir) {
            self.fail(
                Requirement::WorkDir,
                format!("cannot create {}: {err}", work_dir.display()),
                "choose a writable work directory (work_dir / --work-dir)",
            );
            return false;
        }
        let Some(user) = user else {
            let probe_dir = work_dir.join(throwaway_name(".preflight-write"));
            return match std::fs::create_dir(&probe_dir) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&probe_dir);
                    true
                }
                Err(err) => {
                    self.fail(
                        Requirement::WorkDir,
                        format!("cannot write {}: {err}", work_dir.display()),
                        "choose a writable work directory (work_dir / --work-dir)",
                    );
                    false
                }
            };
        };
        if !existed {
            if let Err(err) = std::os::unix::fs::chown(work_dir, Some(user.uid), Some(user.gid)) {
                tracing::warn!(%err, dir = %work_dir.display(), user = %user.name, "cannot hand the work dir to the driver user");
            }
        }
        // As the driver's user, with nothing of the worker's environment.
        let probe_dir = work_dir.join(throwaway_name(".preflight-write"));
        let script = "mkdir \"$1\" && rmdir \"$1\"";
        let env = [(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", script, "sh"])
            .arg(&probe_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir("/");
        apply_isolation_std(&mut command, &env, Some(user));
        let result = command.output();
        let failure = match result {
            Ok(output) if output.status.success() => return true,
            Ok(output) => last_line(&output.stderr),
            Err(err) => format!("cannot run /bin/sh: {err}"),
        };
        let _ = std::fs::remove_dir(&probe_dir);
        self.fail(
            Requirement::WorkDir,
            format!(
                "the driver user {} (uid {}) cannot write {}: {failure}",
                user.name,
                user.uid,
                work_dir.display()
            ),
            format!(
                "give {name} the work directory (`chown -R {name} {dir}`) and make every directory above it \
                 searchable by {name} (a work dir under /root is not); or choose another (work_dir / --work-dir), \
                 e.g. /var/lib/aiopslab/{worker}",
                name = user.name,
                dir = work_dir.display(),
                worker = self.config.worker_id
            ),
        );
        false
    }

    /// Makes the throwaway directory the probes run in.
    fn driver_context(&mut self, user: Option<DriverUser>, under_work_dir: bool) -> Option<DriverContext> {
        let parents = under_work_dir
            .then(|| self.config.work_dir.clone())
            .into_iter()
            .chain(std::iter::once(std::env::temp_dir()));
        let mut last_error = None;
        for parent in parents {
            match make_throwaway(&parent, self.config, user.as_ref()) {
                Ok(dir) => {
                    let env = driver_environment(self.config, &dir.join("home"), &[], &[]);
                    return Some(DriverContext {
                        user,
                        dir,
                        env,
                        owned: true,
                    });
                }
                Err(err) => last_error = Some(format!("{}: {err}", parent.display())),
            }
        }
        self.fail(
            Requirement::WorkDir,
            format!(
                "cannot make a throwaway directory for the AIOpsLab checks ({})",
                last_error.unwrap_or_default()
            ),
            "choose a writable work directory (work_dir / --work-dir)",
        );
        None
    }

    /// The interpreter's own executable, resolved with the worker's
    /// environment (as the runner does), and its version as the driver runs it.
    fn python(&mut self, driver: &DriverContext) -> Option<PathBuf> {
        let path = child_path(self.config);
        let Some(found) = which(&self.config.python, &path) else {
            let problem = format!(
                "interpreter `{}` not found on PATH ({})",
                self.config.python.display(),
                path.to_string_lossy()
            );
            self.fail(Requirement::Python, problem, PYTHON_INSTALL);
            return None;
        };
        let script = "import sys; print(sys.executable)";
        let python = match probe(
            &found,
            &["-c".as_ref(), script.as_ref()],
            self.config,
            &Identity::Worker,
        ) {
            Ok(output) => {
                let stdout = String::from_utf8_lossy(&output.stdout);
                let executable = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
                if executable.is_absolute() && executable.is_file() {
                    executable
                } else {
                    found.clone()
                }
            }
            Err(err) => {
                self.fail(
                    Requirement::Python,
                    format!("`{}` does not work: {err}", found.display()),
                    PYTHON_INSTALL,
                );
                return None;
            }
        };
        let script = "import sys; print('%d.%d' % sys.version_info[:2])";
        let output = match probe(
            &python,
            &["-c".as_ref(), script.as_ref()],
            self.config,
            &Identity::Driver(driver),
        ) {
            Ok(output) => output,
            Err(err) => {
                let fix = match &driver.user {
                    Some(user) => format!(
                        "install the interpreter (and its venv) where {name} can read and run it (every directory \
                         above it searchable by {name}: not under /root), or choose another (python / --python)",
                        name = user.name
                    ),
                    None => PYTHON_INSTALL.to_string(),
                };
                self.fail(
                    Requirement::Python,
                    format!(
                        "`{}` does not work{} with the driver's environment: {err}",
                        python.display(),
                        driver.as_whom()
                    ),
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
                    PYTHON_INSTALL,
                );
                None
            }
        }
    }

    /// Where `PYTHONPATH` comes from, for messages.
    fn python_path_note(&self) -> String {
        match &self.config.aiopslab_dir {
            Some(dir) => format!(" (PYTHONPATH starts with {})", dir.display()),
            None => String::new(),
        }
    }

    /// A fix for an error seen as the driver's user that looks like a permission problem.
    fn permission_fix(driver: &DriverContext, stderr: &str, checkout: Option<&Path>) -> Option<String> {
        let user = driver.user.as_ref()?;
        if !(stderr.contains("Permission denied") || stderr.contains("PermissionError")) {
            return None;
        }
        let checkout = checkout.map_or_else(|| "the AIOpsLab checkout".to_string(), |dir| dir.display().to_string());
        Some(format!(
            "let {name} read {checkout} and the interpreter with its packages (every directory above them \
             searchable by {name}: not under /root), e.g. `chmod -R a+rX {checkout}`",
            name = user.name
        ))
    }

    /// `import aiopslab` as the driver: the package directory and what the
    /// probe saw of `aiopslab-applications`.
    fn aiopslab(&mut self, python: &Path, driver: &DriverContext) -> Option<Value> {
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
        let args = ["-c".as_ref(), LOCATE_SCRIPT.as_ref()];
        let result = run_probe(python, &args, self.config, &Identity::Driver(driver), PROBE_TIMEOUT);
        let (failure, blocked) = match result {
            Ok(output) => match marked_json(&output.stdout) {
                Some(found) if found["package"].is_string() => return Some(found),
                Some(found) => {
                    let blocked: Vec<String> = found["blocked"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|entry| entry.as_str().map(str::to_string))
                        .collect();
                    (
                        found["import_error"].as_str().unwrap_or("no answer").to_string(),
                        blocked,
                    )
                }
                None => (last_line(&output.stderr), Vec::new()),
            },
            Err(err) => (err, Vec::new()),
        };
        let fix = match &driver.user {
            Some(user) if !blocked.is_empty() => format!(
                "let {name} read {blocked} (and search every directory above: not under /root), e.g. \
                 `chmod -R a+rX {blocked}`",
                name = user.name,
                blocked = blocked.join(" ")
            ),
            _ => AIOPSLAB_INSTALL.to_string(),
        };
        let unreadable = if blocked.is_empty() {
            String::new()
        } else {
            format!(" ({} cannot be read)", blocked.join(", "))
        };
        self.fail(
            Requirement::Aiopslab,
            format!(
                "`{} -c 'import aiopslab'` failed{}{}{unreadable}: {failure}",
                python.display(),
                driver.as_whom(),
                self.python_path_note()
            ),
            fix,
        );
        None
    }

    /// tiktoken and its `cl100k_base` data, as the driver sees them. Returns
    /// whether the orchestrator may be imported (tiktoken imports and the
    /// data is cached), and the cached file.
    fn tiktoken(
        &mut self,
        python: &Path,
        driver: &DriverContext,
        located: bool,
        checkout: Option<&Path>,
    ) -> (bool, Option<PathBuf>) {
        let args = ["-c".as_ref(), TIKTOKEN_SCRIPT.as_ref()];
        let found = match run_probe(python, &args, self.config, &Identity::Driver(driver), PROBE_TIMEOUT) {
            Ok(output) => match marked_json(&output.stdout) {
                Some(found) => found,
                None => {
                    self.fail(
                        Requirement::TiktokenData,
                        format!(
                            "the check of tiktoken's cache could not run{}: {}",
                            driver.as_whom(),
                            last_line(&output.stderr)
                        ),
                        tiktoken_fix(self.config),
                    );
                    return (false, None);
                }
            },
            Err(err) => {
                self.fail(
                    Requirement::TiktokenData,
                    format!("the check of tiktoken's cache could not run{}: {err}", driver.as_whom()),
                    tiktoken_fix(self.config),
                );
                return (false, None);
            }
        };
        let text = |key: &str| found[key].as_str().unwrap_or_default().to_string();
        let imported = found.get("import_error").is_none();
        if !imported && located {
            self.fail(
                Requirement::Aiopslab,
                format!(
                    "`import tiktoken` failed{}{}: {}; tiktoken is one of AIOpsLab's dependencies, so they are not \
                     installed in this interpreter (the orchestrator import was not checked)",
                    driver.as_whom(),
                    self.python_path_note(),
                    text("import_error")
                ),
                deps_fix(python, checkout),
            );
        }
        let file = PathBuf::from(text("file"));
        let not_checked = if imported && located {
            "; the orchestrator import was not checked (it would try to download the data)"
        } else {
            ""
        };
        let whence = match text("source").as_str() {
            "default" => "tiktoken's default, as neither TIKTOKEN_CACHE_DIR nor DATA_GYM_CACHE_DIR is set".to_string(),
            source => format!("from {source}"),
        };
        let download = "importing AIOpsLab downloads it from openaipublic.blob.core.windows.net, and a worker \
                        without internet then fails every task";
        let state = text("state");
        let problem = match state.as_str() {
            "ok" => return (imported, Some(file)),
            "disabled" => {
                format!("TIKTOKEN_CACHE_DIR is empty, which disables tiktoken's cache: {download}{not_checked}")
            }
            "missing" => format!(
                "tiktoken's cl100k_base data is not cached at {} (cache dir {}, {whence}): {download}{not_checked}",
                file.display(),
                text("cache_dir")
            ),
            "corrupt" => format!(
                "the cached cl100k_base data {} does not have tiktoken's sha256 {}: tiktoken deletes it and \
                 downloads it again ({download}){not_checked}",
                file.display(),
                text("expected_sha256")
            ),
            "unreadable" => {
                let name = driver
                    .user
                    .as_ref()
                    .map_or("the worker's user", |user| user.name.as_str());
                self.fail(
                    Requirement::TiktokenData,
                    format!(
                        "the cached cl100k_base data {} cannot be read{}: {}{not_checked}",
                        file.display(),
                        driver.as_whom(),
                        text("error")
                    ),
                    format!(
                        "make it readable by {name} (`chmod a+r {}` and a+x on the directories above it)",
                        file.display()
                    ),
                );
                return (false, None);
            }
            other => format!("the check of tiktoken's cache gave an unexpected answer {other:?}"),
        };
        self.fail(Requirement::TiktokenData, problem, tiktoken_fix(self.config));
        (false, None)
    }

    /// `from aiopslab.orchestrator import Orchestrator` as the driver; the uid it ran as.
    fn orchestrator(
        &mut self,
        python: &Path,
        driver: &DriverContext,
        checkout: Option<&Path>,
        tiktoken_file: Option<&Path>,
    ) -> Option<u32> {
        let args = ["-c".as_ref(), ORCHESTRATOR_SCRIPT.as_ref()];
        let result = run_probe(python, &args, self.config, &Identity::Driver(driver), IMPORT_TIMEOUT);
        let (failure, fix) = match result {
            Ok(output) if output.status.success() => {
                match marked_json(&output.stdout).and_then(|found| found["uid"].as_u64()) {
                    Some(uid) => return u32::try_from(uid).ok(),
                    None => (
                        format!(
                            "it printed no answer: {}",
                            tail(&String::from_utf8_lossy(&output.stdout), 300)
                        ),
                        deps_fix(python, checkout),
                    ),
                }
            }
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                let exception = last_line(&output.stderr);
                let fix = match Self::permission_fix(driver, &stderr, checkout) {
                    Some(fix) => fix,
                    None if looks_like_network(&exception) => format!(
                        "the import tried to reach the network: this worker may have none, and AIOpsLab must import \
                         without it; if it is tiktoken's data, the installed tiktoken reads another file than {} \
                         (compare its `tiktoken/load.py`), else {}",
                        tiktoken_file.map_or_else(|| "the cached one".to_string(), |file| file.display().to_string()),
                        deps_fix(python, checkout)
                    ),
                    None => deps_fix(python, checkout),
                };
                (exception, fix)
            }
            Err(err) => (err, deps_fix(python, checkout)),
        };
        self.fail(
            Requirement::Aiopslab,
            format!(
                "`from aiopslab.orchestrator import Orchestrator` failed{}{}: {failure}",
                driver.as_whom(),
                self.python_path_note()
            ),
            fix,
        );
        None
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

    /// The `aiopslab-applications` submodule next to the package: `state` as
    /// the driver's probe saw it (`ok`, `missing`, `empty`, `not a directory`,
    /// `unreadable`), or checked here when the probe could not run.
    fn applications(&mut self, package_dir: &Path, seen: Option<(&str, &str)>, driver: Option<&DriverContext>) {
        let Some(checkout) = package_dir.parent() else {
            return;
        };
        let apps = checkout.join("aiopslab-applications");
        let (state, error) = match seen {
            Some((state, error)) => (state.to_string(), error.to_string()),
            None => match std::fs::read_dir(&apps) {
                Ok(mut entries) => (
                    if entries.next().is_some() { "ok" } else { "empty" }.to_string(),
                    String::new(),
                ),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => ("missing".to_string(), String::new()),
                Err(err) => ("unreadable".to_string(), err.to_string()),
            },
        };
        let submodule_fix = {
            let mut fix = format!(
                "`git -C {} submodule update --init --recursive` (or clone AIOpsLab with `--recurse-submodules`)",
                checkout.display()
            );
            if package_dir.components().any(|part| part.as_os_str() == "site-packages") {
                fix.push_str(
                    "; a package installed without `-e` has no submodule: install it editable from a checkout \
                     (`pip install -e <checkout>`) or pass the checkout as aiopslab_dir (--aiopslab-dir)",
                );
            }
            fix
        };
        let what = "AIOpsLab deploys the applications from the charts and manifests of this git submodule";
        match state.as_str() {
            "ok" => {}
            "unreadable" => {
                let whom = driver.map(DriverContext::as_whom).unwrap_or_default();
                let name = driver
                    .and_then(|driver| driver.user.as_ref())
                    .map_or("the driver's user", |user| user.name.as_str());
                self.fail(
                    Requirement::AiopslabApplications,
                    format!("{} cannot be read{whom}: {error}", apps.display()),
                    format!("let {name} read it (`chmod -R a+rX {}`)", apps.display()),
                );
            }
            "empty" => self.fail(
                Requirement::AiopslabApplications,
                format!(
                    "{} is empty (a clone without `--recurse-submodules`): {what}",
                    apps.display()
                ),
                submodule_fix,
            ),
            other => self.fail(
                Requirement::AiopslabApplications,
                format!("{} is {other}: {what}", apps.display()),
                submodule_fix,
            ),
        }
    }
}

/// Checks that this machine can run the worker; the error lists every
/// missing piece with how to install or fix it. Blocking (it runs a few
/// short probe commands, and imports AIOpsLab as the driver would); call it
/// once at worker start. It creates the work directory (handed to the
/// driver's user when it makes it) and removes the throwaway directory it
/// probes in.
pub fn preflight(config: &KindConfig) -> Result<PreflightReport, PreflightError> {
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
    let kubectl = checks.tool(
        Requirement::Kubectl,
        &config.kubectl_bin,
        &["version", "--client"],
        KUBECTL_INSTALL,
    );
    let helm = checks.tool(
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
    let user = checks.driver_user();
    let work_dir_usable = checks.work_dir(user.as_ref());
    let mut report = None;
    if let Some(driver) = checks.driver_context(user.clone(), work_dir_usable) {
        // AIOpsLab runs kubectl and helm from the driver, so its user must be able to run them too.
        if driver.user.is_some() {
            let tools = [
                (Requirement::Kubectl, kubectl, ["version", "--client"]),
                (Requirement::Helm, helm, ["version", "--short"]),
            ];
            for (requirement, found, args) in tools {
                if let Some(found) = found {
                    checks.driver_tool(requirement, &found, &args, &driver);
                }
            }
        }
        report = aiopslab_checks(&mut checks, &driver);
    }
    match report {
        Some(report) if checks.problems.is_empty() => Ok(report),
        _ => {
            if checks.problems.is_empty() {
                // Cannot happen (every check that gives no answer reports why); never claim success without one.
                checks.fail(
                    Requirement::Aiopslab,
                    "the AIOpsLab checks gave no answer",
                    "run the worker with RUST_LOG=debug and report the output",
                );
            }
            Err(PreflightError {
                problems: checks.problems,
            })
        }
    }
}

/// The Python and AIOpsLab checks, as the driver runs; the report when they all pass.
fn aiopslab_checks(checks: &mut Checks<'_>, driver: &DriverContext) -> Option<PreflightReport> {
    let config = checks.config;
    let python = checks.python(driver);
    let located = python.as_ref().and_then(|python| checks.aiopslab(python, driver));
    let package_dir = located
        .as_ref()
        .and_then(|found| found["package"].as_str().map(PathBuf::from))
        .or_else(|| {
            let dir = config.aiopslab_dir.as_ref()?.join("aiopslab");
            dir.is_dir().then_some(dir)
        });
    let checkout = package_dir
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .or_else(|| config.aiopslab_dir.clone());
    let mut uid = None;
    let mut tiktoken_file = None;
    if let Some(python) = &python {
        let (importable, file) = checks.tiktoken(python, driver, located.is_some(), checkout.as_deref());
        tiktoken_file = file;
        if importable && located.is_some() {
            uid = checks.orchestrator(python, driver, checkout.as_deref(), tiktoken_file.as_deref());
        }
    }
    if let Some(package_dir) = &package_dir {
        checks.aiopslab_config(package_dir);
        let seen = located.as_ref().map(|found| {
            (
                found["applications_state"].as_str().unwrap_or("missing"),
                found["applications_error"].as_str().unwrap_or_default(),
            )
        });
        checks.applications(package_dir, seen, located.as_ref().map(|_| driver));
    }
    Some(PreflightReport {
        python: python?,
        aiopslab_package: package_dir?,
        driver_user: driver.user.clone(),
        driver_uid: uid?,
        tiktoken_cache_file: tiktoken_file?,
    })
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

    #[test]
    fn probe_answers_are_found_after_the_marker() {
        let stdout = b"noise\nAIOPSLAB_PREFLIGHT {\"uid\": 7}\nmore noise\n";
        assert_eq!(marked_json(stdout).unwrap()["uid"], 7);
        assert_eq!(marked_json(b"{\"uid\": 7}"), None);
        assert_eq!(
            last_line(b"Traceback:\n  File x\nModuleNotFoundError: No module named 'k'\n\n"),
            "ModuleNotFoundError: No module named 'k'"
        );
    }

    #[test]
    fn the_placeholder_kubeconfig_names_the_kind_context() {
        let text = placeholder_kubeconfig("kind-w1");
        assert!(text.contains("current-context: kind-w1\n"), "{text}");
        assert!(text.contains("server: https://127.0.0.1:1\n"), "{text}");
        assert!(
            text.contains("- name: kind-w1\n  context:\n    cluster: kind-w1\n    user: kind-w1\n"),
            "{text}"
        );
    }
}
