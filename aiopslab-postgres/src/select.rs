//! [`open_store`]: the store a server runs on, chosen by whether a database URL is given.

use std::sync::Arc;

use aiopslab_core::{LeasePolicy, MemoryOptions, MemoryStore, StoreError, TaskStore};

use crate::{PgStore, PgStoreOptions};

/// Which store to open: the embedded in-memory one (nothing survives the process) or PostgreSQL.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// The embedded [`MemoryStore`], with its retention bound.
    Memory(MemoryOptions),
    /// [`PgStore`] on the database at `url`, its migrations applied when it opens.
    Postgres {
        /// A `postgres://` URL.
        url: String,
        /// Pool size, coalescing and counting options.
        options: PgStoreOptions,
    },
}

impl StoreChoice {
    /// PostgreSQL when `database_url` is given, else the embedded store with `memory` options: what a server's
    /// `--database-url` / `DATABASE_URL` means.
    pub fn from_url(database_url: Option<&str>, options: PgStoreOptions, memory: MemoryOptions) -> Self {
        match database_url {
            Some(url) => Self::Postgres {
                url: url.to_owned(),
                options,
            },
            None => Self::Memory(memory),
        }
    }
}

/// An open store and what it is.
pub struct OpenedStore {
    /// The store, for the API and the in-process workers alike.
    pub store: Arc<dyn TaskStore>,
    /// `"memory"` or `"postgres"`: the name `/health` and `/metrics` report.
    pub kind: &'static str,
}

/// Opens the chosen store under `policy`. PostgreSQL is connected and migrated (the embedded migrations, which
/// also run cleanly after the same files applied by hand with `psql`); the embedded store logs a warning that
/// nothing it holds survives the process.
///
/// Errors: the database is unreachable or refuses the migrations ([`StoreError`] says which).
pub async fn open_store(choice: &StoreChoice, policy: LeasePolicy) -> Result<OpenedStore, StoreError> {
    match choice {
        StoreChoice::Postgres { url, options } => {
            let store = PgStore::connect_with(url, policy, options).await?;
            store.migrate().await?;
            tracing::info!("using PostgreSQL; migrations applied");
            Ok(OpenedStore {
                store: Arc::new(store),
                kind: "postgres",
            })
        }
        StoreChoice::Memory(options) => {
            tracing::warn!(
                "NO DATABASE CONFIGURED: using the embedded in-memory store. Every task, log and trajectory is LOST \
                 when this process exits. Pass --database-url or set DATABASE_URL for a durable queue."
            );
            Ok(OpenedStore {
                store: Arc::new(MemoryStore::with_options(policy, *options)),
                kind: "memory",
            })
        }
    }
}
