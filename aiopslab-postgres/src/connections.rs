//! A lean connection pool for the store's one-statement operations.
//!
//! Why not `sqlx::Pool`: it pings every connection when it is returned (a second round trip per statement) and
//! hands connections back through a spawned task, which together cost several times a trivial query on this
//! workload (measured: ~5x on `SELECT $1`). Every store operation here is a single autocommit statement, so the
//! pool can be simple and exact instead:
//!
//! - a semaphore bounds the connections; an acquire that cannot get one in time fails as
//!   [`StoreError::Unavailable`] (so a call fails fast while the database is down);
//! - idle connections are reused most-recent first and pinged only when they sat idle for a while;
//! - a connection goes back to the pool only after its statement completed, or failed with an error that leaves
//!   the session intact (a constraint violation, a serialization failure). A connection whose call was
//!   cancelled mid-statement, or that hit an I/O or protocol error, is dropped, and the next call opens a fresh
//!   one: that is how the store recovers from a database restart without restarting the process.
//! - a connection runs its prepared statements under PostgreSQL's default plan caching ([`Plans::Cached`]), or
//!   plans them for their actual parameters on every run ([`Plans::PerRun`], `plan_cache_mode =
//!   force_custom_plan`), which claims and finishes ask for. PostgreSQL fixes a generic plan after a statement's
//!   sixth run on a connection; made while `tasks` was small (a fresh or just-emptied database), it scanned the whole
//!   table on every claim and finish long after the table grew (measured with generic plans: one run of the
//!   benchmark's queue section did 33,319 sequential scans of `tasks`, 107 million rows read). Planning every
//!   statement costs CPU, though (log ingestion fell from ~170,000 to ~65,000 lines/s with it on for everything),
//!   so only those statements pay it. Idle connections already in the wanted mode are preferred; otherwise one
//!   statement switches a connection over.
//! - the claim asks for a third mode, [`Plans::Generic`]: one generic plan per connection (`plan_cache_mode =
//!   force_generic_plan`) with sequential scans ruled out (`enable_seqscan = off`). The fair-share claim is one
//!   large statement (experiments, their limits, the round-robin ranking): planning it cost ~1.1 ms, twice its
//!   execution, on every run. Planned once, with every access path forced onto an index, it cannot fall into the
//!   trap above: a plan made on an empty table still walks the queue's indexes once the table is large (checked
//!   by `EXPLAIN` on an empty database: every scan of the claim is an index scan). JIT is off in this mode: a
//!   generic plan's cost estimate of the claim passes `jit_above_cost` once the table holds tens of thousands of
//!   tasks, and compiling it took ~300 ms on every run (measured on 40,000 pending tasks of 8 experiments) for a
//!   statement that runs in about one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aiopslab_core::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::map_sqlx;

/// The pool: connect options, a bound, and the idle connections.
pub(crate) struct Connections {
    options: PgConnectOptions,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    acquire_timeout: Duration,
    ping_idle_after: Duration,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
    plans: Plans,
}

/// How a session plans the store's prepared statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plans {
    /// PostgreSQL's default: custom plans at first, then a cached generic plan when it looks as good.
    Cached,
    /// A custom plan for the actual parameters on every run.
    PerRun,
    /// One generic plan per statement and connection, never a sequential scan.
    Generic,
}

/// The settings [`Plans::Generic`] changes, back to what `RESET` would make them.
macro_rules! reset_planner {
    () => {
        "set_config('enable_seqscan', (SELECT reset_val FROM pg_settings WHERE name = 'enable_seqscan'), false), \
         set_config('jit', (SELECT reset_val FROM pg_settings WHERE name = 'jit'), false)"
    };
}

impl Plans {
    /// The statement that puts a session in this mode, from any other (`RESET` values: the server's own).
    fn setting(self) -> &'static str {
        match self {
            Plans::Cached => concat!(
                "SELECT set_config('plan_cache_mode', 'auto', false), ",
                reset_planner!()
            ),
            Plans::PerRun => concat!(
                "SELECT set_config('plan_cache_mode', 'force_custom_plan', false), ",
                reset_planner!()
            ),
            Plans::Generic => {
                "SELECT set_config('plan_cache_mode', 'force_generic_plan', false), \
                 set_config('enable_seqscan', 'off', false), set_config('jit', 'off', false)"
            }
        }
    }
}

impl Connections {
    /// A pool of at most `max` connections to `options`; connections open on demand.
    pub(crate) fn new(
        options: PgConnectOptions,
        max: u32,
        acquire_timeout: Duration,
        ping_idle_after: Duration,
    ) -> Self {
        Self {
            options,
            permits: Semaphore::new(max.max(1) as usize),
            idle: Mutex::new(Vec::new()),
            acquire_timeout,
            ping_idle_after,
        }
    }

    /// The connect options, for connections of other kinds (the listener, migrations).
    pub(crate) fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Opens a dedicated connection outside the pool's bound.
    pub(crate) async fn open(&self, op: &'static str) -> StoreResult<PgConnection> {
        match tokio::time::timeout(self.acquire_timeout, self.options.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(map_sqlx(op, error)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "database did not accept a connection in time for {op}"
            ))),
        }
    }

    /// A connection for one operation, waiting at most the acquire timeout.
    pub(crate) async fn get(&self, op: &'static str) -> StoreResult<Conn<'_>> {
        self.get_planning(op, Plans::Cached).await
    }

    /// A connection for one operation whose session plans statements as `plans` says.
    pub(crate) async fn get_planning(&self, op: &'static str, plans: Plans) -> StoreResult<Conn<'_>> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StoreError::Unavailable("the store is closed".into())),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no database connection free in time for {op}"
                )))
            }
        };
        let (mut conn, mode) = loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| {
                // The most recently used connection already planning this way, else the most recent one.
                let i = idle
                    .iter()
                    .rposition(|c| c.plans == plans)
                    .or(idle.len().checked_sub(1))?;
                Some(idle.remove(i))
            });
            let Some(Idle {
                mut conn,
                since,
                plans: mode,
            }) = idle
            else {
                let conn = match tokio::time::timeout_at(deadline, self.options.connect()).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(error)) => return Err(map_sqlx(op, error)),
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "database did not accept a connection in time for {op}"
                        )))
                    }
                };
                break (conn, Plans::Cached);
            };
            if since.elapsed() < self.ping_idle_after {
                break (conn, mode);
            }
            match tokio::time::timeout_at(deadline, conn.ping()).await {
                Ok(Ok(())) => break (conn, mode),
                // A dead idle connection (the server restarted, or closed it): drop it and try the next one.
                _ => tracing::debug!("dropping a dead idle connection"),
            }
        };
        if mode != plans {
            match tokio::time::timeout_at(deadline, conn.execute(plans.setting())).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(map_sqlx(op, error)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "database did not answer in time for {op}"
                    )))
                }
            }
        }
        Ok(Conn::new(conn, self, permit, plans))
    }

    /// Closes every idle connection and refuses new acquisitions.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<Idle> = self
            .idle
            .lock()
            .map(|mut idle| idle.drain(..).collect())
            .unwrap_or_default();
        for Idle { conn, .. } in idle {
            let _ = conn.close().await;
        }
    }

    fn put_back(&self, conn: PgConnection, plans: Plans) {
        if self.permits.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
                plans,
            });
        }
    }
}

/// A connection lent to one operation. It goes back to the pool when dropped only if its last statement
/// finished cleanly (see [`Conn::done`]).
pub(crate) struct Conn<'a> {
    conn: Option<PgConnection>,
    owner: &'a Connections,
    reusable: bool,
    plans: Plans,
    _permit: SemaphorePermit<'a>,
}

impl<'a> Conn<'a> {
    fn new(conn: PgConnection, owner: &'a Connections, permit: SemaphorePermit<'a>, plans: Plans) -> Self {
        Self {
            conn: Some(conn),
            owner,
            reusable: true,
            plans,
            _permit: permit,
        }
    }

    /// The connection, to run one statement on. Until [`Conn::done`] reports how it ended, the connection counts
    /// as mid-statement and is discarded if dropped.
    pub(crate) fn raw(&mut self) -> &mut PgConnection {
        self.reusable = false;
        self.conn
            .as_mut()
            .expect("a lent connection is only taken out when the lender is dropped")
    }

    /// Ends the statement: returns the connection to the pool unless the error broke the session, and maps the
    /// error for the caller.
    pub(crate) fn done<T>(mut self, op: &'static str, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        match result {
            Ok(value) => {
                self.reusable = true;
                Ok(value)
            }
            Err(error) => {
                self.reusable = session_survives(&error);
                Err(map_sqlx(op, error))
            }
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable {
                self.owner.put_back(conn, self.plans);
            }
        }
    }
}

/// True for errors after which the session is still usable: the server reported a statement-level failure and
/// went back to idle (constraint violations, bad values, serialization failures, lock timeouts, cancels).
fn session_survives(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code();
    let code = code.as_deref().unwrap_or("");
    ["22", "23", "40", "42", "55"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "57014"
}
