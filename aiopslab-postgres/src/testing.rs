//! Real PostgreSQL databases for tests (feature `testing`).
//!
//! [`TestDatabase::create`] gives each test a fresh, uniquely named database with the schema applied, dropped
//! again when the value is dropped. It finds a server this way, and never skips silently:
//!
//! 1. `DATABASE_URL`, when set: a role there must be allowed to `CREATE DATABASE` (CI sets
//!    `postgres://postgres@127.0.0.1:5432/postgres`). If it is set but unreachable, the test fails saying so.
//! 2. Otherwise a throwaway server ([`TestServer`]), started once per test process with `initdb` and `pg_ctl`
//!    found on `PATH` or under `/usr/lib/postgresql/*/bin` (as the `pgtemp` crate does), in a temporary directory
//!    on a free port. `initdb` refuses to run as root, so when the tests run as root the server runs as the
//!    `postgres` user (or `nobody`). A watchdog process stops it and removes its directory when the test process
//!    exits, however it exits.
//! 3. Otherwise the test fails with a message saying how to provide a server.
//!
//! [`PgHarness`] plugs these databases into the core conformance suite; its clock moves by shifting every stored
//! timestamp back, which is exactly what the passage of time looks like to the store's `now()`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aiopslab_core::testkit::StoreHarness;
use aiopslab_core::LeasePolicy;
use async_trait::async_trait;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::{PgStore, PgStoreOptions};

/// How to provide a server, printed when none can be found.
const HOW_TO: &str = "set DATABASE_URL=postgres://USER@HOST:PORT/DB (a role allowed to CREATE DATABASE), or \
                      install the PostgreSQL server binaries (initdb, pg_ctl) on PATH or under \
                      /usr/lib/postgresql/<version>/bin so a throwaway server can be started";

/// A fresh database on a real server, dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    admin: PgConnectOptions,
    options: PgConnectOptions,
}

impl TestDatabase {
    /// A fresh, empty database (no schema) from `DATABASE_URL` or the shared throwaway server.
    ///
    /// # Panics
    /// When no server can be found or reached, with a message saying how to provide one.
    pub async fn create() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let admin: PgConnectOptions = url
                    .parse()
                    .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL ({e}); {HOW_TO}"));
                Self::create_on(admin)
                    .await
                    .unwrap_or_else(|e| panic!("DATABASE_URL={url} is set but unusable: {e}; {HOW_TO}"))
            }
            _ => {
                let server = TestServer::shared().unwrap_or_else(|e| panic!("no PostgreSQL for tests: {e}; {HOW_TO}"));
                server.database().await
            }
        }
    }

    /// A fresh, empty database on the server `admin` points at.
    pub async fn create_on(admin: PgConnectOptions) -> Result<Self, sqlx::Error> {
        let name = format!("aiopslab_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        conn.close().await?;
        Ok(Self {
            options: admin.clone().database(&name),
            name,
            admin,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connect options for the database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A `postgres://` URL of the database.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A pool on the database with the store's pool settings.
    pub fn pool(&self, options: &PgStoreOptions) -> PgPool {
        options.pool_options().connect_lazy_with(self.connect_options())
    }

    /// A migrated [`PgStore`] on the database.
    ///
    /// # Panics
    /// When the migrations fail.
    pub async fn store(&self, policy: LeasePolicy) -> PgStore {
        self.store_with(policy, &PgStoreOptions::default()).await
    }

    /// A migrated [`PgStore`] on the database, with pool options.
    ///
    /// # Panics
    /// When the migrations fail.
    pub async fn store_with(&self, policy: LeasePolicy, options: &PgStoreOptions) -> PgStore {
        let store = PgStore::from_options(options.apply(self.connect_options()), policy, options)
            .expect("policy fits the database");
        store.migrate().await.expect("migrations run on a fresh database");
        store
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a small runtime of our own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(error) = conn.execute(sql.as_str()).await {
                        eprintln!("note: could not drop test database {name}: {error}");
                    }
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// A throwaway PostgreSQL server in a temporary directory, on a free port of 127.0.0.1.
#[derive(Debug)]
pub struct TestServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
}

static SHARED: OnceLock<Result<TestServer, String>> = OnceLock::new();

impl TestServer {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> Result<&'static TestServer, String> {
        SHARED.get_or_init(TestServer::start).as_ref().map_err(Clone::clone)
    }

    /// Starts a new server of its own (stopped and removed on drop).
    pub fn start() -> Result<Self, String> {
        let bin = find_binaries().ok_or("no initdb/pg_ctl found on PATH or under /usr/lib/postgresql/*/bin")?;
        let user = unprivileged_user()?;
        let dir = std::env::temp_dir().join(format!("aiopslab-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to uid {uid}: {e}", dir.display()))?;
        }
        let port = free_port()?;
        let server = Self { dir, bin, port, user };
        server.spawn_watchdog()?;
        server.run(
            "initdb",
            &[
                "-D",
                &server.data_dir(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connect options for database `database` as the superuser `postgres`.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(database)
    }

    /// A fresh database on this server.
    ///
    /// # Panics
    /// When the server does not answer.
    pub async fn database(&self) -> TestDatabase {
        TestDatabase::create_on(self.connect_options("postgres"))
            .await
            .unwrap_or_else(|e| panic!("throwaway server on port {} does not answer: {e}", self.port))
    }

    /// Stops the server (`pg_ctl stop -m fast`): clients are disconnected, the port closes.
    pub fn stop(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data_dir(), "stop", "-m", "fast", "-w"])
    }

    /// Starts the server again on the same port and data directory.
    pub fn start_again(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
             -c full_page_writes=off -c shared_buffers=128MB",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).current_dir(&self.dir);
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut command = self.command(program);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a Ctrl-C aimed at the tests does not hit the server mid-run.
            command.process_group(0);
        }
        let output = command.output().map_err(|e| format!("cannot run {program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// A detached shell that waits for this process to exit, then stops the server and removes its directory.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let script = format!(
            "while [ -d /proc/{pid} ] && [ -d '{dir}' ]; do sleep 1; done; \
             '{pg_ctl}' -D '{dir}/data' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
            pg_ctl = self.bin.join("pg_ctl").display(),
        );
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            if let Some((uid, gid)) = self.user {
                command.uid(uid).gid(gid);
            }
        }
        command
            .spawn()
            .map_err(|e| format!("cannot start the server watchdog: {e}"))?;
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data_dir(), "stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory holding both `initdb` and `pg_ctl`: `PATH` first, then the newest `/usr/lib/postgresql/*/bin`.
fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Resolve symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) so the binaries
                // find their share directory.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                let real_dir = real.parent()?.to_path_buf();
                return Some(if has_both(&real_dir) { real_dir } else { dir });
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `None` when not root; else the uid/gid of `postgres` (or `nobody`), since initdb refuses to run as root.
fn unprivileged_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let Ok(c_name) = std::ffi::CString::new(name) else {
            continue;
        };
        // SAFETY: getpwnam reads a NUL-terminated name and returns a pointer into static storage (or null); we
        // copy the two fields out before any other call could overwrite it.
        let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
        if !entry.is_null() {
            // SAFETY: non-null, points to a valid passwd record.
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    Err("running as root, and neither a postgres nor a nobody user exists to run initdb as".into())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Moves `store`'s clock forward by `by`: every stored timestamp the store's rules read (task times, leases, log
/// times, worker heartbeats) is shifted back, so to the database's `now()` that much time has passed.
pub async fn advance_clock(store: &PgStore, by: Duration) {
    let by = PgInterval::try_from(by).expect("a test duration fits an interval");
    let mut conn = store.connection().await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "UPDATE tasks SET created_at = created_at - $1, updated_at = updated_at - $1, \
         started_at = started_at - $1, completed_at = completed_at - $1, lease_expires_at = lease_expires_at - $1",
    )
    .bind(by)
    .execute(&mut *tx)
    .await
    .expect("shift task times");
    // Webhook deliveries: only the due time, which the rules read (creation and attempt times are records).
    sqlx::query("UPDATE webhook_outbox SET next_attempt_at = next_attempt_at - $1")
        .bind(by)
        .execute(&mut *tx)
        .await
        .expect("shift webhook due times");
    sqlx::query("UPDATE task_logs SET timestamp = timestamp - $1")
        .bind(by)
        .execute(&mut *tx)
        .await
        .expect("shift log times");
    // registered_at is informational (no rule reads it) and stays put: the conformance suite compares a worker's
    // registered_at from before a clock move with one read after it.
    sqlx::query("UPDATE workers SET last_heartbeat = last_heartbeat - $1")
        .bind(by)
        .execute(&mut *tx)
        .await
        .expect("shift worker times");
    tx.commit().await.expect("commit");
}

/// The conformance-suite harness: every store gets a fresh database (kept until the harness is dropped).
#[derive(Debug, Clone)]
pub struct PgHarness {
    databases: Arc<Mutex<Vec<TestDatabase>>>,
    connections: u32,
}

impl Default for PgHarness {
    fn default() -> Self {
        Self::with_connections(PgStoreOptions::default().max_connections)
    }
}

impl PgHarness {
    /// A harness whose stores use the default number of connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// A harness whose stores open at most `connections` connections.
    pub fn with_connections(connections: u32) -> Self {
        Self {
            databases: Arc::default(),
            connections,
        }
    }
}

#[async_trait]
impl StoreHarness for PgHarness {
    type Store = PgStore;

    async fn store(&self, policy: LeasePolicy) -> PgStore {
        let database = TestDatabase::create().await;
        let store = database
            .store_with(policy, &PgStoreOptions::default().max_connections(self.connections))
            .await;
        self.databases.lock().expect("harness lock").push(database);
        store
    }

    async fn advance_clock(&self, store: &PgStore, by: Duration) {
        advance_clock(store, by).await;
    }

    /// Stores of their own on `store`'s database, one connection each: their claims are separate statements that
    /// race in the database, as those of server replicas (or of workers claiming straight from it) do.
    async fn replicas(&self, store: &PgStore, n: usize) -> Vec<PgStore> {
        let options = PgStoreOptions::default().max_connections(1);
        (0..n)
            .map(|_| {
                PgStore::from_options(store.connect_options().clone(), *store.policy(), &options)
                    .expect("the policy already fits the database")
            })
            .collect()
    }
}
