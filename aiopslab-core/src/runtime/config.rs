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
#[non_exhaustive]
pub struct WorkerConfig {
    /// The worker id (`worker-001-kind`); one live worker per id.
    pub worker_id: String,
    /// Names this run of the process: a fresh UUID from [`new`](Self::new).
    /// Sent in the registration and every heartbeat, so a restart under the
    /// same id takes the id over at once (its predecessor's tasks go back to
    /// the queue) instead of waiting for the old registration to go offline.
    pub instance_id: String,
    /// Only tasks of this backend type are claimed.
    pub backend_type: String,
    /// Parallel slots and the problems accepted.
    pub capabilities: WorkerCapabilities,
    /// Free-form registration metadata (`host`, `version`, `kind_cluster`).
    /// The runtime adds `backend` (the backend's name) and `version` (this
    /// crate's) when they are missing.
    pub metadata: JsonObject,
    /// How often the worker heartbeats, which also extends its leases.
    /// Keep it well under the store's lease duration: at most a third of
    /// it, so that a lost heartbeat or two does not lose a lease (checked
    /// by [`validate`](Self::validate) when `lease_duration` is known;
    /// [`with_lease_duration`](Self::with_lease_duration) derives it).
    /// Default 10 s, for the stores' default lease of 60 s.
    pub heartbeat_interval: Duration,
    /// The store's lease duration (`LeasePolicy::lease_duration`), when
    /// the worker knows it: an in-process worker does, a remote one is told
    /// by its operator. Only used to check `heartbeat_interval`. Default
    /// `None` (unknown, not checked).
    pub lease_duration: Option<Duration>,
    /// How long to wait before asking again when the queue was empty (a
    /// store event for our backend type wakes the worker sooner), when the
    /// store pushes no events. Default 2 s.
    pub poll_interval: Duration,
    /// The same wait while the store pushes events (`store_events` and a
    /// [`subscribe`](crate::WorkerQueue::subscribe) that is open): polling
    /// is then only the safety net, since a new task wakes the worker and a
    /// store whose channel drops says so ([`StoreEvent::Resync`](crate::StoreEvent::Resync),
    /// every 2 s while it is down). A fleet of a thousand idle workers
    /// polling every 2 s made 500 empty claims a second. Default 30 s.
    pub pushed_poll_interval: Duration,
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
    /// Most log entries of one run held in memory while the store cannot
    /// take them (an outage): they are sent, in order, once it can again.
    /// Beyond this the oldest are dropped, and the stored log gets a
    /// warning entry saying how many at that point. Default 10 000.
    pub log_buffer_entries: usize,
    /// The same bound in bytes (message, action and details of each entry).
    /// The newest entry is always kept. Default 8 MiB.
    pub log_buffer_bytes: usize,
    /// Once a run has ended, how long its outcome waits for held log
    /// entries to reach the store before they are dropped (with a warning)
    /// and the outcome is reported anyway. Default 5 min.
    pub log_flush_timeout: Duration,
    /// Backoff for store calls failing with transient errors. Reports of
    /// finished runs retry without a limit on tries (see the runtime docs).
    pub retry: RetryPolicy,
    /// React to the wake-ups the store pushes
    /// ([`subscribe`](crate::WorkerQueue::subscribe)): claim new work and stop
    /// cancelled runs at once. `false` relies on polling and heartbeats
    /// alone (where a proxy will not keep a stream open; benchmarks measure
    /// the difference). Default `true`.
    pub store_events: bool,
}

impl WorkerConfig {
    /// The heartbeat interval of [`WorkerConfig::new`].
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

    /// How many heartbeats must fit in one lease (see `heartbeat_interval`).
    pub const HEARTBEATS_PER_LEASE: u32 = 3;

    /// A configuration with every default: one slot, all problems, the
    /// timings documented on each field.
    pub fn new(worker_id: impl Into<String>, backend_type: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            backend_type: backend_type.into(),
            capabilities: WorkerCapabilities::default(),
            metadata: JsonObject::new(),
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            lease_duration: None,
            poll_interval: Duration::from_secs(2),
            pushed_poll_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            report_grace: Duration::from_secs(15),
            log_batch_size: 100,
            log_flush_interval: Duration::from_millis(250),
            log_buffer_entries: 10_000,
            log_buffer_bytes: 8 * 1024 * 1024,
            log_flush_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            store_events: true,
        }
    }

    /// The same configuration with `n` parallel slots.
    pub fn with_max_parallel_tasks(mut self, n: u32) -> Self {
        self.capabilities.max_parallel_tasks = n;
        self
    }

    /// The same configuration for a store whose leases last `lease`: it is
    /// recorded in `lease_duration`, and the heartbeat interval is lowered
    /// to a third of it when it was longer (never raised).
    ///
    /// ```
    /// use std::time::Duration;
    /// use aiopslab_core::WorkerConfig;
    /// let config = WorkerConfig::new("worker-001", "default").with_lease_duration(Duration::from_secs(6));
    /// assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn with_lease_duration(mut self, lease: Duration) -> Self {
        self.lease_duration = Some(lease);
        let most = lease / Self::HEARTBEATS_PER_LEASE;
        if !most.is_zero() && self.heartbeat_interval > most {
            self.heartbeat_interval = most;
        }
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
            instance_id: Some(self.instance_id.clone()),
        }
    }

    /// Checks the registration fields and that every interval is usable.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.registration("").validate()?;
        for (field, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("poll_interval", self.poll_interval),
            ("pushed_poll_interval", self.pushed_poll_interval),
            ("log_flush_interval", self.log_flush_interval),
        ] {
            if value.is_zero() {
                return Err(ValidationError::new(field, "must be greater than zero"));
            }
        }
        if self.log_batch_size == 0 {
            return Err(ValidationError::new("log_batch_size", "must be at least 1"));
        }
        if self.log_buffer_entries == 0 || self.log_buffer_bytes == 0 {
            let field = if self.log_buffer_entries == 0 {
                "log_buffer_entries"
            } else {
                "log_buffer_bytes"
            };
            return Err(ValidationError::new(field, "must be at least 1"));
        }
        if let Some(lease) = self.lease_duration {
            if lease.is_zero() {
                return Err(ValidationError::new("lease_duration", "must be greater than zero"));
            }
            if self.heartbeat_interval * Self::HEARTBEATS_PER_LEASE > lease {
                return Err(ValidationError::new(
                    "heartbeat_interval",
                    format!(
                        "{} s is too long for leases of {} s: heartbeats extend the leases, so they must come \
                         at least {} times per lease (at most {} s apart), or healthy runs are lost as worker_lost",
                        seconds(self.heartbeat_interval),
                        seconds(lease),
                        Self::HEARTBEATS_PER_LEASE,
                        seconds(lease / Self::HEARTBEATS_PER_LEASE)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `10` for whole seconds, `1.667` otherwise.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.3}", duration.as_secs_f64())
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
        let bad = config.clone().with_max_parallel_tasks(0);
        assert_eq!(bad.validate().unwrap_err().field, "capabilities.max_parallel_tasks");
        let mut bad = config.clone();
        bad.log_buffer_entries = 0;
        assert_eq!(bad.validate().unwrap_err().field, "log_buffer_entries");
        let mut bad = config;
        bad.log_buffer_bytes = 0;
        assert_eq!(bad.validate().unwrap_err().field, "log_buffer_bytes");
    }

    #[test]
    fn the_heartbeat_must_fit_three_times_in_a_known_lease() {
        let secs = Duration::from_secs;
        // Unknown lease: nothing to check.
        let config = WorkerConfig::new("w", "default");
        assert_eq!(config.lease_duration, None);
        assert!(config.validate().is_ok());

        // The defaults fit the stores' default lease of 60 s.
        let config = WorkerConfig::new("w", "default").with_lease_duration(secs(60));
        assert_eq!(config.heartbeat_interval, secs(10));
        assert!(config.validate().is_ok());

        // A short lease lowers the heartbeat to a third of it.
        let config = WorkerConfig::new("w", "default").with_lease_duration(secs(5));
        assert_eq!(config.heartbeat_interval, secs(5) / 3);
        assert!(config.validate().is_ok());

        // An explicit heartbeat that does not fit is refused, naming both values.
        let mut config = WorkerConfig::new("w", "default");
        config.lease_duration = Some(secs(5));
        let error = config.validate().unwrap_err();
        assert_eq!(error.field, "heartbeat_interval");
        assert!(
            error.message.contains("10 s") && error.message.contains("5 s"),
            "{error}"
        );
        // Exactly a third is accepted; a hair more is not.
        config.heartbeat_interval = secs(20);
        config.lease_duration = Some(secs(60));
        assert!(config.validate().is_ok());
        config.heartbeat_interval = secs(20) + Duration::from_millis(1);
        assert_eq!(config.validate().unwrap_err().field, "heartbeat_interval");
        config.lease_duration = Some(Duration::ZERO);
        assert_eq!(config.validate().unwrap_err().field, "lease_duration");
    }
}
