//! Route handlers, one file per resource group. Each handler carries its
//! `#[utoipa::path]` so `/openapi.json` is generated from the code.

pub mod batches;
pub mod events;
pub mod experiments;
pub mod export;
pub mod groups;
pub mod leases;
pub mod system;
pub mod tasks;
pub mod webhooks;
pub mod workers;
