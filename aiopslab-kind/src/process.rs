//! The driver process: started in a process group of its own with an extra
//! pipe on file descriptor 3 for its events, and stopped as a group.
//!
//! AIOpsLab starts `kubectl`, `helm` and `wrk` subprocesses; killing only the
//! driver would leave them running. So the driver leads its own process
//! group and every stop signals the whole group: SIGTERM first (the driver
//! turns it into `SystemExit`, so AIOpsLab's `atexit` fault recovery runs),
//! then SIGKILL after a grace period.
//!
//! The agent's shell commands run inside this process tree, so the driver
//! inherits nothing: it starts with exactly the environment it is given
//! (see [`crate::isolation`]) and, when a user is given, as that user.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::VecDeque;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The descriptor number the driver finds its event pipe on.
pub const EVENTS_FD: RawFd = 3;

/// How long a stop waits for SIGKILLed processes to disappear.
pub const LEFTOVER_EXIT_WAIT: Duration = Duration::from_secs(5);

/// How many lines of standard error are kept for failure messages.
const STDERR_TAIL_LINES: usize = 30;

/// What to start.
#[derive(Debug, Clone)]
pub struct DriverSpec {
    /// The interpreter (resolved).
    pub python: PathBuf,
    /// Its arguments (the driver script first).
    pub args: Vec<OsString>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Its whole environment: nothing of the worker's is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// The unprivileged user it runs as (`None`: the worker's own user).
    pub user: Option<crate::isolation::DriverUser>,
    /// Where the driver's stdout and stderr are copied (`driver.stdout.log`, `driver.stderr.log`).
    pub stdout_log: PathBuf,
    /// See `stdout_log`.
    pub stderr_log: PathBuf,
}

/// A running driver.
pub struct DriverProcess {
    child: Child,
    pgid: i32,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    copiers: Vec<tokio::task::JoinHandle<()>>,
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `signal` to every process of group `pgid`. `Ok(false)` when the group is gone.
pub fn signal_group(pgid: i32, signal: libc::c_int) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal group <= 1",
        ));
    }
    // SAFETY: killpg has no memory-safety preconditions.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Whether any process of group `pgid` is still alive (zombies awaiting
/// their reaper do not count).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return signal_group(pgid, 0).unwrap_or(false);
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // Fields after the `(comm)`: state ppid pgrp ...
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

async fn copy_lines<R: AsyncRead + Unpin>(
    reader: R,
    log_path: PathBuf,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    label: &'static str,
) {
    let mut file = tokio::fs::File::create(&log_path).await.ok();
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(file) = file.as_mut() {
                    let _ = file.write_all(&buf).await;
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                tracing::trace!(stream = label, %line, "driver output");
                if let Some(tail) = &tail {
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            }
        }
    }
    if let Some(mut file) = file {
        let _ = file.flush().await;
    }
}

async fn read_events(fd: OwnedFd, sender: mpsc::Sender<String>) {
    let receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(receiver) => receiver,
        Err(err) => {
            tracing::warn!(%err, "cannot read the driver's event pipe");
            return;
        }
    };
    let mut reader = BufReader::new(receiver);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).into_owned();
                if sender.send(line).await.is_err() {
                    break;
                }
            }
        }
    }
}

impl DriverProcess {
    /// Starts the driver in a new process group with its event pipe on fd 3.
    /// Also returns the lines of the event channel, in order; the receiver
    /// closes at end of file.
    pub fn spawn(spec: &DriverSpec) -> io::Result<(DriverProcess, mpsc::Receiver<String>)> {
        let (read_end, write_end) = pipe_cloexec()?;
        let write_fd = write_end.as_raw_fd();
        let mut command = Command::new(&spec.python);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env_clear()
            .envs(spec.env.iter().map(|(key, value)| (key, value)));
        if let Some(user) = &spec.user {
            // Run as root, std also drops the supplementary groups before setuid.
            command.uid(user.uid).gid(user.gid);
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (dup2, fcntl) on descriptors it owns.
        unsafe {
            command.pre_exec(move || {
                if write_fd == EVENTS_FD {
                    // Already in place: just let it survive exec.
                    if libc::fcntl(EVENTS_FD, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(write_fd, EVENTS_FD) == -1 {
                    // dup2 leaves FD_CLOEXEC clear on the new descriptor.
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        // The parent's copy of the write end must go, or the reader never sees EOF.
        drop(write_end);
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other("the driver exited before its pid could be read"))?;

        let (sender, events) = mpsc::channel(1024);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let mut copiers = vec![tokio::spawn(read_events(read_end, sender))];
        if let Some(stdout) = child.stdout.take() {
            copiers.push(tokio::spawn(copy_lines(
                stdout,
                spec.stdout_log.clone(),
                None,
                "stdout",
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            copiers.push(tokio::spawn(copy_lines(
                stderr,
                spec.stderr_log.clone(),
                Some(stderr_tail.clone()),
                "stderr",
            )));
        }
        let process = DriverProcess {
            child,
            pgid,
            stderr_tail,
            copiers,
        };
        Ok((process, events))
    }

    /// The process group id (the driver's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the driver itself to exit (cancel-safe).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the whole group: SIGTERM, then SIGKILL to whatever is left after
    /// `grace`. Returns the driver's exit status.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Err(err) = signal_group(self.pgid, libc::SIGTERM) {
            tracing::warn!(%err, pgid = self.pgid, "SIGTERM to the driver's process group failed");
        }
        let waited = tokio::time::timeout(grace, async {
            let status = self.child.wait().await;
            // The leader is gone; give the rest of the group the remaining grace.
            while group_alive(self.pgid) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            status
        })
        .await;
        self.kill_leftovers().await;
        match waited {
            Ok(status) => status,
            Err(_) => self.child.wait().await,
        }
    }

    /// SIGKILLs whatever is left of the group (after the driver exited by itself,
    /// the subprocesses AIOpsLab left behind) and waits, at most
    /// [`LEFTOVER_EXIT_WAIT`], until they are gone.
    ///
    /// `killpg` returns once the signal is queued; a process only dies when it
    /// is next scheduled, which on a loaded host can be a while. Waiting here
    /// means a finished run has no process left, not merely a signal pending.
    pub async fn kill_leftovers(&self) {
        match signal_group(self.pgid, libc::SIGKILL) {
            Ok(true) => tracing::debug!(pgid = self.pgid, "killed leftover processes of the driver's group"),
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(%err, pgid = self.pgid, "SIGKILL to the driver's process group failed");
                return;
            }
        }
        let gone = tokio::time::timeout(LEFTOVER_EXIT_WAIT, async {
            while group_alive(self.pgid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if gone.is_err() {
            tracing::warn!(
                pgid = self.pgid,
                "processes of the driver's group outlived SIGKILL by {} s (uninterruptible sleep?)",
                LEFTOVER_EXIT_WAIT.as_secs()
            );
        }
    }

    /// Waits (at most `limit`) for the output copiers to reach end of file,
    /// then returns the last lines of standard error.
    pub async fn finish_output(&mut self, limit: Duration) -> String {
        let copiers = std::mem::take(&mut self.copiers);
        let _ = tokio::time::timeout(limit, async {
            for copier in copiers {
                let _ = copier.await;
            }
        })
        .await;
        self.stderr_tail()
    }

    /// The last lines of standard error seen so far.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|tail| tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        // A run dropped mid-way (its future was cancelled) must not leave the group behind.
        if group_alive(self.pgid) {
            let _ = signal_group(self.pgid, libc::SIGKILL);
        }
        for copier in &self.copiers {
            copier.abort();
        }
    }
}
