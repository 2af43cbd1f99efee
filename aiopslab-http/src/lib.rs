//! # aiopslab-http
//!
//! The HTTP face of aiopslab:
//!
//! - [`server`]: the axum router — public API, worker protocol, OpenAPI
//!   document, Swagger UI and ReDoc served with no internet, Prometheus
//!   metrics, optional bearer tokens.
//! - [`client`]: `HttpStore`, a `WorkerQueue` over the worker protocol, so a
//!   worker on another machine runs the same runtime against the server;
//!   `ApiClient`, a Rust client of the public API.
//! - [`app`]: `serve`, the router on a listener with the sweeper beside it
//!   and a graceful stop, for server programs.
//! - [`webhooks`]: the completion-webhook deliverer that drains the store's
//!   outbox (signed, retried with backoff, safe with several replicas).

#![warn(missing_docs)]

pub mod app;
pub mod client;
pub mod server;
pub mod webhooks;
