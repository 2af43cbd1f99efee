//! Lease and liveness timings a store enforces.

use std::time::Duration;

/// How long leases last and when silence means death.
///
/// A store is built with one policy; every replica of a server sharing a
/// database should use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeasePolicy {
    /// How long a claim or a heartbeat keeps a task leased to its worker.
    pub lease_duration: Duration,
    /// A worker silent this long is marked offline and may be replaced by a
    /// new registration under the same id.
    pub worker_offline_after: Duration,
    /// The sweep marks a running task `timeout` this long after
    /// `started_at + timeout_minutes` if its worker did not report first.
    pub timeout_grace: Duration,
    /// A new task becomes claimable only this long after its creation.
    /// Zero (the default) hands it out at once. A server may set a short
    /// window so a client that creates a task and reads it back sees it
    /// `pending`, as the quickstart's end-to-end script expects.
    pub dispatch_delay: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(60),
            worker_offline_after: Duration::from_secs(90),
            timeout_grace: Duration::from_secs(60),
            dispatch_delay: Duration::ZERO,
        }
    }
}

impl LeasePolicy {
    /// The same policy with leases of `lease_duration`.
    pub fn with_lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self
    }

    /// The same policy, marking workers offline after `worker_offline_after` of silence.
    pub fn with_worker_offline_after(mut self, worker_offline_after: Duration) -> Self {
        self.worker_offline_after = worker_offline_after;
        self
    }

    /// The same policy with a `timeout_grace` after a task's deadline.
    pub fn with_timeout_grace(mut self, timeout_grace: Duration) -> Self {
        self.timeout_grace = timeout_grace;
        self
    }

    /// The same policy, holding new tasks `dispatch_delay` before they are claimable.
    pub fn with_dispatch_delay(mut self, dispatch_delay: Duration) -> Self {
        self.dispatch_delay = dispatch_delay;
        self
    }
}
