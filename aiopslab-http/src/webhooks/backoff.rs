//! When to try a failed webhook delivery again: exponential backoff with
//! jitter, so receivers that come back after an outage are not hit by every
//! pending delivery at the same instant.
//!
//! The defaults (1 s doubling, capped at 1 h, jittered to 75–100 %) with
//! [`WebhookConfig::DEFAULT_MAX_ATTEMPTS`](super::WebhookConfig::DEFAULT_MAX_ATTEMPTS)
//! (44) tries keep a delivery alive for at least 24 h 6 min and at most
//! 32 h 8 min ([`Backoff::retry_window`]): a receiver that is down for a
//! coffee break, a night or a day still gets its notification.

use std::time::Duration;

/// The share of a delay that jitter may take away: a delay is between
/// `1 - JITTER` and all of the base delay.
const JITTER: f64 = 0.25;

/// Exponential backoff: `initial × factor^(attempt-1)`, capped at `max`,
/// then jittered down to between three quarters and all of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure (1 s).
    pub initial: Duration,
    /// The growth per failure (2).
    pub factor: f64,
    /// The longest delay (1 h).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Self::DEFAULT_MAX,
        }
    }
}

impl Backoff {
    /// The default cap of a delay: 1 h.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(3600);

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

    /// The jittered delay after `attempt` failed: uniformly between three
    /// quarters and all of [`base_delay`](Self::base_delay), in whole
    /// milliseconds. `seed` picks the point (any value; different deliveries
    /// should pass different seeds).
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let unit = (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        self.jittered(attempt, unit)
    }

    /// The delay after `attempt` failed at jitter point `unit` (0: the
    /// shortest, 1: the base delay), in whole milliseconds (stores keep
    /// intervals at microsecond precision at best).
    fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        let jittered = self
            .base_delay(attempt)
            .mul_f64(1.0 - JITTER + JITTER * unit.clamp(0.0, 1.0));
        Duration::from_millis(u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX))
    }

    /// How long a delivery of `attempts` tries keeps being retried, from the
    /// first try to the last, as (shortest, longest) over every jitter: the
    /// sum of the `attempts - 1` delays between them (the requests' own time
    /// comes on top).
    pub fn retry_window(&self, attempts: u32) -> (Duration, Duration) {
        let mut shortest = Duration::ZERO;
        let mut longest = Duration::ZERO;
        let mut failed = 1;
        while failed < attempts {
            if self.base_delay(failed) >= self.max {
                // Every remaining delay is the cap.
                let rest = attempts - failed;
                shortest = shortest.saturating_add(self.jittered(failed, 0.0).saturating_mul(rest));
                longest = longest.saturating_add(self.max.saturating_mul(rest));
                break;
            }
            shortest = shortest.saturating_add(self.jittered(failed, 0.0));
            longest = longest.saturating_add(self.jittered(failed, 1.0));
            failed += 1;
        }
        (shortest, longest)
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
        assert_eq!(backoff.base_delay(12), Duration::from_secs(2048));
        assert_eq!(backoff.base_delay(13), Duration::from_secs(3600));
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_three_quarters_and_all() {
        let backoff = Backoff::default();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..1000u64 {
            let d = backoff.delay(3, seed);
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(4), "{d:?}");
            assert_eq!(d.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 100, "jitter spreads the delays");
        for seed in 0..1000u64 {
            let d = backoff.delay(40, seed);
            assert!(
                d >= Duration::from_secs(2700) && d <= Duration::from_secs(3600),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_window_sums_the_delays() {
        let backoff = Backoff::default();
        assert_eq!(backoff.retry_window(0), (Duration::ZERO, Duration::ZERO));
        assert_eq!(backoff.retry_window(1), (Duration::ZERO, Duration::ZERO));
        // 1 + 2 + 4 s.
        assert_eq!(
            backoff.retry_window(4),
            (Duration::from_millis(5250), Duration::from_secs(7))
        );
        // 1 + 2 + ... + 2048 s = 4095 s, then 31 × 1 h.
        let (shortest, longest) = backoff.retry_window(44);
        assert_eq!(longest, Duration::from_secs(4095 + 31 * 3600));
        assert_eq!(shortest, Duration::from_millis(3_071_250 + 31 * 2_700_000));
        // The cap is reached in closed form however many attempts.
        let (_, huge) = backoff.retry_window(u32::MAX);
        assert!(huge > Duration::from_secs(3600 * 24 * 365), "{huge:?}");
        // A brute-force sum of the jittered delays agrees.
        let brute: Duration = (1..44).map(|a| backoff.jittered(a, 0.0)).sum();
        assert_eq!(brute, shortest);
    }
}
