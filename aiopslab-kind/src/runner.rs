//! The AIOpsLab runner: one driver process per task, from the checks that
//! fail fast (unknown problem, bad `agent_config`) to the report.
//!
//! Each run gets its own directory under `<work_dir>/runs/` holding the
//! driver script, `agent.json`, AIOpsLab's `results/` and the driver's
//! stdout/stderr copies; it is also the driver's working directory (AIOpsLab's
//! clients cache LLM replies in `./cache_dir`). The driver's environment
//! isolates it from other workers: its own `HOME` (with `.kube/config`),
//! `KUBECONFIG`, `AIOPSLAB_CLUSTER`, and `PYTHONPATH` starting with the
//! AIOpsLab checkout.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use aiopslab_core::{catalog, JsonObject, RunContext, RunReport, Task, TaskStatus, TaskType};

use crate::agent::AgentSettings;
use crate::config::KindConfig;
use crate::driver;
use crate::episode::{EpisodeInfo, EpisodeRecorder, RunEnd};
use crate::events::PROTOCOL_VERSION;
use crate::process::{DriverProcess, DriverSpec, EVENTS_FD};
use crate::tools;

/// How long to wait for the rest of the event channel once the driver is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long asking the interpreter for its executable may take.
const PYTHON_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

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

fn driver_env(config: &KindConfig, task: &Task) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = config
        .extra_env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    let mut python_path = Vec::new();
    if let Some(dir) = &config.aiopslab_dir {
        python_path.push(dir.clone());
    }
    if let Some(existing) = config.child_env("PYTHONPATH") {
        python_path.extend(std::env::split_paths(&existing));
    }
    let set = |env: &mut Vec<(OsString, OsString)>, key: &str, value: OsString| env.push((key.into(), value));
    if !python_path.is_empty() {
        if let Ok(joined) = std::env::join_paths(python_path) {
            set(&mut env, "PYTHONPATH", joined);
        }
    }
    set(&mut env, "HOME", config.home_dir().into_os_string());
    set(&mut env, "KUBECONFIG", config.kubeconfig_path().into_os_string());
    set(&mut env, "AIOPSLAB_CLUSTER", config.cluster_name.clone().into());
    set(&mut env, "PYTHONUNBUFFERED", "1".into());
    set(&mut env, "AIOPSLAB_WORKER_ID", config.worker_id.clone().into());
    set(&mut env, "AIOPSLAB_TASK_ID", task.id.to_string().into());
    env
}

async fn prepare_run_dir(dir: &Path, settings: &AgentSettings) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir.join("results")).await?;
    tokio::fs::write(dir.join(driver::DRIVER_FILE_NAME), driver::DRIVER_SOURCE).await?;
    let agent = serde_json::to_vec_pretty(settings).map_err(std::io::Error::other)?;
    tokio::fs::write(dir.join("agent.json"), agent).await?;
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

/// Runs one task through the driver with interpreter `python` (from
/// [`resolve_python`]). Never panics on bad input: every failure becomes a
/// report with a code and a reason.
pub async fn run_task(config: &KindConfig, python: Result<&Path, &str>, task: &Task, ctx: &RunContext) -> RunReport {
    let started = Instant::now();
    let Some(task_type) = task_type_of(config, &task.problem_id) else {
        let message = format!(
            "unknown problem id {:?}: it is not one of the {} problems in the AIOpsLab catalog (see /problems) \
             nor a custom problem of this worker",
            task.problem_id,
            catalog::PROBLEMS.len()
        );
        return fail(ctx, "unknown_problem", message).await;
    };
    let settings = match AgentSettings::resolve(config, &task.parameters.agent_config) {
        Ok(settings) => settings,
        Err(err) => return fail(ctx, err.code, err.message).await,
    };
    let kubeconfig = config.kubeconfig_path();
    if !kubeconfig.is_file() {
        let message = format!(
            "the worker's kubeconfig {} does not exist: the backend was not prepared",
            kubeconfig.display()
        );
        return fail(ctx, "backend_not_prepared", message).await;
    }
    let python = match python {
        Ok(python) => python.to_path_buf(),
        Err(err) => return fail(ctx, "driver_start", format!("cannot start the AIOpsLab driver: {err}")).await,
    };
    let dir = run_dir(config, task);
    if let Err(err) = prepare_run_dir(&dir, &settings).await {
        let message = format!("cannot prepare the run directory {}: {err}", dir.display());
        return fail(ctx, "driver_start", message).await;
    }

    let spec = DriverSpec {
        python,
        args: vec![
            dir.join(driver::DRIVER_FILE_NAME).into_os_string(),
            "--problem-id".into(),
            task.problem_id.clone().into(),
            "--max-steps".into(),
            task.parameters.max_steps.to_string().into(),
            "--agent-config".into(),
            dir.join("agent.json").into_os_string(),
            "--results-dir".into(),
            dir.join("results").into_os_string(),
            "--events-fd".into(),
            EVENTS_FD.to_string().into(),
        ],
        cwd: dir.clone(),
        env: driver_env(config, task),
        stdout_log: dir.join("driver.stdout.log"),
        stderr_log: dir.join("driver.stderr.log"),
    };
    let mut metadata = JsonObject::new();
    metadata.insert("backend".into(), json!("kind"));
    metadata.insert("cluster".into(), json!(config.cluster_name));
    metadata.insert("worker_id".into(), json!(ctx.worker_id));
    metadata.insert("problem_id".into(), json!(task.problem_id));
    metadata.insert("task_type".into(), json!(task_type.as_str()));
    metadata.insert("attempt".into(), json!(task.attempt));
    metadata.insert("model".into(), json!(settings.model));
    metadata.insert("max_steps".into(), json!(task.parameters.max_steps));
    metadata.insert("driver_protocol".into(), json!(PROTOCOL_VERSION));
    let mut recorder = EpisodeRecorder::new(EpisodeInfo {
        task_id: task.id,
        problem_id: task.problem_id.clone(),
        task_type,
        metadata,
    });
    let opening = format!(
        "Starting AIOpsLab problem {} ({task_type}) on Kind cluster {} with model {}, max_steps {}, \
         timeout {} min",
        task.problem_id,
        config.cluster_name,
        settings.model,
        task.parameters.max_steps,
        task.parameters.timeout_minutes
    );
    recorder.note(opening.clone());
    ctx.logs
        .info(format!("{opening}; run directory {}", dir.display()))
        .await;

    let (mut process, mut events) = match DriverProcess::spawn(&spec) {
        Ok(spawned) => spawned,
        Err(err) => {
            let message = format!("cannot start the AIOpsLab driver ({}): {err}", spec.python.display());
            return fail(ctx, "driver_start", message).await;
        }
    };
    tracing::info!(pgid = process.pgid(), run_dir = %dir.display(), "driver started");

    let mut events_open = true;
    let mut end = loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break RunEnd::Cancelled,
            _ = tokio::time::sleep_until(ctx.deadline) => {
                break RunEnd::TimedOut { timeout_minutes: task.parameters.timeout_minutes }
            }
            line = events.recv(), if events_open => match line {
                Some(line) => forward_line(&mut recorder, ctx, &line).await,
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
            process.kill_leftovers();
        }
        stopped => {
            let why = if matches!(stopped, RunEnd::Cancelled) {
                "the task was cancelled"
            } else {
                "the deadline passed"
            };
            ctx.logs
                .warning(format!(
                    "{why}: stopping the driver's process group (SIGTERM, SIGKILL after {} s)",
                    config.kill_grace.as_secs()
                ))
                .await;
            if let Err(err) = process.terminate(config.kill_grace).await {
                tracing::warn!(%err, "stopping the driver failed");
            }
        }
    }

    // The events written before the driver ended are still in the pipe.
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while events_open {
        match tokio::time::timeout_at(drain_until, events.recv()).await {
            Ok(Some(line)) => forward_line(&mut recorder, ctx, &line).await,
            Ok(None) | Err(_) => events_open = false,
        }
    }
    let stderr_tail = process.finish_output(Duration::from_secs(5)).await;
    if let RunEnd::Exited { stderr_tail: tail, .. } = &mut end {
        *tail = stderr_tail;
    }
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
    report
}

/// Logs `message` as the run's error and returns the failed report.
async fn fail(ctx: &RunContext, code: &str, message: String) -> RunReport {
    ctx.logs.error(message.clone()).await;
    RunReport::failed(code, message)
}

/// Feeds one event line to the recorder and logs the entries it makes.
async fn forward_line(recorder: &mut EpisodeRecorder, ctx: &RunContext, line: &str) {
    for entry in recorder.apply_line(line) {
        ctx.logs.log(entry).await;
    }
}
