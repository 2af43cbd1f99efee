//! Connecting: pool sizing and timeouts, and the embedded migrations.
//!
//! The store's connections are tuned for a queue: a connection is pinged before use only when it sat idle for a
//! while (a ping on every use would double the round trips of the claim), and acquiring gives up after a few
//! seconds so callers get [`StoreError::Unavailable`](aiopslab_core::StoreError::Unavailable) while the database
//! is down instead of hanging; connections reopen by themselves when the database comes back.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The embedded migrations (`migrations/` at the workspace root), run by [`crate::PgStore::migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The default of [`PgStoreOptions::exact_count_limit`]: counting this many index entries takes a few
/// milliseconds, so a listing's `total` stays exact wherever it is cheap.
pub const DEFAULT_EXACT_COUNT_LIMIT: u64 = 10_000;

/// How a [`crate::PgStore`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStoreOptions {
    /// Most connections the store opens (the LISTEN connection is separate). Default 10.
    pub max_connections: u32,
    /// How long a call waits for a free (or new) connection before it fails as unavailable. Default 5 s.
    pub acquire_timeout: Duration,
    /// A connection idle longer than this is pinged before it is handed out. Default 10 s.
    pub ping_idle_after: Duration,
    /// Server-side limit for one statement (`statement_timeout`); `None` keeps the server's. Default 30 s.
    pub statement_timeout: Option<Duration>,
    /// Group commit: concurrent creates, claims and finishes that arrive while a statement of their kind is running
    /// share the next statement and commit (see the crate docs). `false` runs one statement per call. Default
    /// `true`.
    pub coalesce_writes: bool,
    /// Most calls one coalesced statement carries. Default 64.
    pub max_batch: usize,
    /// The `total` of a listing filtered by more than status and backend type (which are read exactly from the
    /// maintained counts) is counted exactly up to this many matches; above it the store reports the planner's
    /// estimate (at least this limit + 1) with `total_is_estimate: true`, so a page of a popular problem does not
    /// count a million rows. Default [`DEFAULT_EXACT_COUNT_LIMIT`].
    pub exact_count_limit: u64,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            ping_idle_after: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
            coalesce_writes: true,
            max_batch: 64,
            exact_count_limit: DEFAULT_EXACT_COUNT_LIMIT,
        }
    }
}

impl PgStoreOptions {
    /// Sets [`Self::max_connections`].
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`Self::coalesce_writes`].
    pub fn coalesce_writes(mut self, on: bool) -> Self {
        self.coalesce_writes = on;
        self
    }

    /// Sets [`Self::max_batch`] (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`Self::exact_count_limit`].
    pub fn exact_count_limit(mut self, n: u64) -> Self {
        self.exact_count_limit = n;
        self
    }

    /// Sets [`Self::acquire_timeout`].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connect options for `url` with these settings applied (application name, statement timeout).
    pub fn connect_options(&self, url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        let connect: PgConnectOptions = url.parse()?;
        Ok(self.apply(connect))
    }

    /// Applies these settings (application name, statement timeout) to connect options.
    pub fn apply(&self, connect: PgConnectOptions) -> PgConnectOptions {
        let connect = connect.application_name("aiopslab");
        match self.statement_timeout {
            Some(timeout) => connect.options([("statement_timeout", format!("{}", timeout.as_millis()))]),
            None => connect,
        }
    }

    /// Settings for a `sqlx` pool of your own beside the store (for ad-hoc queries): the same size and timeouts.
    pub fn pool_options(&self) -> PgPoolOptions {
        let ping_after = self.ping_idle_after;
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_after {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }
}
