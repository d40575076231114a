//! A local DynamoDB for tests: starts `moto_server` on a free loopback port, waits until it
//! answers, builds clients for it, and stops it by PID.
//!
//! ```no_run
//! # async fn example() {
//! use eventflow_store_dynamodb::testkit;
//!
//! // `None` (after printing SKIPPED) when neither moto_server nor EVENTFLOW_MOTO_ENDPOINT is
//! // available; panics instead when CI=true.
//! let Some(store) = testkit::fresh_store().await else { return };
//! // ... a store with its own, freshly created tables ...
//! # let _ = store;
//! # }
//! ```
//!
//! Every test gets its own uniquely named tables ([`fresh_store`]), so tests run in parallel on one
//! server without seeing each other's data.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use eventflow_testkit::moto::{self, Role};

use crate::{DynamoDbConfig, DynamoDbEventStore};

/// The DynamoDB endpoint this process's tests share: `eventflow-testkit`'s shared moto for data,
/// through its serialising proxy ([`eventflow_testkit::moto::Moto::serial_endpoint`] says why),
/// or `EVENTFLOW_MOTO_ENDPOINT` when set. `None` after a loud SKIPPED line when there is no moto
/// (a panic when `CI=true`).
pub fn shared_endpoint() -> Option<&'static str> {
    moto::shared(Role::Data).map(moto::Endpoints::serial)
}

/// The same server without the proxy: requests run concurrently (for a single writer, e.g. a
/// benchmark, where the proxy's serialisation would be measured too).
pub fn shared_direct_endpoint() -> Option<&'static str> {
    moto::shared(Role::Data).map(moto::Endpoints::direct)
}

/// A client for a local endpoint: static test credentials, region `us-east-1`, at most 2 attempts
/// and short timeouts, so a dead emulator fails a test quickly instead of being retried for seconds.
pub fn local_client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "eventflow-testkit",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// A configuration naming two fresh tables, `eventflow-test-<uuid>-events` and `-meta`.
pub fn unique_config() -> DynamoDbConfig {
    let name = format!("eventflow-test-{}", uuid::Uuid::new_v4().simple());
    DynamoDbConfig::new(format!("{name}-events"), format!("{name}-meta"))
}

/// A store on [`shared_endpoint`] with freshly created tables of its own, or `None` when the tests
/// are skipped (see [`shared_endpoint`]).
pub async fn fresh_store() -> Option<DynamoDbEventStore> {
    fresh_store_with(unique_config()).await
}

/// Like [`fresh_store`] with a configuration of your own (its tables are created if missing).
pub async fn fresh_store_with(config: DynamoDbConfig) -> Option<DynamoDbEventStore> {
    let endpoint = shared_endpoint()?;
    let store = DynamoDbEventStore::new(local_client(endpoint), config);
    store
        .create_tables()
        .await
        .unwrap_or_else(|e| panic!("creating test tables on {endpoint}: {e:?}"));
    Some(store)
}
