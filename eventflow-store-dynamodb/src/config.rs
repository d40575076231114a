//! Table names, outbox sharding and retry settings.

use std::time::Duration;

use eventflow_core::Backoff;

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
    retry: Backoff,
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
            retry: default_retry(),
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

    /// How transient failures that the SDK does not retry itself are retried (default: 6 attempts,
    /// 20 ms doubling to at most 1 s, full jitter).
    pub fn with_retry(mut self, retry: Backoff) -> Self {
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
    pub fn retry(&self) -> &Backoff {
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

/// The store's default retry of what the SDK's own retries do not cover (transactions cancelled by
/// `TransactionConflict` or throttling, unprocessed batch items): 6 attempts, 20 ms doubling to at
/// most 1 s, with full jitter so that writers that collided do not collide again.
///
/// Throttling, 5xx and connection failures of a single call are retried by the SDK's retry policy
/// (configure it with `aws_config::retry::RetryConfig`); when the SDK gives up they surface as
/// [`Error::Transient`](eventflow_core::Error::Transient).
fn default_retry() -> Backoff {
    Backoff::new(6, Duration::from_millis(20), Duration::from_secs(1)).with_full_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_retry_is_jittered_and_capped() {
        let retry = DynamoDbConfig::default().retry().to_owned();
        assert_eq!(retry, default_retry());
        assert_eq!(retry.jitter, eventflow_core::Jitter::Full);
        assert!((0..100).all(|_| retry.delay(30) <= Duration::from_secs(1)));
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
