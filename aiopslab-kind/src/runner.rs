//! The AIOpsLab runner: one driver process per task, from the checks that
//! fail fast (unknown problem, bad `agent_config`) to the report, and the
//! driver's infrastructure mode (OpenEBS and Prometheus, once per cluster).
//!
//! Each run gets its own directory under `<work_dir>/runs/` holding the
//! driver script, `agent.json`, AIOpsLab's `results/` and the driver's
//! stdout/stderr copies; it is also the driver's working directory (AIOpsLab's
//! clients cache LLM replies in `./cache_dir`).
//!
//! The agent's shell runs inside the driver's process tree, so the driver is
//! isolated ([`crate::isolation`]): a cleared environment with an explicit
//! allow-list, no API key at all (it talks to a per-task loopback endpoint of
//! the worker's [`LlmProxy`], which adds the key and records every call),
//! and, when the worker runs as root, an unprivileged user of its own.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use aiopslab_core::{catalog, JsonObject, NewLogEntry, RunContext, RunReport, Task, TaskStatus, TaskType};

use crate::agent::AgentSettings;
use crate::config::KindConfig;
use crate::driver;
use crate::episode::{CleanupFailure, EpisodeInfo, EpisodeRecorder, RunEnd};
use crate::events::{DriverEvent, PROTOCOL_VERSION};
use crate::isolation::{self, DriverUser};
use crate::llm_proxy::{LlmProxy, Secret, Upstream};
use crate::process::{DriverProcess, DriverSpec, EVENTS_FD};
use crate::tools;

/// How long to wait for the rest of the event channel once the driver is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long asking the interpreter for its executable may take.
const PYTHON_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run needs from the prepared backend.
pub struct DriverHost<'a> {
    /// The interpreter (from [`resolve_python`]), or why there is none.
    pub python: Result<&'a Path, &'a str>,
    /// The worker's LLM proxy: each run gets a session of its own.
    pub proxy: &'a LlmProxy,
    /// The user the driver runs as.
    pub user: Option<&'a DriverUser>,
}

/// A finished run: its report, and what failed after the evaluation (a
/// cluster-health event the backend answers with a reset).
pub struct RunOutcome {
    /// What goes to the store.
    pub report: RunReport,
    /// Set when AIOpsLab raised after its evaluation existed.
    pub cleanup_failure: Option<CleanupFailure>,
}

impl From<RunReport> for RunOutcome {
    fn from(report: RunReport) -> Self {
        Self {
            report,
            cleanup_failure: None,
        }
    }
}

/// The task type of `problem_id`: the AIOpsLab catalog first, then the
/// worker's custom problems.
pub fn task_type_of(config: &KindConfig, problem_id: &str) -> Option<TaskType> {
    catalog::find(problem_id)
        .map(|problem| problem.task_type)
        .or_else(|| config.custom_problems.get(problem_id).copied())
}

/// The directory of one run: `<work_dir>/runs/<task id>-<attempt>`.
pub fn run_dir(config: &KindConfig, task: &Task) -> PathBuf {
    config.runs_dir().join(format!("{}-{}", task.id, task.attempt))
}

async fn prepare_run_dir(dir: &Path, agent_json: Option<Vec<u8>>, user: Option<&DriverUser>) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir.join("results")).await?;
    tokio::fs::write(dir.join(driver::DRIVER_FILE_NAME), driver::DRIVER_SOURCE).await?;
    if let Some(agent_json) = agent_json {
        tokio::fs::write(dir.join("agent.json"), agent_json).await?;
    }
    if let Some(user) = user {
        isolation::prepare_for_user(dir, user)?;
    }
    Ok(())
}

/// The interpreter's real executable (`sys.executable`), asked with the
/// worker's own environment: a pyenv shim or a wrapper may not work under
/// the driver's `HOME`, the executable itself (a venv's too) does.
pub async fn resolve_python(config: &KindConfig) -> Result<PathBuf, String> {
    let script = "import sys; print(sys.executable)";
    let output = tools::run(
        config,
        &config.python,
        &["-c".as_ref(), script.as_ref()],
        PYTHON_PROBE_TIMEOUT,
    )
    .await
    .map_err(|err| format!("Python interpreter: {err}"))?;
    let executable = PathBuf::from(output.stdout.lines().last().unwrap_or_default().trim());
    if executable.is_absolute() && executable.is_file() {
        return Ok(executable);
    }
    // Not a normal interpreter answer: use the configured program as it is.
    tools::resolve(config, &config.python).map_err(|err| format!("Python interpreter: {err}"))
}

/// The driver's command line and environment for a run directory.
fn driver_spec(
    config: &KindConfig,
    python: &Path,
    dir: &Path,
    args: Vec<OsString>,
    extra_env: &[(&str, OsString)],
    deny: &[&str],
    user: Option<&DriverUser>,
) -> DriverSpec {
    let mut all_args = vec![dir.join(driver::DRIVER_FILE_NAME).into_os_string()];
    all_args.extend(args);
    all_args.push("--events-fd".into());
    all_args.push(EVENTS_FD.to_string().into());
    DriverSpec {
        python: python.to_path_buf(),
        args: all_args,
        cwd: dir.to_path_buf(),
        env: isolation::driver_environment(config, &config.home_dir(), deny, extra_env),
        user: user.cloned(),
        stdout_log: dir.join("driver.stdout.log"),
        stderr_log: dir.join("driver.stderr.log"),
    }
}

/// When a driver must stop early.
struct Stop<'a> {
    cancel: &'a CancellationToken,
    deadline: Instant,
    timeout_minutes: u32,
    kill_grace: Duration,
}

/// Where a driver's log entries go.
enum LogTarget<'a> {
    /// The task's log.
    Task(&'a RunContext),
    /// The worker's own log (infrastructure mode runs outside any task).
    Worker,
}

impl LogTarget<'_> {
    async fn send(&self, entries: Vec<NewLogEntry>) {
        match self {
            LogTarget::Task(ctx) => {
                for entry in entries {
                    ctx.logs.log(entry).await;
                }
            }
            LogTarget::Worker => {
                for entry in entries {
                    tracing::info!(level = %entry.level, "driver: {}", entry.message);
                }
            }
        }
    }
}

/// Starts the driver and feeds its event lines to `observe` until it exits, or
/// stops its process group at the deadline or on cancel. Returns how it ended.
async fn drive(
    spec: &DriverSpec,
    observe: &mut impl FnMut(&str) -> Vec<NewLogEntry>,
    logs: &LogTarget<'_>,
    stop: Stop<'_>,
) -> Result<RunEnd, std::io::Error> {
    let (mut process, mut events) = DriverProcess::spawn(spec)?;
    tracing::info!(pgid = process.pgid(), run_dir = %spec.cwd.display(), "driver started");
    let mut events_open = true;
    let mut end = loop {
        tokio::select! {
            biased;
            _ = stop.cancel.cancelled() => break RunEnd::Cancelled,
            _ = tokio::time::sleep_until(stop.deadline) => {
                break RunEnd::TimedOut { timeout_minutes: stop.timeout_minutes }
            }
            line = events.recv(), if events_open => match line {
                Some(line) => logs.send(observe(&line)).await,
                None => events_open = false,
            },
            status = process.wait() => {
                let (code, signal) = match status {
                    Ok(status) => (status.code(), status.signal()),
                    Err(err) => {
                        tracing::warn!(%err, "waiting for the driver failed");
                        (None, None)
                    }
                };
                break RunEnd::Exited { code, signal, stderr_tail: String::new() };
            }
        }
    };
    match &end {
        RunEnd::Exited { .. } => {
            // Whatever AIOpsLab left running in the group (workload generators, port-forwards) goes now.
            process.kill_leftovers().await;
        }
        stopped => {
            let why = if matches!(stopped, RunEnd::Cancelled) {
                "the task was cancelled"
            } else {
                "the deadline passed"
            };
            logs.send(vec![NewLogEntry::new(
                aiopslab_core::LogLevel::Warning,
                format!(
                    "{why}: stopping the driver's process group (SIGTERM, SIGKILL after {} s)",
                    stop.kill_grace.as_secs()
                ),
            )])
            .await;
            if let Err(err) = process.terminate(stop.kill_grace).await {
                tracing::warn!(%err, "stopping the driver failed");
            }
        }
    }
    // The events written before the driver ended are still in the pipe.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while events_open {
        match tokio::time::timeout_at(drain_until, events.recv()).await {
            Ok(Some(line)) => logs.send(observe(&line)).await,
            Ok(None) | Err(_) => events_open = false,
        }
    }
    let stderr_tail = process.finish_output(Duration::from_secs(5)).await;
    if let RunEnd::Exited { stderr_tail: tail, .. } = &mut end {
        *tail = stderr_tail;
    }
    Ok(end)
}

/// Runs one task through the driver. Never panics on bad input: every
/// failure becomes a report with a code and a reason.
pub async fn run_task(config: &KindConfig, host: &DriverHost<'_>, task: &Task, ctx: &RunContext) -> RunOutcome {
    let started = Instant::now();
    let Some(task_type) = task_type_of(config, &task.problem_id) else {
        let message = format!(
            "unknown problem id {:?}: it is not one of the {} problems in the AIOpsLab catalog (see /problems) \
             nor a custom problem of this worker",
            task.problem_id,
            catalog::PROBLEMS.len()
        );
        return fail(ctx, "unknown_problem", message).await.into();
    };
    let settings = match AgentSettings::resolve(config, &task.parameters.agent_config) {
        Ok(settings) => settings,
        Err(err) => return fail(ctx, err.code, err.message).await.into(),
    };
    let kubeconfig = config.kubeconfig_path();
    if !kubeconfig.is_file() {
        let message = format!(
            "the worker's kubeconfig {} does not exist: the backend was not prepared",
            kubeconfig.display()
        );
        return fail(ctx, "backend_not_prepared", message).await.into();
    }
    let python = match host.python {
        Ok(python) => python.to_path_buf(),
        Err(err) => {
            let message = format!("cannot start the AIOpsLab driver: {err}");
            return fail(ctx, "driver_start", message).await.into();
        }
    };

    // The key stays here: the driver only learns a loopback URL that dies with the task.
    let session = host.proxy.open_session(
        Upstream {
            base_url: settings.base_url.clone(),
            api_key: settings.api_key(config).map(Secret::new),
            timeout: settings.request_timeout(),
        },
        task.id.to_string(),
    );
    let dir = run_dir(config, task);
    let agent_json = match settings.driver_config(session.base_url()) {
        Ok(json) => json,
        Err(err) => {
            return fail(ctx, "driver_start", format!("cannot write agent.json: {err}"))
                .await
                .into()
        }
    };
    if let Err(err) = prepare_run_dir(&dir, Some(agent_json), host.user).await {
        let message = format!("cannot prepare the run directory {}: {err}", dir.display());
        return fail(ctx, "driver_start", message).await.into();
    }
    let mut args: Vec<OsString> = vec![
        "--problem-id".into(),
        task.problem_id.clone().into(),
        "--max-steps".into(),
        task.parameters.max_steps.to_string().into(),
        "--agent-config".into(),
        dir.join("agent.json").into_os_string(),
        "--results-dir".into(),
        dir.join("results").into_os_string(),
    ];
    if config.stock_orchestrator {
        args.push("--stock-orchestrator".into());
    }
    let extra_env = [
        ("AIOPSLAB_WORKER_ID", OsString::from(&config.worker_id)),
        ("AIOPSLAB_TASK_ID", OsString::from(task.id.to_string())),
    ];
    let deny: Vec<&str> = settings.api_key_env.as_deref().into_iter().collect();
    let spec = driver_spec(config, &python, &dir, args, &extra_env, &deny, host.user);

    let mut recorder = EpisodeRecorder::new(EpisodeInfo {
        task_id: task.id,
        problem_id: task.problem_id.clone(),
        task_type,
        metadata: episode_metadata(config, task, task_type, &settings, ctx),
    });
    let opening = format!(
        "Starting AIOpsLab problem {} ({task_type}) on Kind cluster {} with model {}, max_steps {}, \
         timeout {} min, {} orchestrator",
        task.problem_id,
        config.cluster_name,
        settings.model,
        task.parameters.max_steps,
        task.parameters.timeout_minutes,
        if config.stock_orchestrator {
            "AIOpsLab's stock"
        } else {
            "the warm-cluster"
        },
    );
    recorder.note(opening.clone());
    ctx.logs
        .info(format!("{opening}; run directory {}", dir.display()))
        .await;

    let stop = Stop {
        cancel: &ctx.cancel,
        deadline: ctx.deadline,
        timeout_minutes: task.parameters.timeout_minutes,
        kill_grace: config.kill_grace,
    };
    let mut observe = |line: &str| recorder.apply_line(line);
    let end = match drive(&spec, &mut observe, &LogTarget::Task(ctx), stop).await {
        Ok(end) => end,
        Err(err) => {
            let message = format!("cannot start the AIOpsLab driver ({}): {err}", spec.python.display());
            return fail(ctx, "driver_start", message).await.into();
        }
    };
    // The record of the calls is the worker's own; the session URL stops working here.
    session.close();
    let calls = session.calls();
    let failed = calls.iter().filter(|call| call.to_llm_call().is_none()).count() as u32;
    recorder.set_llm_calls(calls.iter().filter_map(|call| call.to_llm_call()).collect(), failed);
    let cleanup_failure = recorder.cleanup_failure().cloned();
    let report = recorder.finish(end, started.elapsed());
    match &report.error {
        None => {
            ctx.logs
                .info(format!("run completed in {:.1} s", started.elapsed().as_secs_f64()))
                .await
        }
        Some(error) => {
            let status = TaskStatus::from(report.status);
            ctx.logs
                .error(format!("run ended {status}: {}: {}", error.code, error.message))
                .await
        }
    }
    RunOutcome {
        report,
        cleanup_failure,
    }
}

fn episode_metadata(
    config: &KindConfig,
    task: &Task,
    task_type: TaskType,
    settings: &AgentSettings,
    ctx: &RunContext,
) -> JsonObject {
    let mut metadata = JsonObject::new();
    metadata.insert("backend".into(), json!("kind"));
    metadata.insert("cluster".into(), json!(config.cluster_name));
    metadata.insert("worker_id".into(), json!(ctx.worker_id));
    metadata.insert("problem_id".into(), json!(task.problem_id));
    metadata.insert("task_type".into(), json!(task_type.as_str()));
    metadata.insert("attempt".into(), json!(task.attempt));
    metadata.insert("model".into(), json!(settings.model));
    metadata.insert("max_steps".into(), json!(task.parameters.max_steps));
    metadata.insert("max_context_tokens".into(), json!(settings.max_context_tokens));
    metadata.insert(
        "orchestrator".into(),
        json!(if config.stock_orchestrator { "stock" } else { "warm" }),
    );
    metadata.insert("driver_protocol".into(), json!(PROTOCOL_VERSION));
    metadata
}

/// Installs the shared infrastructure (OpenEBS, then Prometheus) with the
/// driver's infrastructure mode, i.e. with AIOpsLab's own classes and charts.
/// Idempotent: what is already there is left alone. Returns what the driver
/// reported, one line per component.
pub async fn install_infra(
    config: &KindConfig,
    python: &Path,
    user: Option<&DriverUser>,
) -> Result<Vec<String>, String> {
    let dir = config.work_dir.join("infra");
    prepare_run_dir(&dir, None, user)
        .await
        .map_err(|err| format!("cannot prepare {}: {err}", dir.display()))?;
    let args = vec![
        "--install-infra".into(),
        "--openebs-manifest".into(),
        OsString::from(&config.openebs_manifest),
    ];
    let extra_env = [("AIOPSLAB_WORKER_ID", OsString::from(&config.worker_id))];
    let spec = driver_spec(config, python, &dir, args, &extra_env, &[], user);
    // Only for its event-to-log-line mapping (hello, log, infra, error): no episode is recorded.
    let mut recorder = EpisodeRecorder::new(EpisodeInfo {
        task_id: aiopslab_core::TaskId::nil(),
        problem_id: "(shared infrastructure)".into(),
        task_type: TaskType::Detection,
        metadata: JsonObject::new(),
    });
    let cancel = CancellationToken::new();
    let stop = Stop {
        cancel: &cancel,
        deadline: Instant::now() + config.infra_timeout,
        timeout_minutes: (config.infra_timeout.as_secs() / 60) as u32,
        kill_grace: config.kill_grace,
    };
    let mut installed = Vec::new();
    let mut failure = None;
    let mut observe = |line: &str| {
        match DriverEvent::parse(line.trim()) {
            Ok(DriverEvent::Infra { component, state, .. }) => installed.push(format!("{component}: {state}")),
            Ok(DriverEvent::Error { code, message, .. }) => failure = Some(format!("{code}: {message}")),
            _ => {}
        }
        recorder.apply_line(line)
    };
    let end = drive(&spec, &mut observe, &LogTarget::Worker, stop).await;
    match (end, failure) {
        (_, Some(message)) => Err(message),
        (Ok(RunEnd::Exited { code: Some(0), .. }), None) => Ok(installed),
        (Ok(RunEnd::TimedOut { .. }), None) => Err(format!(
            "installing the shared infrastructure took longer than {} s",
            config.infra_timeout.as_secs()
        )),
        (
            Ok(RunEnd::Exited {
                code,
                signal,
                stderr_tail,
            }),
            None,
        ) => Err(format!(
            "the driver's infrastructure mode ended without finishing (exit code {code:?}, signal {signal:?}): {}",
            tools::tail(&stderr_tail, 1500)
        )),
        (Ok(RunEnd::Cancelled), None) => Err("installing the shared infrastructure was cancelled".into()),
        (Err(err), None) => Err(format!(
            "cannot start the AIOpsLab driver ({}): {err}",
            python.display()
        )),
    }
}

/// Logs `message` as the run's error and returns the failed report.
async fn fail(ctx: &RunContext, code: &str, message: String) -> RunReport {
    ctx.logs.error(message.clone()).await;
    RunReport::failed(code, message)
}
