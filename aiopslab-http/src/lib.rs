//! Placeholder: filled by its own issue.

pub mod client;
