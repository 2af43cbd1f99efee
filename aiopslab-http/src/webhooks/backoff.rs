//! When to try a failed webhook delivery again: exponential backoff with
//! jitter, so receivers that come back after an outage are not hit by every
//! pending delivery at the same instant.

use std::time::Duration;

/// Exponential backoff: `initial × factor^(attempt-1)`, capped at `max`,
/// then jittered down to between half and all of it ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure (1 s).
    pub initial: Duration,
    /// The growth per failure (2).
    pub factor: f64,
    /// The longest delay (10 min).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before the next try after `attempt` (1-based) failed, with no
    /// jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let seconds = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let max = self.max.as_secs_f64();
        if !seconds.is_finite() || seconds >= max {
            self.max
        } else {
            Duration::from_secs_f64(seconds.max(0.0))
        }
    }

    /// The jittered delay after `attempt` failed: uniformly between half and
    /// all of [`base_delay`](Self::base_delay), in whole milliseconds. `seed`
    /// picks the point (any value; different deliveries should pass different
    /// seeds).
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let base = self.base_delay(attempt);
        let unit = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
                                                                          // Whole milliseconds: stores keep intervals at microsecond precision at best.
        let jittered = base.mul_f64(0.5 + 0.5 * unit);
        Duration::from_millis(u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A fast, well-mixed 64-bit hash (SplitMix64's finalizer): enough to spread
/// retries, not meant for anything secret.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.base_delay(1), Duration::from_secs(1));
        assert_eq!(backoff.base_delay(2), Duration::from_secs(2));
        assert_eq!(backoff.base_delay(4), Duration::from_secs(8));
        assert_eq!(backoff.base_delay(10), Duration::from_secs(512));
        assert_eq!(backoff.base_delay(11), Duration::from_secs(600));
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_half_and_all() {
        let backoff = Backoff::default();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..1000u64 {
            let d = backoff.delay(3, seed);
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4), "{d:?}");
            assert_eq!(d.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 100, "jitter spreads the delays");
    }
}
