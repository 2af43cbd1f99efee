//! A real `aiopslab serve` for the client commands' end-to-end tests: a child process on a free port, ready once
//! `GET /health` answers 200, killed when dropped; and the real `aiopslab` binary pointed at it.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The problem every simulated worker runs.
pub const PROBLEM: &str = "misconfig_app_hotel_res-detection-1";

/// How long one client command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `aiopslab serve`.
pub struct Server {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Where its output goes (named in failures).
    pub log: PathBuf,
}

impl Server {
    /// The server of most tests: two in-process simulated workers, 3-step episodes of 100 ms steps, tasks
    /// claimable at once.
    pub fn start() -> Self {
        Self::with(
            &["--workers", "2", "--sim-steps", "3", "--sim-step-delay-ms", "100"],
            &[],
        )
    }

    /// A server with these extra flags and environment variables (and `--dispatch-delay-ms 0`).
    pub fn with(flags: &[&str], env: &[(&str, &str)]) -> Self {
        let mut last_error = String::new();
        // The free port is found by binding and releasing it: another process may take it meanwhile, so try again.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("aiopslab-cli-test-serve-{port}.log"));
            let out = std::fs::File::create(&log).expect("create the server log");
            let err = out.try_clone().expect("clone the server log");
            let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("aiopslab"));
            command
                .args(["serve", "--port", &port.to_string(), "--dispatch-delay-ms", "0"])
                .args(flags)
                .env_remove("AIOPSLAB_CLIENT_TOKEN")
                .env_remove("AIOPSLAB_WORKER_TOKEN")
                .env_remove("DATABASE_URL")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            for (key, value) in env {
                command.env(key, value);
            }
            let child = command.spawn().expect("start aiopslab serve");
            let mut server = Server {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            match server.wait_healthy(port) {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("aiopslab serve did not start: {last_error}");
    }

    /// Polls `GET /health` until it answers 200, or the server exits.
    fn wait_healthy(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}: {}", self.log_text()));
            }
            if health(port).is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no healthy answer within 30 s: {}", self.log_text()))
    }

    /// Kills the server at once (SIGKILL: no graceful end of its streams).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `aiopslab ARGS` started in the background, stdout and stderr piped, for a test to read as it runs.
    pub fn spawn(&self, args: &[&str]) -> Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("aiopslab"))
            .args(args)
            .env("AIOPSLAB_URL", &self.url)
            .env_remove("AIOPSLAB_CLIENT_TOKEN")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aiopslab")
    }

    /// What the server printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The real `aiopslab` binary, talking to this server (`AIOPSLAB_URL`), with no token and no forced colour.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("aiopslab").expect("the aiopslab binary");
        command
            .env("AIOPSLAB_URL", &self.url)
            .env_remove("AIOPSLAB_CLIENT_TOKEN")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("NO_COLOR")
            .timeout(COMMAND_TIMEOUT);
        command
    }

    /// Runs `aiopslab ARGS` and returns what it did.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// Runs `aiopslab ARGS` with these environment variables set.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.cli();
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Run::of(command.output().expect("run aiopslab"))
    }

    /// Runs `aiopslab ARGS`, expecting exit 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "aiopslab {args:?} failed: {run:?}");
        run
    }

    /// Runs `aiopslab ARGS --json`, expecting exit 0 and JSON on stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let run = self.ok(&with_json);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("aiopslab {with_json:?}: not JSON ({e}): {run:?}"))
    }

    /// Submits one task of `problem` and returns its id.
    pub fn submit(&self, problem: &str) -> String {
        let run = self.ok(&["submit", problem]);
        run.stdout.trim().to_string()
    }

    /// Polls `aiopslab show ID --json` until the task's status is `status` (or fails after 20 s).
    pub fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let task = self.json(&["show", id]);
            if task["status"] == status {
                return task;
            }
            assert!(Instant::now() < deadline, "task {id} never became {status}: {task}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Waits for a [`Server::spawn`]ed command to exit (killing it after `within`) and returns what it did.
pub fn finish(mut child: Child, within: Duration) -> Run {
    let deadline = Instant::now() + within;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::of(child.wait_with_output().expect("the command's output"))
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// Its exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Run {
    fn of(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The raw answer of `GET /health` on `port`, if something answered.
fn health(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Whether `text` is a task id.
pub fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}
