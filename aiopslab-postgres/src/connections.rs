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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aiopslab_core::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
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
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(Idle { mut conn, since }) = idle else {
                let conn = match tokio::time::timeout_at(deadline, self.options.connect()).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(error)) => return Err(map_sqlx(op, error)),
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "database did not accept a connection in time for {op}"
                        )))
                    }
                };
                return Ok(Conn::new(conn, self, permit));
            };
            if since.elapsed() < self.ping_idle_after {
                return Ok(Conn::new(conn, self, permit));
            }
            match tokio::time::timeout_at(deadline, conn.ping()).await {
                Ok(Ok(())) => return Ok(Conn::new(conn, self, permit)),
                // A dead idle connection (the server restarted, or closed it): drop it and try the next one.
                _ => tracing::debug!("dropping a dead idle connection"),
            }
        }
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

    fn put_back(&self, conn: PgConnection) {
        if self.permits.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
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
    _permit: SemaphorePermit<'a>,
}

impl<'a> Conn<'a> {
    fn new(conn: PgConnection, owner: &'a Connections, permit: SemaphorePermit<'a>) -> Self {
        Self {
            conn: Some(conn),
            owner,
            reusable: true,
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
                self.owner.put_back(conn);
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
