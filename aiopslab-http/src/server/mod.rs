//! The HTTP server: an axum [`Router`](axum::Router) over the roles of any
//! [`TaskStore`](aiopslab_core::TaskStore) (each route asks its role: the
//! task API, the worker queue, the fleet view, the export, the outbox; see
//! [`ApiState`]) and a [`Scheduler`](aiopslab_core::Scheduler).
//!
//! - Public API (client token when configured): `POST/GET /tasks`,
//!   `POST /tasks/batch`, `GET/DELETE /tasks/{id}`, `GET /tasks/{id}/logs`
//!   (`?follow=true` for Server-Sent Events), `GET /tasks/{id}/trajectory`,
//!   `GET /tasks/{id}/webhooks`,
//!   `POST /tasks/{id}/webhooks/{delivery_id}/redeliver`, `GET /groups/{group_id}`,
//!   `GET /trajectories/export` (JSON Lines), `GET /workers`,
//!   `GET /workers/{id}`, `GET /problems`, `GET /stats`, `GET /metrics`.
//! - Worker protocol (worker token when configured): `POST /workers/register`,
//!   `POST /workers/heartbeat`, `POST /workers/claim`,
//!   `POST /workers/{id}/deregister`, `POST /tasks/{id}/lease`,
//!   `POST /tasks/{id}/logs`, `PUT /tasks/{id}/trajectory`,
//!   `POST /tasks/{id}/finish`.
//! - Never guarded: `GET /health`. Docs (guarded only with
//!   [`ApiConfig::protect_docs`]): `/openapi.json`, `/docs`, `/redoc`.
//!
//! Build it with [`router`] from an [`ApiState`] (store, scheduler,
//! [`ApiConfig`]). Every error is `{"error", "code", "details"}` (see
//! [`ApiError`]) — also the ones hyper answers by itself for a request it
//! cannot parse (400, 414, 431), when the router is served on a
//! [`JsonErrorsListener`] (as [`app::serve`](crate::app::serve) does).

mod auth;
mod config;
mod docs;
mod error;
mod extract;
mod idempotency;
mod listener;
mod metrics;
mod observed;
mod openapi;
mod patterns;
mod query_guard;
mod router;
mod routes;
mod sse;
mod state;
mod upload;
mod wakeups;
pub mod wire;

pub use auth::constant_time_eq;
pub use config::ApiConfig;
pub use error::{ApiError, ErrorBody};
pub use idempotency::{fingerprint, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use listener::{JsonErrorsIo, JsonErrorsListener};
pub use metrics::Metrics;
pub use observed::ObservedStore;
pub use openapi::ApiDoc;
pub use router::router;
pub use state::ApiState;
pub use wakeups::{Wakeups, FANOUT};
