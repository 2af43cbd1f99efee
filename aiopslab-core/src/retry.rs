//! Retrying store calls on transient failures, with capped exponential
//! backoff and jitter.
//!
//! Every store call the worker runtime makes goes through
//! [`retry_transient`] (or [`retry_with`] when more errors are worth waiting
//! out, such as a live worker holding our id). Jitter spreads the retries of
//! a fleet of workers so a store coming back is not hit by all of them in
//! the same instant.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::error::StoreError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// How much the wait grows after each failed try (2.0 doubles it).
    pub multiplier: f64,
    /// How many tries in all, the first included; `None` retries until the
    /// call succeeds or fails permanently.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    /// 100 ms, doubling, capped at 10 s, at most 8 tries (about 20 s in all).
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            max_attempts: Some(8),
        }
    }
}

impl RetryPolicy {
    /// The same policy with no limit on the number of tries.
    pub fn unbounded(self) -> Self {
        Self {
            max_attempts: None,
            ..self
        }
    }

    /// The same policy limited to `attempts` tries in all.
    pub fn with_max_attempts(self, attempts: u32) -> Self {
        Self {
            max_attempts: Some(attempts.max(1)),
            ..self
        }
    }

    /// The backoff sequence this policy produces.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            next: self.initial_backoff,
        }
    }
}

/// Successive waits of a [`RetryPolicy`]: each one is the current base with
/// "equal jitter" (somewhere between half the base and the whole of it),
/// the base growing by the multiplier up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    /// The next wait, jittered.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.policy.max_backoff);
        let grown = base.as_secs_f64() * self.policy.multiplier.max(1.0);
        self.next = Duration::from_secs_f64(grown.min(self.policy.max_backoff.as_secs_f64()));
        let half = base / 2;
        half + half.mul_f64(jitter_fraction())
    }
}

/// A number in `[0, 1)`, different on every call: hashing with a fresh
/// randomly keyed [`RandomState`] needs no extra dependency and no seed.
fn jitter_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `op` until it succeeds, fails with an error `should_retry` refuses,
/// or the policy's tries run out (then the last error is returned). Each
/// retry is logged at `warn` with `op_name`, the try number and the wait.
pub async fn retry_with<T, E, F, Fut, R>(
    policy: &RetryPolicy,
    op_name: &str,
    mut should_retry: R,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    R: FnMut(&E) -> bool,
{
    let mut backoff = policy.backoff();
    let mut attempt: u32 = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let out_of_tries = policy.max_attempts.is_some_and(|max| attempt >= max);
                if out_of_tries || !should_retry(&error) {
                    return Err(error);
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    op = op_name,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    %error,
                    "store call failed; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Runs a store call, retrying it while it fails with a transient error
/// ([`StoreError::is_transient`]). Permanent errors return at once.
///
/// ```
/// # async fn demo(store: &dyn aiopslab_core::TaskStore) -> Result<(), aiopslab_core::StoreError> {
/// use aiopslab_core::retry::{retry_transient, RetryPolicy};
/// let stats = retry_transient(&RetryPolicy::default(), "stats", || store.stats()).await?;
/// # let _ = stats; Ok(()) }
/// ```
pub async fn retry_transient<T, F, Fut>(policy: &RetryPolicy, op_name: &str, op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    retry_with(policy, op_name, StoreError::is_transient, op).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_inside_bounds() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
            multiplier: 2.0,
            max_attempts: None,
        };
        let mut backoff = policy.backoff();
        let bases = [100u64, 200, 400, 800, 800, 800];
        for base in bases {
            let delay = backoff.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = retry_transient(&RetryPolicy::default(), "op", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_return_at_once_and_tries_are_capped() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_transient(&RetryPolicy::default(), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Internal("bug".into()))
        })
        .await;
        assert!(matches!(result, Err(StoreError::Internal(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_transient(&RetryPolicy::default().with_max_attempts(3), "op", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Unavailable("down".into()))
        })
        .await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
