//! Login throttling: a rate per account and per client address (`governor`'s GCRA limiters), and
//! a growing wait after consecutive wrong passwords for one account. Each refusal says when to
//! come back; none lasts longer than [`LoginLimits::max_wait`], so an attacker can slow a user
//! down but never lock them out for good. Usernames that do not exist are limited exactly like
//! those that do, so the answers reveal nothing about which accounts exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventflow_core::extension::lock;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How hard logins are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoginLimits {
    /// Logins per minute for one username, after a burst of the same size.
    pub(crate) per_account_per_minute: NonZeroU32,
    /// Logins per minute from one client address, after a burst of the same size.
    pub(crate) per_address_per_minute: NonZeroU32,
    /// Consecutive wrong passwords for one account before it must wait.
    pub(crate) free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub(crate) first_wait: Duration,
    /// The longest wait.
    pub(crate) max_wait: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_account_per_minute: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            per_address_per_minute: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            free_failures: 3,
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// The most accounts whose recent failures are remembered; beyond it the oldest are forgotten
/// (an attacker cycling usernames must not grow memory without bound).
const MAX_TRACKED_ACCOUNTS: usize = 100_000;

/// Consecutive failures of one account and when it may try again.
struct Failures {
    count: u32,
    wait_until: Instant,
}

/// Decides whether a login may be tried now.
pub(crate) struct LoginGate {
    limits: LoginLimits,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    failures: Mutex<HashMap<String, Failures>>,
    clock: DefaultClock,
}

impl LoginGate {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        LoginGate {
            limits,
            per_account: DefaultKeyedRateLimiter::keyed(Quota::per_minute(
                limits.per_account_per_minute,
            )),
            per_address: DefaultKeyedRateLimiter::keyed(Quota::per_minute(
                limits.per_address_per_minute,
            )),
            failures: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Admits a login for `username` from `client`, or says how long to wait.
    pub(crate) fn admit(&self, username: &str, client: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let account = self.truncated(username);
        if let Some(failures) = lock(&self.failures).get(&account)
            && failures.wait_until > now
        {
            return Err(failures.wait_until - now);
        }
        if let Some(address) = client {
            self.per_address
                .check_key(&address)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now()))?;
        }
        self.per_account
            .check_key(&account)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// A wrong password for `username`: past the free failures, it waits, twice as long each time.
    pub(crate) fn failed(&self, username: &str) {
        let account = self.truncated(username);
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED_ACCOUNTS && !failures.contains_key(&account) {
            let now = Instant::now();
            failures.retain(|_, f| f.wait_until > now);
            if failures.len() >= MAX_TRACKED_ACCOUNTS {
                failures.clear();
            }
            self.per_account.retain_recent();
            self.per_address.retain_recent();
        }
        let entry = failures.entry(account).or_insert(Failures {
            count: 0,
            wait_until: Instant::now(),
        });
        entry.count += 1;
        if let Some(over) = entry.count.checked_sub(self.limits.free_failures + 1) {
            let wait = self
                .limits
                .first_wait
                .saturating_mul(1 << over.min(16))
                .min(self.limits.max_wait);
            entry.wait_until = Instant::now() + wait;
        }
    }

    /// The right password: the account's failures are forgotten.
    pub(crate) fn succeeded(&self, username: &str) {
        lock(&self.failures).remove(&self.truncated(username));
    }

    /// A username as a key: a client may send a long one, but the limiter keeps only its start.
    fn truncated(&self, username: &str) -> String {
        username.chars().take(256).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> LoginLimits {
        LoginLimits {
            per_account_per_minute: NonZeroU32::new(per_minute).expect("non-zero"),
            per_address_per_minute: NonZeroU32::new(per_minute).expect("non-zero"),
            free_failures: 2,
            first_wait: Duration::from_millis(100),
            max_wait: Duration::from_millis(300),
        }
    }

    #[test]
    fn an_account_is_limited_after_its_burst_and_others_are_not() {
        let gate = LoginGate::new(limits(3));
        for _ in 0..3 {
            assert!(gate.admit("user@example.com", None).is_ok());
        }
        let wait = gate.admit("user@example.com", None).expect_err("limited");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(gate.admit("other@example.com", None).is_ok());
    }

    #[test]
    fn an_address_is_limited_across_usernames() {
        let gate = LoginGate::new(limits(3));
        let address = Some(IpAddr::from([10, 0, 0, 7]));
        for i in 0..3 {
            assert!(gate.admit(&format!("guess-{i}"), address).is_ok());
        }
        assert!(gate.admit("guess-4", address).is_err());
        assert!(
            gate.admit("guess-4", Some(IpAddr::from([10, 0, 0, 8])))
                .is_ok()
        );
    }

    #[test]
    fn failures_make_the_account_wait_longer_each_time_but_never_for_good() {
        let gate = LoginGate::new(limits(1000));
        for _ in 0..2 {
            gate.failed("user@example.com");
            assert!(
                gate.admit("user@example.com", None).is_ok(),
                "free failures"
            );
        }
        gate.failed("user@example.com");
        let first = gate.admit("user@example.com", None).expect_err("waits");
        gate.failed("user@example.com");
        let second = gate.admit("user@example.com", None).expect_err("waits");
        assert!(second > first, "{second:?} after {first:?}");
        for _ in 0..10 {
            gate.failed("user@example.com");
        }
        let capped = gate.admit("user@example.com", None).expect_err("waits");
        assert!(capped <= Duration::from_millis(300));
        std::thread::sleep(capped);
        assert!(
            gate.admit("user@example.com", None).is_ok(),
            "the wait ends"
        );
        gate.succeeded("user@example.com");
        gate.failed("user@example.com");
        assert!(
            gate.admit("user@example.com", None).is_ok(),
            "success resets"
        );
    }
}
