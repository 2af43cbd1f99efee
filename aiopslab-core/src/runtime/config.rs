//! [`WorkerConfig`]: who a worker is, what it runs, and its timings.

use std::time::Duration;

use serde_json::Value;

use crate::error::ValidationError;
use crate::retry::RetryPolicy;
use crate::task::JsonObject;
use crate::worker::{WorkerCapabilities, WorkerRegistration};

/// Settings of a [`WorkerRuntime`](super::WorkerRuntime). Build one with
/// [`WorkerConfig::new`] and change the public fields as needed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker id (`worker-001-kind`); one live worker per id.
    pub worker_id: String,
    /// Only tasks of this backend type are claimed.
    pub backend_type: String,
    /// Parallel slots and the problems accepted.
    pub capabilities: WorkerCapabilities,
    /// Free-form registration metadata (`host`, `version`, `kind_cluster`).
    /// The runtime adds `backend` (the backend's name) and `version` (this
    /// crate's) when they are missing.
    pub metadata: JsonObject,
    /// How often the worker heartbeats, which also extends its leases.
    /// Keep it well under the store's lease duration. Default 10 s.
    pub heartbeat_interval: Duration,
    /// How long to wait before asking again when the queue was empty (a
    /// store event for our backend type wakes the worker sooner). Default 2 s.
    pub poll_interval: Duration,
    /// At shutdown, how long running tasks may go on before they are
    /// stopped and reported `failed` with code `worker_shutdown`. Default 30 s.
    pub shutdown_grace: Duration,
    /// How long a backend gets to return after its cancellation token fired
    /// (cancel, shutdown, lost lease) or its deadline passed, before the
    /// runtime abandons the run and reports for it. Default 10 s.
    pub cancel_grace: Duration,
    /// At shutdown, after `shutdown_grace` and `cancel_grace`, how long the
    /// runtime keeps retrying to report results to an unreachable store
    /// before giving up (the store's sweep then requeues or fails those
    /// tasks as `worker_lost`). Default 15 s.
    pub report_grace: Duration,
    /// Most log entries sent in one store call. Default 100.
    pub log_batch_size: usize,
    /// Longest time a log entry waits for its batch to fill. Default 250 ms.
    pub log_flush_interval: Duration,
    /// Backoff for store calls failing with transient errors. Reports of
    /// finished runs retry without a limit on tries (see the runtime docs).
    pub retry: RetryPolicy,
}

impl WorkerConfig {
    /// A configuration with every default: one slot, all problems, the
    /// timings documented on each field.
    pub fn new(worker_id: impl Into<String>, backend_type: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            backend_type: backend_type.into(),
            capabilities: WorkerCapabilities::default(),
            metadata: JsonObject::new(),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            report_grace: Duration::from_secs(15),
            log_batch_size: 100,
            log_flush_interval: Duration::from_millis(250),
            retry: RetryPolicy::default(),
        }
    }

    /// The same configuration with `n` parallel slots.
    pub fn with_max_parallel_tasks(mut self, n: u32) -> Self {
        self.capabilities.max_parallel_tasks = n;
        self
    }

    /// The registration this worker sends, metadata completed with the
    /// backend's name and this crate's version.
    pub fn registration(&self, backend_name: &str) -> WorkerRegistration {
        let mut metadata = self.metadata.clone();
        metadata
            .entry("backend")
            .or_insert_with(|| Value::String(backend_name.to_string()));
        metadata
            .entry("version")
            .or_insert_with(|| Value::String(env!("CARGO_PKG_VERSION").to_string()));
        WorkerRegistration {
            id: self.worker_id.clone(),
            backend_type: self.backend_type.clone(),
            capabilities: self.capabilities.clone(),
            metadata,
        }
    }

    /// Checks the registration fields and that every interval is usable.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.registration("").validate()?;
        for (field, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("poll_interval", self.poll_interval),
            ("log_flush_interval", self.log_flush_interval),
        ] {
            if value.is_zero() {
                return Err(ValidationError::new(field, "must be greater than zero"));
            }
        }
        if self.log_batch_size == 0 {
            return Err(ValidationError::new("log_batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let config = WorkerConfig::new("worker-001-kind", "default");
        assert!(config.validate().is_ok());
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        let registration = config.registration("simulated");
        assert_eq!(registration.metadata["backend"], "simulated");

        let mut bad = config.clone();
        bad.poll_interval = Duration::ZERO;
        assert_eq!(bad.validate().unwrap_err().field, "poll_interval");
        let bad = config.with_max_parallel_tasks(0);
        assert_eq!(bad.validate().unwrap_err().field, "capabilities.max_parallel_tasks");
    }
}
