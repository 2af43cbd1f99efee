//! Finding and running the command-line tools the backend uses (`kind`,
//! `python`), with the environment every child process gets.
//!
//! Executables are resolved against the child environment's `PATH`
//! ([`KindConfig::extra_env`] first), so a program can point the backend at
//! other binaries without touching its own environment.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::KindConfig;

/// A command that could not be run or did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The executable is not on `PATH` (or the given path does not exist).
    #[error("`{program}` not found (looked on PATH={path})")]
    NotFound {
        /// The program as configured.
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// It could not be started or waited for.
    #[error("could not run `{command}`: {message}")]
    Io {
        /// The command line.
        command: String,
        /// The OS error.
        message: String,
    },
    /// It ran longer than allowed and was killed.
    #[error("`{command}` did not finish within {seconds} s")]
    TimedOut {
        /// The command line.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// It exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
}

/// What a successful command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// The `PATH` child processes get.
pub(crate) fn child_path(config: &KindConfig) -> OsString {
    config.child_env("PATH").unwrap_or_default()
}

/// Finds `program` the way a shell would: a path with a `/` is taken as is,
/// a bare name is looked up in `path`. Only executable regular files count.
pub fn which(program: &Path, path: &OsStr) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves a configured executable against the child `PATH`.
pub(crate) fn resolve(config: &KindConfig, program: &Path) -> Result<PathBuf, CommandError> {
    let path = child_path(config);
    which(program, &path).ok_or_else(|| CommandError::NotFound {
        program: program.display().to_string(),
        path: path.to_string_lossy().into_owned(),
    })
}

/// Applies [`KindConfig::extra_env`] to a command (on top of the inherited environment).
pub(crate) fn apply_env(command: &mut tokio::process::Command, config: &KindConfig) {
    for (key, value) in &config.extra_env {
        command.env(key, value);
    }
}

/// The last `max` characters of `text`, trimmed, for error messages.
pub(crate) fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let skipped: String = text.chars().skip(count - max).collect();
    format!("…{skipped}")
}

/// Runs `program args` to completion with the child environment, capturing
/// its output; kills it after `timeout`.
pub(crate) async fn run(
    config: &KindConfig,
    program: &Path,
    args: &[&OsStr],
    timeout: Duration,
) -> Result<CommandOutput, CommandError> {
    let resolved = resolve(config, program)?;
    let command_line = std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = tokio::process::Command::new(&resolved);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    apply_env(&mut command, config);
    tracing::debug!(command = %command_line, "running");
    let child = command.spawn().map_err(|err| CommandError::Io {
        command: command_line.clone(),
        message: err.to_string(),
    })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            return Err(CommandError::Io {
                command: command_line,
                message: err.to_string(),
            })
        }
        Err(_) => {
            return Err(CommandError::TimedOut {
                command: command_line,
                seconds: timeout.as_secs(),
            })
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(CommandError::Failed {
            command: command_line,
            status: output.status.to_string(),
            stderr: tail(&stderr, 2000),
        });
    }
    Ok(CommandOutput { stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_executables_on_the_path_only() {
        let sh = which(Path::new("sh"), OsStr::new("/usr/bin:/bin"));
        assert!(sh.is_some());
        assert_eq!(which(Path::new("sh"), OsStr::new("")), None);
        assert_eq!(which(Path::new("/definitely/not/here"), OsStr::new("/bin")), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("  abc  ", 10), "abc");
        assert_eq!(tail("abcdef", 3), "…def");
    }
}
