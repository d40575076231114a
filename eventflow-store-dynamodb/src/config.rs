//! Table names, outbox sharding and retry settings.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Environment variable naming the events table.
pub const EVENTS_TABLE_ENV: &str = "EVENTFLOW_DYNAMODB_EVENTS_TABLE";
/// Environment variable naming the meta table (idempotency keys, outbox, snapshots).
pub const META_TABLE_ENV: &str = "EVENTFLOW_DYNAMODB_META_TABLE";
/// Environment variable with the number of outbox shards.
pub const OUTBOX_SHARDS_ENV: &str = "EVENTFLOW_DYNAMODB_OUTBOX_SHARDS";

/// Events table name used when none is configured.
pub const DEFAULT_EVENTS_TABLE: &str = "eventflow-events";
/// Meta table name used when none is configured.
pub const DEFAULT_META_TABLE: &str = "eventflow-meta";

/// Where and how the store keeps its data.
///
/// The endpoint, region and credentials are not here: they belong to the SDK client, configured by
/// `aws-config` (which honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB` for emulators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbConfig {
    events_table: String,
    meta_table: String,
    outbox_shards: u32,
    retry: RetryPolicy,
    any_attempts: u32,
    max_outbox_payload_bytes: Option<u64>,
}

impl DynamoDbConfig {
    /// A configuration with the given events and meta table names, one outbox shard and the
    /// default retry policy.
    pub fn new(events_table: impl Into<String>, meta_table: impl Into<String>) -> Self {
        DynamoDbConfig {
            events_table: events_table.into(),
            meta_table: meta_table.into(),
            outbox_shards: 1,
            retry: RetryPolicy::default(),
            any_attempts: 10,
            max_outbox_payload_bytes: Some(eventflow_core::limits::OUTBOX_PAYLOAD_BYTES),
        }
    }

    /// Reads the table names from `EVENTFLOW_DYNAMODB_EVENTS_TABLE` and
    /// `EVENTFLOW_DYNAMODB_META_TABLE` (defaults `eventflow-events` and `eventflow-meta`) and the
    /// outbox shard count from `EVENTFLOW_DYNAMODB_OUTBOX_SHARDS` (default 1).
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let shards = std::env::var(OUTBOX_SHARDS_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        DynamoDbConfig::new(
            var(EVENTS_TABLE_ENV, DEFAULT_EVENTS_TABLE),
            var(META_TABLE_ENV, DEFAULT_META_TABLE),
        )
        .with_outbox_shards(shards)
    }

    /// Spreads outbox entries over `shards` partitions (`outbox#0` ..), so that appends to many
    /// streams do not all write one partition. A stream's entries always go to the same shard
    /// (FNV-1a of the stream id), which keeps them in order. Change the count only while the outbox
    /// is empty. Values below 1 are treated as 1.
    pub fn with_outbox_shards(mut self, shards: u32) -> Self {
        self.outbox_shards = shards.max(1);
        self
    }

    /// How transient failures that the SDK does not retry itself are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many times an append with [`ExpectedVersion::Any`](eventflow_core::ExpectedVersion::Any)
    /// re-reads the stream's version and tries again when another writer got there first
    /// (default 10; at least 1).
    pub fn with_any_attempts(mut self, attempts: u32) -> Self {
        self.any_attempts = attempts.max(1);
        self
    }

    /// The largest payload of an event appended with an outbox entry (default
    /// [`OUTBOX_PAYLOAD_BYTES`](eventflow_core::limits::OUTBOX_PAYLOAD_BYTES), what EventBridge
    /// and SQS carry); `None` for no limit (a bus that takes more, such as Pub/Sub). A larger
    /// payload is refused at append rather than parked by the relay.
    pub fn with_max_outbox_payload_bytes(mut self, max: Option<u64>) -> Self {
        self.max_outbox_payload_bytes = max;
        self
    }

    /// The largest payload of an event appended with an outbox entry.
    pub fn max_outbox_payload_bytes(&self) -> Option<u64> {
        self.max_outbox_payload_bytes
    }

    /// The events table's name.
    pub fn events_table(&self) -> &str {
        &self.events_table
    }

    /// The meta table's name.
    pub fn meta_table(&self) -> &str {
        &self.meta_table
    }

    /// The number of outbox shards.
    pub fn outbox_shards(&self) -> u32 {
        self.outbox_shards
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Attempts of an `Any` append.
    pub fn any_attempts(&self) -> u32 {
        self.any_attempts
    }
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig::new(DEFAULT_EVENTS_TABLE, DEFAULT_META_TABLE)
    }
}

/// Exponential backoff with full jitter, for what the SDK's own retries do not cover: transactions
/// cancelled by `TransactionConflict` or throttling, and unprocessed batch items.
///
/// Throttling, 5xx and connection failures of a single call are retried by the SDK's retry policy
/// (configure it with `aws_config::retry::RetryConfig`); when the SDK gives up they surface as
/// [`Error::Transient`](eventflow_core::Error::Transient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts (at least 1), sleeping a random time up to
    /// `base_delay * 2^n` (capped at `max_delay`) before retry `n`.
    pub fn new(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay,
            max_delay: max_delay.max(base_delay),
        }
    }

    /// Never retries.
    pub fn none() -> Self {
        RetryPolicy::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// The most attempts made, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before retry `retry` (1-based): uniformly random in `0..=min(max, base * 2^(retry-1))`.
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

impl Default for RetryPolicy {
    /// 6 attempts, 20 ms base, 1 s cap.
    fn default() -> Self {
        RetryPolicy::new(6, Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// A random number from the standard library's per-process random hash keys.
fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy::new(5, Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..100 {
            assert!(policy.delay(1) <= Duration::from_millis(10));
            assert!(policy.delay(3) <= Duration::from_millis(40));
            assert!(policy.delay(30) <= Duration::from_millis(50));
        }
        assert_eq!(RetryPolicy::none().delay(1), Duration::ZERO);
        assert_eq!(RetryPolicy::none().max_attempts(), 1);
    }

    #[test]
    fn shards_are_at_least_one() {
        assert_eq!(
            DynamoDbConfig::default()
                .with_outbox_shards(0)
                .outbox_shards(),
            1
        );
        assert_eq!(
            DynamoDbConfig::default().events_table(),
            DEFAULT_EVENTS_TABLE
        );
    }
}
