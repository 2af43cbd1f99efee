//! Isolation of the driver process from the worker's secrets.
//!
//! With `k8s_host: localhost`, AIOpsLab runs the agent's `exec_shell`
//! commands as `sh -c` inside the driver's process tree: whatever the driver
//! can read, the agent can print (`env`, `cat /proc/*/environ`, `ps e`), and
//! what it prints is stored in the trajectory. The worker's own environment
//! holds the LLM key, the worker token and the database URL, so the driver
//! must not inherit it. This module provides the pieces:
//!
//! - [`driver_environment`]: a *cleared* environment built from an
//!   allow-list ([`DRIVER_ENV_ALLOWLIST`], `LC_*`), the user's explicit
//!   choices ([`KindConfig::driver_env_passthrough`],
//!   [`KindConfig::extra_env`]) and the variables the driver needs (`HOME`,
//!   `KUBECONFIG`, `AIOPSLAB_CLUSTER`, ...). Secret-looking names
//!   ([`is_withheld`]) are never passed, whatever the lists say.
//! - [`DriverUser`], [`resolve_user`], [`check_driver_user_policy`]: the
//!   unprivileged user the driver runs as (`--run-as`). A driver running as
//!   root could read every secret of the machine, so a root worker refuses to
//!   start a root driver unless [`KindConfig::allow_driver_as_root`] says so.
//! - [`apply_isolation`] / [`apply_isolation_std`]: `env_clear()`, the given
//!   environment, and the user's uid/gid on a command. When a root parent
//!   sets a uid, std also drops every supplementary group (`setgroups(0)`)
//!   before `setuid`, so the driver gets neither root's groups nor the
//!   user's own (membership of `docker` would be root-equivalent).
//! - [`prepare_for_user`]: hands a directory tree (run directory, the
//!   driver's `HOME` with its `.kube/config`) to the driver user.
//! - [`forbid_inspection`]: makes the worker process non-dumpable, so a
//!   same-uid agent can neither read `/proc/<worker>/environ` nor ptrace it.
//!
//! What this does **not** protect against: files the driver user can read
//! (keep secrets out of world-readable files), command lines (visible to all
//! users in `/proc/*/cmdline`: never put secrets in arguments), the Kind
//! cluster itself (the driver's kubeconfig is cluster-admin of a Kind cluster
//! whose nodes are privileged containers: a determined agent can escape
//! through a privileged pod), and the network (the host's loopback services,
//! telemetry ports of other workers).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::KindConfig;

/// The variables a driver may inherit from the worker's environment (besides
/// every `LC_*` name, [`KindConfig::driver_env_passthrough`] and
/// [`KindConfig::extra_env`]). Everything else is dropped.
///
/// The proxy variables are listed in both cases: `kubectl` and `helm` may need
/// them to fetch AIOpsLab's charts and manifests. A proxy URL carrying
/// credentials (`http://user:password@proxy`) is readable by the agent; it is
/// passed anyway (with a warning) because the driver needs it.
pub const DRIVER_ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "VIRTUAL_ENV",
    "TIKTOKEN_CACHE_DIR",
    "DATA_GYM_CACHE_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "KIND_EXPERIMENTAL_PROVIDER",
    "DOCKER_HOST",
];

/// The prefix of the locale variables a driver inherits (`LC_ALL`, `LC_CTYPE`, ...).
pub const DRIVER_ENV_ALLOWED_PREFIX: &str = "LC_";

/// Names never passed to a driver, whatever the lists say (compared without
/// regard to ASCII case).
pub const WITHHELD_NAMES: &[&str] = &[
    "AIOPSLAB_WORKER_TOKEN",
    "AIOPSLAB_CLIENT_TOKEN",
    "AIOPSLAB_WEBHOOK_SECRET",
    "DATABASE_URL",
    "OPENAI_API_KEY",
];

/// Name endings never passed to a driver (compared without regard to ASCII case).
pub const WITHHELD_SUFFIXES: &[&str] = &["_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

/// The placeholder useradd command named in errors and preflight fixes.
pub const CREATE_DRIVER_USER: &str = "useradd --system --create-home --shell /usr/sbin/nologin aiopslab-driver";

/// Why the driver's user cannot be used. The message names the problem and
/// its fix ([`IsolationError::problem`], [`IsolationError::fix`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    /// The worker runs as root and nobody chose how the driver should run.
    #[error("{}; fix: {}", self.problem(), self.fix())]
    RootWithoutRunAs,
    /// A user name that cannot be a user name (empty, or holding a NUL byte).
    #[error("{}; fix: {}", self.problem(), self.fix())]
    InvalidUserName {
        /// The name given.
        name: String,
    },
    /// No such user on this machine.
    #[error("{}; fix: {}", self.problem(), self.fix())]
    UnknownUser {
        /// The name given.
        name: String,
    },
    /// The user database could not be read.
    #[error("{}; fix: {}", self.problem(), self.fix())]
    Lookup {
        /// The name given.
        name: String,
        /// The OS error.
        message: String,
    },
    /// The user is root (uid 0) under another name.
    #[error("{}; fix: {}", self.problem(), self.fix())]
    RootUser {
        /// The name given.
        name: String,
    },
    /// `run_as` names another user but the worker cannot switch users.
    #[error("{}; fix: {}", self.problem(), self.fix())]
    CannotSwitchUser {
        /// The name given.
        name: String,
        /// That user's uid.
        uid: u32,
        /// The worker's effective uid.
        euid: u32,
    },
}

impl IsolationError {
    /// What is wrong, without the fix.
    pub fn problem(&self) -> String {
        match self {
            IsolationError::RootWithoutRunAs => "the worker runs as root and the driver (whose shell the agent uses) \
                would run as root too, able to read every secret of this machine"
                .to_string(),
            IsolationError::InvalidUserName { name } => format!("{name:?} is not a valid user name"),
            IsolationError::UnknownUser { name } => format!("there is no user {name:?} on this machine"),
            IsolationError::Lookup { name, message } => format!("cannot look up user {name:?}: {message}"),
            IsolationError::RootUser { name } => {
                format!("user {name:?} has uid 0 (root): the driver must run as an unprivileged user")
            }
            IsolationError::CannotSwitchUser { name, uid, euid } => format!(
                "--run-as {name} needs a worker running as root to switch to uid {uid}, but it runs as uid {euid}"
            ),
        }
    }

    /// How to fix it.
    pub fn fix(&self) -> String {
        match self {
            IsolationError::RootWithoutRunAs => format!(
                "create an unprivileged user (`{CREATE_DRIVER_USER}`) and pass `--run-as aiopslab-driver` (run_as), \
                 or pass `--allow-root-driver` (allow_driver_as_root) knowing that the agent can then read every \
                 secret of the machine"
            ),
            IsolationError::InvalidUserName { .. } => {
                "pass the name of an existing unprivileged user to --run-as".to_string()
            }
            IsolationError::UnknownUser { name } => format!(
                "create it (`useradd --system --create-home --shell /usr/sbin/nologin {name}`) or pass an existing \
                 unprivileged user to --run-as"
            ),
            IsolationError::Lookup { .. } => "check the user database (/etc/passwd, NSS) of this machine".to_string(),
            IsolationError::RootUser { .. } => {
                format!("create an unprivileged user (`{CREATE_DRIVER_USER}`) and pass it to --run-as")
            }
            IsolationError::CannotSwitchUser { .. } => "start the worker as root, or drop --run-as (the driver then \
                runs as the worker's own user, which must hold no secrets the agent may not read)"
                .to_string(),
        }
    }
}

/// The unprivileged user a driver runs as ([`KindConfig::run_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverUser {
    /// The user name.
    pub name: String,
    /// Its uid (never 0).
    pub uid: u32,
    /// Its primary gid (the driver gets no supplementary groups).
    pub gid: u32,
    /// Its home directory in the user database (the driver gets its own `HOME` instead).
    pub home: PathBuf,
}

/// Whether a variable `name` must never reach a driver: one of
/// [`WITHHELD_NAMES`], ending in one of [`WITHHELD_SUFFIXES`],
/// [`KindConfig::default_api_key_env`], or in `deny` (e.g. the task's
/// `api_key_env`). ASCII case is ignored: withholding too much is harmless.
pub fn is_withheld(name: &str, config: &KindConfig, deny: &[&str]) -> bool {
    let upper = name.to_ascii_uppercase();
    WITHHELD_NAMES.contains(&upper.as_str())
        || WITHHELD_SUFFIXES.iter().any(|suffix| upper.ends_with(suffix))
        || config
            .default_api_key_env
            .as_deref()
            .is_some_and(|key| key.eq_ignore_ascii_case(name))
        || deny.iter().any(|denied| denied.eq_ignore_ascii_case(name))
}

/// A driver environment with the names that were asked for but withheld.
#[derive(Debug, Default)]
pub(crate) struct BuiltEnvironment {
    pub(crate) vars: BTreeMap<OsString, OsString>,
    pub(crate) withheld: BTreeSet<String>,
}

impl BuiltEnvironment {
    fn put(&mut self, name: &str, value: OsString, config: &KindConfig, deny: &[&str]) {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.as_bytes().contains(&0) {
            tracing::warn!(name, "not a valid environment entry; not passed to the driver");
            return;
        }
        if is_withheld(name, config, deny) {
            self.vars.remove(OsStr::new(name));
            self.withheld.insert(name.to_string());
        } else {
            self.vars.insert(name.into(), value);
        }
    }
}

/// The `LC_*` names of the child environment ([`KindConfig::extra_env`] and this process's).
fn locale_names(config: &KindConfig) -> BTreeSet<String> {
    let from_process = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    let from_config = config.extra_env.iter().map(|(name, _)| name.clone());
    from_process
        .chain(from_config)
        .filter(|name| name.starts_with(DRIVER_ENV_ALLOWED_PREFIX))
        .collect()
}

/// Whether a URL carries credentials (`scheme://user:password@host`).
fn has_userinfo(url: &OsStr) -> bool {
    let url = url.to_string_lossy();
    let rest = url.split_once("://").map_or(url.as_ref(), |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default().contains('@')
}

pub(crate) fn build_driver_environment(
    config: &KindConfig,
    home: &Path,
    deny: &[&str],
    extra: &[(&str, OsString)],
) -> BuiltEnvironment {
    let mut env = BuiltEnvironment::default();
    for name in DRIVER_ENV_ALLOWLIST {
        if let Some(value) = config.child_env(name) {
            env.put(name, value, config, deny);
        }
    }
    for name in locale_names(config) {
        if let Some(value) = config.child_env(&name) {
            env.put(&name, value, config, deny);
        }
    }
    for name in &config.driver_env_passthrough {
        if let Some(value) = config.child_env(name) {
            env.put(name, value, config, deny);
        }
    }
    for (name, value) in &config.extra_env {
        env.put(name, value.into(), config, deny);
    }
    env.put("HOME", home.into(), config, deny);
    env.put("KUBECONFIG", home.join(".kube").join("config").into(), config, deny);
    env.put("AIOPSLAB_CLUSTER", config.cluster_name.clone().into(), config, deny);
    env.put("PYTHONUNBUFFERED", "1".into(), config, deny);
    if let Some(dir) = &config.tiktoken_cache_dir {
        env.put("TIKTOKEN_CACHE_DIR", dir.into(), config, deny);
    }
    let mut python_path: Vec<PathBuf> = config.aiopslab_dir.iter().cloned().collect();
    if let Some(existing) = config.child_env("PYTHONPATH") {
        python_path.extend(std::env::split_paths(&existing).filter(|part| !part.as_os_str().is_empty()));
    }
    if !python_path.is_empty() {
        if let Ok(joined) = std::env::join_paths(python_path) {
            env.put("PYTHONPATH", joined, config, deny);
        }
    }
    for (name, value) in extra {
        env.put(name, value.clone(), config, deny);
    }
    env
}

/// The driver's whole environment (to be applied to a *cleared* command, see
/// [`apply_isolation`]), sorted by name:
///
/// 1. the [`DRIVER_ENV_ALLOWLIST`] names and every `LC_*` name, then the
///    names of [`KindConfig::driver_env_passthrough`], with their values in the
///    child environment ([`KindConfig::child_env`]: `extra_env` first, then
///    this process's environment);
/// 2. every [`KindConfig::extra_env`] entry (explicit, user-set);
/// 3. `HOME=<home>`, `KUBECONFIG=<home>/.kube/config`,
///    `AIOPSLAB_CLUSTER=<cluster_name>`, `PYTHONUNBUFFERED=1`,
///    `TIKTOKEN_CACHE_DIR` from [`KindConfig::tiktoken_cache_dir`] when set, and
///    `PYTHONPATH` starting with [`KindConfig::aiopslab_dir`];
/// 4. `extra` (later entries win).
///
/// Whatever the lists say, a name for which [`is_withheld`] holds (with
/// `deny`, e.g. the task's `api_key_env`) is never passed; the withheld names
/// (never their values) are logged at warn.
pub fn driver_environment(
    config: &KindConfig,
    home: &Path,
    deny: &[&str],
    extra: &[(&str, OsString)],
) -> Vec<(OsString, OsString)> {
    let built = build_driver_environment(config, home, deny, extra);
    if !built.withheld.is_empty() {
        let names: Vec<&str> = built.withheld.iter().map(String::as_str).collect();
        tracing::warn!(
            withheld = %names.join(", "),
            "not passing these variables to the driver: the agent's shell could read them"
        );
    }
    let proxies_with_credentials: Vec<&str> = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .into_iter()
        .filter(|name| {
            built
                .vars
                .get(OsStr::new(name))
                .is_some_and(|value| has_userinfo(value))
        })
        .collect();
    if !proxies_with_credentials.is_empty() {
        tracing::warn!(
            names = %proxies_with_credentials.join(", "),
            "these proxy URLs carry credentials and are passed to the driver: the agent can read them"
        );
    }
    built.vars.into_iter().collect()
}

/// Looks `name` up in the user database (`getpwnam_r`). Refuses uid 0.
pub fn resolve_user(name: &str) -> Result<DriverUser, IsolationError> {
    let invalid = || IsolationError::InvalidUserName { name: name.to_string() };
    if name.is_empty() {
        return Err(invalid());
    }
    let c_name = CString::new(name).map_err(|_| invalid())?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let suggested = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut buf_len = usize::try_from(suggested)
        .ok()
        .filter(|len| *len > 0)
        .unwrap_or(16 * 1024);
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; buf_len];
        // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value to be overwritten.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live, writable memory of the given size for the call's duration.
        let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf_len < 1 << 20 {
            buf_len *= 2;
            continue;
        }
        if result.is_null() {
            // Not found is rc 0 on glibc; some systems answer ENOENT, ESRCH, EBADF or EPERM instead.
            return match rc {
                0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => {
                    Err(IsolationError::UnknownUser { name: name.to_string() })
                }
                _ => Err(IsolationError::Lookup {
                    name: name.to_string(),
                    message: io::Error::from_raw_os_error(rc).to_string(),
                }),
            };
        }
        let home = if entry.pw_dir.is_null() {
            PathBuf::new()
        } else {
            // SAFETY: on success pw_dir points at a NUL-terminated string inside `buf`, alive here.
            let dir = unsafe { CStr::from_ptr(entry.pw_dir) };
            PathBuf::from(OsStr::from_bytes(dir.to_bytes()))
        };
        if entry.pw_uid == 0 {
            return Err(IsolationError::RootUser { name: name.to_string() });
        }
        return Ok(DriverUser {
            name: name.to_string(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home,
        });
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    effective_uid() == 0
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user the driver must run as, by policy:
///
/// - [`KindConfig::run_as`] set: that user ([`resolve_user`]); a worker not
///   running as root cannot switch to another uid (an error), and `run_as`
///   naming the worker's own user needs no switch (`Ok(None)`);
/// - not set, the worker runs as root and [`KindConfig::allow_driver_as_root`]
///   is false: [`IsolationError::RootWithoutRunAs`], whose message names the fix;
/// - otherwise `Ok(None)`: the driver runs as the worker's user.
pub fn check_driver_user_policy(config: &KindConfig) -> Result<Option<DriverUser>, IsolationError> {
    match &config.run_as {
        Some(name) => {
            let user = resolve_user(name)?;
            let euid = effective_uid();
            if euid == 0 {
                Ok(Some(user))
            } else if user.uid == euid {
                Ok(None)
            } else {
                Err(IsolationError::CannotSwitchUser {
                    name: user.name,
                    uid: user.uid,
                    euid,
                })
            }
        }
        None if running_as_root() && !config.allow_driver_as_root => Err(IsolationError::RootWithoutRunAs),
        None => Ok(None),
    }
}

/// Makes `command` start with exactly `env` (nothing inherited) and, when
/// `user` is given, as that user's uid and primary gid. Started by a root
/// parent, the child also loses every supplementary group (std calls
/// `setgroups(0, NULL)` before `setuid` when a uid is set and no groups are).
pub fn apply_isolation(command: &mut tokio::process::Command, env: &[(OsString, OsString)], user: Option<&DriverUser>) {
    command.env_clear();
    command.envs(env.iter().map(|(name, value)| (name, value)));
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
}

/// [`apply_isolation`] for a [`std::process::Command`] (the blocking preflight probes).
pub fn apply_isolation_std(
    command: &mut std::process::Command,
    env: &[(OsString, OsString)],
    user: Option<&DriverUser>,
) {
    use std::os::unix::process::CommandExt;
    command.env_clear();
    command.envs(env.iter().map(|(name, value)| (name, value)));
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
}

/// Hands the tree at `path` (a run directory, the driver's `HOME` with its
/// `.kube/config`) to `user`, so the driver can write it. Symbolic links are
/// not followed (the links themselves change owner). Files inside a `.kube`
/// directory (kubeconfigs) get mode 0600. The directories *above* `path` must
/// already be searchable by the user (a tree under `/root` is not).
pub fn prepare_for_user(path: &Path, user: &DriverUser) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    chown_tree(path, &meta, user)
}

fn chown_tree(path: &Path, meta: &std::fs::Metadata, user: &DriverUser) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let child = entry?.path();
            let child_meta = std::fs::symlink_metadata(&child)?;
            chown_tree(&child, &child_meta, user)?;
        }
    } else if meta.is_file() && path.parent().and_then(Path::file_name) == Some(OsStr::new(".kube")) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Marks this (the worker's) process non-dumpable: `prctl(PR_SET_DUMPABLE, 0)`.
///
/// Protects: processes of the *same uid* that are not privileged, i.e. an
/// agent whose driver runs as the worker's own user, can then neither read
/// `/proc/<worker>/environ` (nor `maps`, `mem`, `fd/`; those files become
/// owned by root) nor `ptrace` the worker; no core dump of the worker is
/// written. This is the mechanism for a worker that does not run as root.
///
/// Does not protect: anything root does (root reads every process's memory
/// and environment: hence `--run-as` for a root worker), `/proc/<pid>/cmdline`
/// (readable by everyone), files the same uid can read, signals (a same-uid
/// agent can still kill the worker), or processes started later (the flag is
/// reset by `execve`, so the driver itself is dumpable again; its environment
/// comes from [`driver_environment`]). It applies to the whole process (every
/// thread) and lasts until the process exits or changes it back.
pub fn forbid_inspection() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KindConfig {
        let mut config = KindConfig::new("worker-iso");
        config.aiopslab_dir = Some(PathBuf::from("/opt/AIOpsLab"));
        config.default_api_key_env = Some("MY_LLM_KEY".to_string());
        config
    }

    fn get<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.to_str().unwrap())
    }

    fn nobody() -> Option<DriverUser> {
        resolve_user("nobody").ok()
    }

    #[test]
    fn allow_listed_and_locale_names_pass_from_the_child_environment() {
        let mut config = config();
        for (name, value) in [
            ("PATH", "/fake/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("LC_MESSAGES", "C"),
            ("https_proxy", "http://proxy:3128"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("KIND_EXPERIMENTAL_PROVIDER", "podman"),
        ] {
            config.extra_env.push((name.into(), value.into()));
        }
        let env = driver_environment(&config, Path::new("/w/home"), &[], &[]);
        assert_eq!(get(&env, "PATH"), Some("/fake/bin"));
        assert_eq!(get(&env, "LC_ALL"), Some("C.UTF-8"));
        assert_eq!(get(&env, "LC_MESSAGES"), Some("C"));
        assert_eq!(get(&env, "https_proxy"), Some("http://proxy:3128"));
        assert_eq!(get(&env, "KIND_EXPERIMENTAL_PROVIDER"), Some("podman"));
        let mut names: Vec<&OsString> = env.iter().map(|(name, _)| name).collect();
        let sorted = {
            let mut sorted = names.clone();
            sorted.sort();
            sorted
        };
        assert_eq!(names, sorted, "sorted by name");
        names.dedup();
        assert_eq!(names.len(), env.len(), "each name once");
    }

    #[test]
    fn names_of_this_process_outside_the_lists_are_dropped_unless_passed_through() {
        std::env::set_var("AIOPSLAB_ISOLATION_TEST_UNLISTED", "visible-only-if-listed");
        std::env::set_var("AIOPSLAB_ISOLATION_TEST_PASSED", "passed");
        let mut config = config();
        config.driver_env_passthrough = vec!["AIOPSLAB_ISOLATION_TEST_PASSED".into(), "NOT_SET_ANYWHERE_X".into()];
        let env = driver_environment(&config, Path::new("/w/home"), &[], &[]);
        assert_eq!(get(&env, "AIOPSLAB_ISOLATION_TEST_UNLISTED"), None);
        assert_eq!(get(&env, "AIOPSLAB_ISOLATION_TEST_PASSED"), Some("passed"));
        assert_eq!(get(&env, "NOT_SET_ANYWHERE_X"), None);
        // Cargo's own variables of this test process are not on any list.
        assert_eq!(get(&env, "CARGO_MANIFEST_DIR"), None);
        let allowed = |name: &str| {
            DRIVER_ENV_ALLOWLIST.contains(&name)
                || name.starts_with("LC_")
                || [
                    "HOME",
                    "KUBECONFIG",
                    "AIOPSLAB_CLUSTER",
                    "PYTHONUNBUFFERED",
                    "AIOPSLAB_ISOLATION_TEST_PASSED",
                ]
                .contains(&name)
        };
        for (name, _) in &env {
            assert!(
                allowed(name.to_str().unwrap()),
                "{name:?} leaked into the driver environment"
            );
        }
    }

    #[test]
    fn secrets_are_withheld_whatever_the_lists_say() {
        std::env::set_var("AIOPSLAB_ISOLATION_TEST_DB_PASSWORD", "hunter2");
        let mut config = config();
        for name in [
            "OPENAI_API_KEY",
            "AIOPSLAB_WORKER_TOKEN",
            "AIOPSLAB_CLIENT_TOKEN",
            "AIOPSLAB_WEBHOOK_SECRET",
            "DATABASE_URL",
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "my_secret",
            "MY_LLM_KEY",
            "TASK_KEY_VAR",
        ] {
            config.extra_env.push((name.into(), "s3cr3t".into()));
        }
        config.extra_env.push(("HARMLESS".into(), "ok".into()));
        config.driver_env_passthrough = vec!["AIOPSLAB_ISOLATION_TEST_DB_PASSWORD".into(), "OPENAI_API_KEY".into()];
        let extra = [
            ("SOME_TOKEN", OsString::from("s3cr3t")),
            ("AIOPSLAB_TASK_ID", OsString::from("t-1")),
        ];
        let built = build_driver_environment(&config, Path::new("/w/home"), &["task_key_var"], &extra);
        for (name, value) in &built.vars {
            assert_ne!(value, "s3cr3t", "{name:?} leaked");
            assert_ne!(value, "hunter2", "{name:?} leaked");
        }
        let withheld: Vec<&str> = built.withheld.iter().map(String::as_str).collect();
        assert_eq!(
            withheld,
            [
                "AIOPSLAB_CLIENT_TOKEN",
                "AIOPSLAB_ISOLATION_TEST_DB_PASSWORD",
                "AIOPSLAB_WEBHOOK_SECRET",
                "AIOPSLAB_WORKER_TOKEN",
                "ANTHROPIC_API_KEY",
                "DATABASE_URL",
                "GITHUB_TOKEN",
                "MY_LLM_KEY",
                "OPENAI_API_KEY",
                "SOME_TOKEN",
                "TASK_KEY_VAR",
                "my_secret",
            ]
        );
        assert_eq!(
            built.vars.get(OsStr::new("HARMLESS")).map(|v| v.to_str().unwrap()),
            Some("ok")
        );
        assert_eq!(
            built
                .vars
                .get(OsStr::new("AIOPSLAB_TASK_ID"))
                .map(|v| v.to_str().unwrap()),
            Some("t-1")
        );
    }

    #[test]
    fn the_driver_variables_are_fixed_and_extra_wins() {
        let mut config = config();
        config.cluster_name = "c-1".into();
        config.tiktoken_cache_dir = Some(PathBuf::from("/cache/tiktoken"));
        for (name, value) in [
            ("HOME", "/root"),
            ("KUBECONFIG", "/root/.kube/config"),
            ("PYTHONPATH", "/extra/lib"),
            ("TIKTOKEN_CACHE_DIR", "/elsewhere"),
            ("FAKE_KNOB", "1"),
        ] {
            config.extra_env.push((name.into(), value.into()));
        }
        let extra = [("FAKE_KNOB", OsString::from("2"))];
        let env = driver_environment(&config, Path::new("/w/home"), &[], &extra);
        assert_eq!(get(&env, "HOME"), Some("/w/home"));
        assert_eq!(get(&env, "KUBECONFIG"), Some("/w/home/.kube/config"));
        assert_eq!(get(&env, "AIOPSLAB_CLUSTER"), Some("c-1"));
        assert_eq!(get(&env, "PYTHONUNBUFFERED"), Some("1"));
        assert_eq!(get(&env, "TIKTOKEN_CACHE_DIR"), Some("/cache/tiktoken"));
        assert_eq!(get(&env, "PYTHONPATH"), Some("/opt/AIOpsLab:/extra/lib"));
        assert_eq!(get(&env, "FAKE_KNOB"), Some("2"));
    }

    #[test]
    fn withheld_names_ignore_case_and_proxies_with_credentials_are_recognised() {
        let config = config();
        assert!(is_withheld("openai_api_key", &config, &[]));
        assert!(is_withheld("Db_Password", &config, &[]));
        assert!(is_withheld("my_llm_key", &config, &[]));
        assert!(is_withheld("X", &config, &["x"]));
        assert!(!is_withheld("PATH", &config, &[]));
        assert!(!is_withheld("TOKENIZERS_PARALLELISM", &config, &[]));
        assert!(DRIVER_ENV_ALLOWLIST.iter().all(|name| !is_withheld(name, &config, &[])));
        assert!(has_userinfo(OsStr::new("http://user:pw@proxy:3128")));
        assert!(!has_userinfo(OsStr::new("http://proxy:3128/path@x")));
    }

    #[test]
    fn invalid_entries_are_skipped() {
        let mut config = config();
        config.extra_env.push(("A=B".into(), "1".into()));
        config.extra_env.push(("NUL".into(), "a\0b".into()));
        let env = driver_environment(&config, Path::new("/w/home"), &[], &[]);
        assert_eq!(get(&env, "A=B"), None);
        assert_eq!(get(&env, "NUL"), None);
    }

    #[test]
    fn users_are_resolved_and_root_refused() {
        assert_eq!(
            resolve_user("root"),
            Err(IsolationError::RootUser { name: "root".into() })
        );
        assert_eq!(
            resolve_user("no-such-user-aiopslab-x"),
            Err(IsolationError::UnknownUser {
                name: "no-such-user-aiopslab-x".into()
            })
        );
        assert!(matches!(resolve_user(""), Err(IsolationError::InvalidUserName { .. })));
        assert!(matches!(
            resolve_user("a\0b"),
            Err(IsolationError::InvalidUserName { .. })
        ));
        if let Some(user) = nobody() {
            assert_ne!(user.uid, 0);
            assert_eq!(user.name, "nobody");
        }
        let message = IsolationError::UnknownUser { name: "drv".into() }.to_string();
        assert!(
            message.contains("useradd --system --create-home --shell /usr/sbin/nologin drv"),
            "{message}"
        );
    }

    #[test]
    fn the_policy_refuses_a_root_driver_unless_allowed() {
        let mut config = config();
        if running_as_root() {
            let err = check_driver_user_policy(&config).unwrap_err();
            assert_eq!(err, IsolationError::RootWithoutRunAs);
            let message = err.to_string();
            assert!(message.contains("--run-as aiopslab-driver"), "{message}");
            assert!(message.contains("--allow-root-driver"), "{message}");
            assert!(message.contains(CREATE_DRIVER_USER), "{message}");
            config.allow_driver_as_root = true;
            assert_eq!(check_driver_user_policy(&config), Ok(None));
            if let Some(user) = nobody() {
                config.run_as = Some("nobody".into());
                assert_eq!(check_driver_user_policy(&config), Ok(Some(user)));
            }
        } else {
            assert_eq!(check_driver_user_policy(&config), Ok(None));
            if nobody().is_some() {
                config.run_as = Some("nobody".into());
                assert!(matches!(
                    check_driver_user_policy(&config),
                    Err(IsolationError::CannotSwitchUser { .. })
                ));
            }
        }
        config.run_as = Some("no-such-user-aiopslab-x".into());
        assert!(matches!(
            check_driver_user_policy(&config),
            Err(IsolationError::UnknownUser { .. })
        ));
    }

    #[test]
    fn a_command_gets_exactly_the_given_environment() {
        let env = vec![(OsString::from("ONLY"), OsString::from("this"))];
        let mut command = std::process::Command::new("/usr/bin/env");
        apply_isolation_std(&mut command, &env, None);
        let output = command.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ONLY=this\n");
    }

    #[tokio::test]
    async fn a_tokio_command_as_another_user_gets_its_ids_and_no_supplementary_groups() {
        let env = vec![(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        let mut command = tokio::process::Command::new("/bin/sh");
        command.args(["-c", "echo $(id -u) $(id -g) $(id -G); env"]);
        let user = if running_as_root() { nobody() } else { None };
        apply_isolation(&mut command, &env, user.as_ref());
        let output = command.output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        let ids = lines.next().unwrap();
        if let Some(user) = &user {
            // Only the primary group: root's own groups (0) are dropped by std's setgroups(0).
            assert_eq!(ids, format!("{uid} {gid} {gid}", uid = user.uid, gid = user.gid));
        }
        let env_lines: Vec<&str> = lines.filter(|line| !line.starts_with("PWD=")).collect();
        assert_eq!(env_lines, ["PATH=/usr/bin:/bin"]);
    }

    #[test]
    fn a_tree_is_handed_to_the_user_with_private_kubeconfigs() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::write(home.join(".kube").join("config"), "kubeconfig").unwrap();
        std::fs::set_permissions(
            home.join(".kube").join("config"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(home.join("notes"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", home.join("link")).unwrap();
        let user = match nobody() {
            Some(user) if running_as_root() => user,
            _ => DriverUser {
                name: "me".into(),
                uid: effective_uid(),
                // SAFETY: getegid cannot fail.
                gid: unsafe { libc::getegid() },
                home: PathBuf::new(),
            },
        };
        prepare_for_user(&home, &user).unwrap();
        for path in [
            home.clone(),
            home.join(".kube"),
            home.join(".kube/config"),
            home.join("notes"),
        ] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{}", path.display());
        }
        assert_eq!(std::fs::symlink_metadata(home.join("link")).unwrap().uid(), user.uid);
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().uid(),
            0,
            "links are not followed"
        );
        let mode = std::fs::metadata(home.join(".kube/config"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(prepare_for_user(&dir.path().join("missing"), &user).is_err());
    }

    #[test]
    fn forbidding_inspection_clears_the_dumpable_flag() {
        forbid_inspection().unwrap();
        // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(dumpable, 0);
        // Restore it for the rest of this test process.
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0) };
    }
}
