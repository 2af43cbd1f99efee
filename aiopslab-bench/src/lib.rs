//! What the fleet benchmarks (`bench_fleet`, `bench_faults`, `bench_workers`) do around their measurements:
//! reading knobs from the environment, a scratch PostgreSQL database with a directory for the processes' logs, the
//! `aiopslab` program's `serve` and `worker` started from this program's own directory (and always stopped: on
//! return, error, interrupt or drop), waiting for the server's health, free ports and the few HTTP calls they share;
//! what they measure with (`/proc`, `/metrics`, PostgreSQL's counters) is in [`measure`]. The library of the
//! benchmark programs in `src/bin/`, not an API of the project.

pub mod measure;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor, PgConnection};

/// The database the benchmarks connect to when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The environment variable `name` parsed (surrounding blanks trimmed), or `default` when it is unset or blank.
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={value:?} is not valid: {error}")),
        _ => Ok(default),
    }
}

/// Whether the environment variable `name` is exactly `1`.
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------------------------
// The scratch database

/// A database of this run's own (dropped by [`Scratch::finish`] unless `BENCH_KEEP_DATABASE=1`) and a temporary
/// directory for the processes' logs (removed there unless `BENCH_KEEP_LOGS=1` or the run failed).
pub struct Scratch {
    /// The connection to `DATABASE_URL` that created the database and drops it.
    admin: PgConnection,
    /// Where the scratch database is.
    options: PgConnectOptions,
    /// The scratch database's name, `{prefix}_{pid}`; the log directory has the same name.
    pub name: String,
    /// The directory the processes' logs go to.
    pub logs: PathBuf,
}

impl Scratch {
    /// Connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and creates, afresh, the
    /// database `{prefix}_{pid}` and a log directory of the same name in the temporary directory.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        let admin: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
        let name = format!("{prefix}_{}", std::process::id());
        let logs = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
        let mut conn = admin.connect().await.context("cannot connect to DATABASE_URL")?;
        conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str()).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        Ok(Self {
            admin: conn,
            options: admin.database(&name),
            name,
            logs,
        })
    }

    /// The scratch database's URL, for the server's `--database-url`.
    pub fn database_url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A connection to the scratch database, and PostgreSQL's `server_version`.
    pub async fn connect(&self) -> anyhow::Result<(PgConnection, String)> {
        let mut db = self
            .options
            .connect()
            .await
            .context("cannot connect to the scratch database")?;
        let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut db).await?;
        Ok((db, version))
    }

    /// Drops the database (or names it, with `BENCH_KEEP_DATABASE=1`), removes the logs (or names their directory,
    /// on error or with `BENCH_KEEP_LOGS=1`), then prints the report as pretty JSON on stdout, or returns the error.
    pub async fn finish(mut self, result: anyhow::Result<Value>) -> anyhow::Result<()> {
        let name = &self.name;
        if env_flag("BENCH_KEEP_DATABASE") {
            eprintln!("kept database {name}");
        } else {
            self.admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await?;
        }
        if result.is_err() || env_flag("BENCH_KEEP_LOGS") {
            eprintln!("the processes' logs are in {}", self.logs.display());
        } else {
            std::fs::remove_dir_all(&self.logs).with_context(|| format!("cannot remove {}", self.logs.display()))?;
        }
        let report = result?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}

/// `run` to its end, or an "interrupted" error on SIGINT or SIGTERM (dropping `run`, and with it its [`Fleet`],
/// which kills the children).
pub async fn until_interrupted<T>(run: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        result = run => result,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/// The `aiopslab` program (its `serve` and `worker` commands), beside this program.
pub struct Binaries {
    /// The `aiopslab` program.
    pub aiopslab: PathBuf,
}

impl Binaries {
    /// The `aiopslab` program next to this program's executable; fails when it is missing.
    pub fn beside_this_program() -> anyhow::Result<Self> {
        let aiopslab = beside_this_program("aiopslab")?;
        ensure!(
            aiopslab.exists(),
            "{} not found: build it first (cargo build --release -p aiopslab-cli -p aiopslab-bench)",
            aiopslab.display()
        );
        Ok(Self { aiopslab })
    }
}

/// The path of the program `name` in this program's own directory (whether or not it exists).
pub fn beside_this_program(name: &str) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?
        .parent()
        .context("no directory for this program")?
        .join(name))
}

/// A child process whose output (stdout and stderr) goes to a file.
pub struct Proc {
    /// Its name in messages.
    pub name: String,
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// Killed and reaped: nothing more to check or stop.
    done: bool,
}

impl Proc {
    /// Starts `binary` with `args`, no stdin, and its output to a new file `log`.
    fn spawn(name: &str, binary: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            done: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails when the process has exited, with the end of its log.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log: {}\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            ),
            Err(error) => Err(error).with_context(|| format!("cannot check {}", self.name)),
        }
    }

    /// SIGKILL (`Child::kill`) if it still runs, and reaps it.
    pub fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.done = true;
    }
}

/// SIGTERM to every running process, then SIGKILL to those still running after `grace`; every one is reaped.
async fn terminate(procs: &mut [&mut Proc], grace: Duration) {
    for proc in procs.iter_mut() {
        if proc.running() {
            let _ = Command::new("kill").arg("-TERM").arg(proc.pid().to_string()).status();
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter_mut().any(|p| p.running()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for proc in procs.iter_mut() {
        if proc.running() {
            eprintln!("{} did not stop within {grace:?}; killing it", proc.name);
        }
        proc.kill();
    }
}

/// The server and the workers, started from [`Binaries`] with their logs in one directory; whatever still runs is
/// killed on drop.
pub struct Fleet {
    binaries: Binaries,
    logs: PathBuf,
    /// The server, once started.
    pub server: Option<Proc>,
    /// Every worker started, in order (killed and stopped ones included).
    pub workers: Vec<Proc>,
}

impl Fleet {
    /// No process yet; they will log to `logs/{name}.log`.
    pub fn new(binaries: Binaries, logs: &Path) -> Self {
        Self {
            binaries,
            logs: logs.to_path_buf(),
            server: None,
            workers: Vec::new(),
        }
    }

    /// Starts the server on a free port of 127.0.0.1 (`--database-url database_url --workers 0`, then `extra`) and
    /// waits until it answers `GET /health`; returns its port and base URL.
    pub async fn start_server(
        &mut self,
        client: &reqwest::Client,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<(u16, String)> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let port_arg = port.to_string();
        let args: Vec<String> = [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--database-url",
            database_url,
            "--workers",
            "0",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let log = self.logs.join("server.log");
        self.server = Some(Proc::spawn("server", &self.binaries.aiopslab, &args, &log)?);
        self.wait_healthy(client, &base).await?;
        Ok((port, base))
    }

    /// Polls `GET {base}/health` until it succeeds (60 s at most), failing as soon as a process exits.
    async fn wait_healthy(&mut self, client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check()?;
            if let Ok(response) = client.get(format!("{base}/health")).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not become healthy within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a worker named `name` (logging to `name.log`) with `args`; returns its index in `workers`.
    pub fn spawn_worker(&mut self, name: &str, args: &[String]) -> anyhow::Result<usize> {
        let log = self.logs.join(format!("{name}.log"));
        let args: Vec<String> = std::iter::once("worker".to_string())
            .chain(args.iter().cloned())
            .collect();
        self.workers
            .push(Proc::spawn(name, &self.binaries.aiopslab, &args, &log)?);
        Ok(self.workers.len() - 1)
    }

    /// Fails when the server or a worker not killed or stopped on purpose has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(server) = &mut self.server {
            server.check()?;
        }
        self.workers.iter_mut().filter(|w| !w.done).try_for_each(Proc::check)
    }

    /// Stops every worker not yet stopped at once: SIGTERM, then SIGKILL to those still running after `grace`.
    pub async fn stop_workers(&mut self, grace: Duration) {
        let mut workers: Vec<&mut Proc> = self.workers.iter_mut().filter(|w| !w.done).collect();
        terminate(&mut workers, grace).await;
    }

    /// Stops the server: SIGTERM, then SIGKILL if it still runs after `grace`.
    pub async fn stop_server(&mut self, grace: Duration) {
        if let Some(server) = &mut self.server {
            terminate(&mut [server], grace).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.kill();
        }
        if let Some(server) = &mut self.server {
            server.kill();
        }
    }
}

/// A `worker` on the simulated backend: `--id id --server server --cluster simulated --backend-type default`, runs
/// of `sim_steps` steps of `step_delay_ms` each, then `extra`.
pub fn worker_args(id: &str, server: &str, sim_steps: u32, step_delay_ms: u64, extra: &[&str]) -> Vec<String> {
    simulated_worker_args(id, ("--server", server), sim_steps, step_delay_ms, extra)
}

/// A `worker` on the simulated backend reaching its store with `store`, `("--server", url)` or
/// `("--database-url", url)`: `--id id --cluster simulated --backend-type default`, runs of `sim_steps` steps of
/// `step_delay_ms` each, then `extra`.
pub fn simulated_worker_args(
    id: &str,
    store: (&str, &str),
    sim_steps: u32,
    step_delay_ms: u64,
    extra: &[&str],
) -> Vec<String> {
    let (steps, delay) = (sim_steps.to_string(), step_delay_ms.to_string());
    [
        "--id",
        id,
        store.0,
        store.1,
        "--cluster",
        "simulated",
        "--backend-type",
        "default",
        "--sim-steps",
        &steps,
        "--sim-step-delay-ms",
        &delay,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// The last `lines` lines of a file (empty when it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A TCP port of 127.0.0.1 free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

/// The body of `GET url`; fails on a transport error or a non-2xx status (with the body in the message).
pub async fn get_text(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "GET {url}: {status}: {text}");
    Ok(text)
}

/// `GET url` as JSON; fails as [`get_text`] does, or when the body is not JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let text = get_text(client, url).await?;
    serde_json::from_str(&text).with_context(|| format!("GET {url} did not answer JSON"))
}

/// The body of a `POST /tasks` for `problem_id` (30 steps, 30 minutes, the usual agent configuration), with
/// `max_retries` when given.
pub fn task_body(problem_id: &str, max_retries: Option<u32>) -> Value {
    let mut body = json!({
        "problem_id": problem_id,
        "agent_config": {"model": "gpt-4o-mini", "temperature": 0.7},
        "max_steps": 30,
        "timeout_minutes": 30,
    });
    if let Some(retries) = max_retries {
        body["max_retries"] = json!(retries);
    }
    body
}

/// `POST url` (the server's `/tasks`) with the JSON `body`; returns the reply's body, failing unless it is a
/// `201 Created`.
pub async fn post_task(client: &reqwest::Client, url: &str, body: String) -> anyhow::Result<String> {
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.as_u16() == 201, "POST /tasks answered {status}: {text}");
    Ok(text)
}
