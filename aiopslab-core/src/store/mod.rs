//! The store: durable state, and the only place state changes, cut into
//! role traits, one per consumer.
//!
//! | trait | who asks for it | methods |
//! |---|---|---|
//! | [`WorkerQueue`] | the worker runtime (and `HttpStore`, a remote worker's store) | register, heartbeat, deregister, claim, extend lease, append logs, save trajectory, finish, subscribe |
//! | [`TaskApi`] | the client API | create (one, many, a batch), get, list, cancel, logs, trajectory, a batch group's record (its refills) |
//! | [`FleetView`] | the operator's reads | get and list workers, stats |
//! | [`Housekeeping`] | the sweeper ([`run_sweeper`](crate::run_sweeper)) | sweep |
//! | [`EpisodeExport`] | the RL dataset export | one page of episodes |
//! | [`WebhookOutbox`] | the webhook deliverer | claim due deliveries, record an attempt, a task's deliveries |
//!
//! [`TaskStore`] is all six, blanket-implemented: a type that implements
//! every role is a `TaskStore`, and `Arc<dyn TaskStore>` coerces to any of
//! them (`Arc<dyn WorkerQueue>`, ...). A store implements only the roles it
//! offers: a remote worker's `HttpStore` is a `WorkerQueue` and nothing else.
//! [`StoreParts`] joins one implementation per role into a full store.
//! Capabilities a store may or may not have are traits of their own, offered
//! through a method of the role that returns `Option` (apalis-style): a
//! [`WorkerQueue`] may offer [`FinalReports`] (a run's end in one write), a
//! [`TaskApi`] may offer [`Experiments`] (experiments' concurrency limits).
//!
//! The rules every role keeps:
//!
//! - Every method is one atomic, conditional operation.
//! - Worker writes carry a [`LeaseToken`](crate::LeaseToken) and are refused
//!   with [`StoreError::LeaseLost`] once the
//!   task is no longer running under that attempt, so a zombie worker can
//!   never overwrite a newer state.
//! - Time comes from the store's own clock.
//! - Every store [sanitizes](crate::sanitize) what it persists on the way in
//!   (a NUL becomes U+FFFD, ...), so a value reads back the same from any
//!   store and no write fails for a character a database cannot hold.
//!
//! The conformance suite (feature `testkit`) has one suite per role.

mod experiments;
mod export;
mod final_report;
mod fleet;
mod outbox;
mod parts;
mod task_api;
mod worker_queue;

pub use experiments::Experiments;
pub use export::{EpisodeExport, ExportRequest};
pub use final_report::{FinalReport, FinalReports};
pub use fleet::{FleetView, Housekeeping};
pub use outbox::WebhookOutbox;
pub use parts::StoreParts;
pub use task_api::{TaskApi, TaskQuery};
pub use worker_queue::{ClaimRequest, LeaseState, WorkerQueue, MAX_CLAIM_BATCH};

use crate::error::StoreError;

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A full store: every role. Blanket-implemented for any type that
/// implements all six, so it is one bound for code that wants everything
/// (the server, the bundled examples) and never implemented by hand.
///
/// `MemoryStore` (here) and `PgStore` (aiopslab-postgres) are full stores.
pub trait TaskStore: WorkerQueue + TaskApi + FleetView + Housekeeping + EpisodeExport + WebhookOutbox {}

impl<T> TaskStore for T where
    T: WorkerQueue + TaskApi + FleetView + Housekeeping + EpisodeExport + WebhookOutbox + ?Sized
{
}

/// The role traits and their request types, to import at once
/// (`use aiopslab_core::store::prelude::*;`): calling a store method on a
/// concrete store type, or through an associated type, needs its trait in
/// scope (through `dyn TaskStore` or an `S: TaskStore` bound it does not).
pub mod prelude {
    pub use super::{
        ClaimRequest, EpisodeExport, Experiments, ExportRequest, FleetView, Housekeeping, StoreResult, TaskApi,
        TaskQuery, TaskStore, WebhookOutbox, WorkerQueue,
    };
}
