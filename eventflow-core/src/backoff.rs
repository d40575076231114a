//! [`Backoff`]: how many times to try, and how long to wait between tries.
//!
//! One type serves every retry in eventflow: a subscription's redeliveries, a publisher's
//! retries of throttled entries, a saga's compensation retries (persisted in its definition, so
//! the type is serialisable) and the DynamoDB store's retries of cancelled transactions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff: `max_attempts` tries in all, the wait after the `n`-th failure doubling
/// from `initial_backoff` up to `max_backoff`, optionally with full jitter.
///
/// Serialised in camelCase with durations in milliseconds:
/// `{"maxAttempts":5,"initialBackoffMs":200,"maxBackoffMs":30000}` (plus `"jitter":"full"`
/// when jitter is on).
///
/// ```
/// use std::time::Duration;
/// use eventflow_core::Backoff;
///
/// let backoff = Backoff::new(4, Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(2), Duration::from_millis(200));
/// assert_eq!(backoff.delay(3), Duration::from_millis(300), "capped");
///
/// let jittered = backoff.with_full_jitter();
/// assert!(jittered.delay(2) <= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Backoff {
    /// Tries in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure.
    #[serde(with = "millis", rename = "initialBackoffMs")]
    pub initial_backoff: Duration,
    /// The longest wait between tries.
    #[serde(with = "millis", rename = "maxBackoffMs")]
    pub max_backoff: Duration,
    /// Whether waits are randomised.
    #[serde(default, skip_serializing_if = "Jitter::is_none")]
    pub jitter: Jitter,
}

/// How a [`Backoff`]'s waits are randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Jitter {
    /// The wait is exactly the doubling, capped delay: predictable, as a saga's timers are.
    #[default]
    None,
    /// The wait is uniformly random between zero and the capped delay, so that writers that
    /// failed together do not retry together (AWS's "full jitter").
    Full,
}

impl Jitter {
    fn is_none(&self) -> bool {
        *self == Jitter::None
    }
}

impl Default for Backoff {
    /// 5 tries, 200 ms doubling to at most 30 s, no jitter.
    fn default() -> Self {
        Backoff::new(5, Duration::from_millis(200), Duration::from_secs(30))
    }
}

impl Backoff {
    /// `max_attempts` tries (at least 1), waits doubling from `initial_backoff` up to
    /// `max_backoff` (at least `initial_backoff`), no jitter.
    pub const fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Backoff {
            max_attempts: if max_attempts == 0 { 1 } else { max_attempts },
            initial_backoff,
            max_backoff: if max_backoff.as_nanos() < initial_backoff.as_nanos() {
                initial_backoff
            } else {
                max_backoff
            },
            jitter: Jitter::None,
        }
    }

    /// One try, no retry.
    pub const fn none() -> Self {
        Backoff::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// The same backoff with full jitter: each wait uniformly random up to the capped delay.
    pub const fn with_full_jitter(mut self) -> Self {
        self.jitter = Jitter::Full;
        self
    }

    /// Whether a `failures`-th failure leaves tries to make.
    pub fn allows_retry_after(&self, failures: u32) -> bool {
        failures < self.max_attempts
    }

    /// The wait after the `failure`-th failure (1-based): `initial_backoff * 2^(failure - 1)`,
    /// capped at `max_backoff`, then jittered if jitter is on.
    pub fn delay(&self, failure: u32) -> Duration {
        let factor = 2u32.saturating_pow(failure.saturating_sub(1).min(20));
        let ceiling = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(crate::event_id::random_u64() % nanos.saturating_add(1))
            }
        }
    }
}

/// Serde helpers for a [`Duration`] as whole milliseconds: `#[serde(with = "eventflow_core::backoff::millis")]`.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as whole milliseconds (saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_stay_capped() {
        let backoff = Backoff::new(5, Duration::from_millis(10), Duration::from_millis(50));
        let delays: Vec<_> = (1..=5).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(50));
        assert!(backoff.allows_retry_after(4));
        assert!(!backoff.allows_retry_after(5));
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling_and_varies() {
        let backoff = Backoff::new(5, Duration::from_millis(10), Duration::from_millis(50))
            .with_full_jitter();
        let draws: Vec<_> = (0..200).map(|_| backoff.delay(3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(40)));
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter varies");
        assert_eq!(Backoff::none().delay(1), Duration::ZERO);
        assert_eq!(Backoff::none().max_attempts, 1);
    }

    #[test]
    fn arguments_are_clamped() {
        let backoff = Backoff::new(0, Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.max_attempts, 1);
        assert_eq!(backoff.max_backoff, Duration::from_secs(2));
    }

    #[test]
    fn wire_shape_is_camel_case_milliseconds() {
        let backoff = Backoff::new(3, Duration::from_millis(250), Duration::from_secs(4));
        let json = serde_json::to_value(backoff).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"maxAttempts": 3, "initialBackoffMs": 250, "maxBackoffMs": 4000})
        );
        let back: Backoff = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, backoff);
        let jittered = serde_json::to_value(backoff.with_full_jitter()).unwrap_or_default();
        assert_eq!(jittered["jitter"], "full");
    }
}
