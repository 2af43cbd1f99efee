//! # aiopslab-postgres
//!
//! [`PgStore`], a [`TaskStore`](aiopslab_core::TaskStore) on PostgreSQL: the durable queue of aiopslab.
//!
//! - **One statement per transition.** The claim is a CTE that picks the best pending task with
//!   `FOR UPDATE SKIP LOCKED` and moves it to running — by priority, then the experiments in turn, never beyond
//!   an experiment's `max_running` (see the `claim` module for why a limit holds under racing claimers, and
//!   [`Experiments`](aiopslab_core::Experiments) on [`PgStore`] for the limits); every worker write is fenced by
//!   the lease token
//!   (`WHERE id = $1 AND attempt = $2 AND status = 'running'`); the sweep is conditional bulk updates. Several
//!   server replicas can share one database.
//! - **Group commit.** Creates, claims and finishes that arrive at one store while a statement of their kind is
//!   running share the next statement and its commit; each call is still answered on its own, and only once its
//!   statement committed ([`PgStoreOptions::coalesce_writes`], [`PgStore::write_batches`]).
//! - **Wake-ups.** NOTIFY on new tasks (sent by the store right after the insert commits), and from triggers on
//!   requeued tasks and cancel requests; [`PgStore`]'s
//!   [`subscribe`](aiopslab_core::WorkerQueue::subscribe) turns them into [`StoreEvent`](aiopslab_core::StoreEvent)s
//!   from a listener that reconnects by itself.
//! - **Schema.** `migrations/*.sql` at the workspace root, embedded ([`MIGRATOR`], [`PgStore::migrate`]); the
//!   files also run by hand with `psql`, and the migrator runs cleanly afterwards.
//! - **Time** is always the database's `now()`.
//!
//! - **Choosing a store.** [`open_store`] opens PostgreSQL (migrated) or the embedded store, as a server's
//!   `--database-url` says.
//!
//! With feature `testing`, the `testing` module provisions throwaway databases for tests.

#![warn(missing_docs)]

mod announce;
mod batches;
mod claim;
mod coalesce;
mod config;
mod connections;
mod error;
mod experiments;
mod export;
mod final_report;
mod jsonb;
mod lease;
mod listener;
mod logs;
mod rows;
mod select;
mod sql;
mod stats;
mod store;
mod sweep;
mod tasks;
mod totals;
mod trajectories;
mod webhooks;
mod workers;

#[cfg(feature = "testing")]
pub mod testing;

pub use coalesce::BatchCounts;
pub use config::{PgStoreOptions, DEFAULT_EXACT_COUNT_LIMIT, MIGRATOR};
pub use select::{open_store, OpenedStore, StoreChoice};
pub use sql::{CANCEL_CHANNEL, TASK_AVAILABLE_CHANNEL};
pub use store::{PgStore, WriteBatches};
