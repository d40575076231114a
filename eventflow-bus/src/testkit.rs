//! Local emulators for tests and benchmarks: `moto_server` (EventBridge + SQS) and Google's
//! Pub/Sub emulator, each started on a free loopback port, waited for, and stopped by PID.
//!
//! ```no_run
//! # async fn example() {
//! use eventflow_bus::testkit;
//!
//! // `None` (after printing SKIPPED) when no emulator can be had; panics instead when CI=true.
//! let Some(bus) = testkit::fresh_eventbridge_bus().await else { return };
//! let Some(pubsub) = testkit::fresh_pubsub_bus().await else { return };
//! # let _ = (bus, pubsub);
//! # }
//! ```
//!
//! One emulator per test process, shared by its tests; every bus gets uniquely named resources
//! (event bus, queue prefix, topic), so tests run in parallel without seeing each other. An
//! endpoint from the environment is used instead of starting one: `EVENTFLOW_MOTO_ENDPOINT` for moto,
//! `PUBSUB_EMULATOR_HOST` for Pub/Sub. The emulators are `eventflow-testkit`'s.

use std::collections::HashMap;
use std::time::Duration;

use eventflow_testkit::moto::{self, Role};

/// The project id the tests use on the emulator.
pub const PUBSUB_PROJECT: &str = "eventflow-test";

/// The moto endpoint (`http://127.0.0.1:PORT`) this process's messaging tests share
/// ([`eventflow_testkit::moto::shared`]). `None` after a loud SKIPPED line when there is no moto
/// (a panic when `CI=true`).
pub fn moto_endpoint() -> Option<&'static str> {
    moto::shared(Role::Messaging).map(moto::Endpoints::direct)
}

/// The Pub/Sub emulator host (`127.0.0.1:PORT`) this process shares
/// ([`eventflow_testkit::pubsub::emulator_host`]).
pub fn pubsub_emulator_host() -> Option<&'static str> {
    eventflow_testkit::pubsub::emulator_host()
}

/// The settings [`from_lookup`](crate::from_lookup) reads for a bus of its own on the emulator of
/// `adapter` (an empty map for [`Adapter::Local`](crate::Adapter::Local)), with the adapters'
/// defaults otherwise. `None` when the emulator is missing (after a loud SKIPPED line; a panic
/// when `CI=true`).
pub fn adapter_settings(adapter: crate::Adapter) -> Option<HashMap<&'static str, String>> {
    let mut env = HashMap::new();
    match adapter {
        crate::Adapter::EventBridge => {
            env.insert("EVENT_BUS_ADAPTER", "eventbridge".to_owned());
            env.insert("EVENT_BUS_NAME", unique_name("ef-bus"));
            env.insert("EVENTFLOW_RESOURCE_PREFIX", unique_name("ef") + "-");
            env.insert("EVENTFLOW_SQS_WAIT_SECONDS", "1".to_owned());
            env.insert("AWS_REGION", "us-east-1".to_owned());
            env.insert("AWS_ENDPOINT_URL", moto_endpoint()?.to_owned());
            env.insert("AWS_ACCESS_KEY_ID", "testing".to_owned());
            env.insert("AWS_SECRET_ACCESS_KEY", "testing".to_owned());
        }
        crate::Adapter::PubSub => {
            env.insert("EVENT_BUS_ADAPTER", "pubsub".to_owned());
            env.insert("PUBSUB_PROJECT_ID", PUBSUB_PROJECT.to_owned());
            env.insert("PUBSUB_TOPIC", unique_name("ef-topic"));
            env.insert("PUBSUB_EMULATOR_HOST", pubsub_emulator_host()?.to_owned());
        }
        _ => {}
    }
    Some(env)
}

/// A name unique to this call: `prefix` and a random suffix.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[cfg(feature = "sqs")]
mod aws_clients {
    use std::time::Duration;

    use aws_sdk_sqs::config::retry::RetryConfig;
    use aws_sdk_sqs::config::timeout::TimeoutConfig;
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

    /// Settings every local AWS client shares: static test credentials, `us-east-1`, at most 2
    /// attempts and short connect timeouts, so a dead emulator fails a test fast.
    fn parts() -> (Credentials, Region, RetryConfig, TimeoutConfig) {
        (
            Credentials::new("testing", "testing", None, None, "eventflow-bus-testkit"),
            Region::new("us-east-1"),
            RetryConfig::standard().with_max_attempts(2),
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
    }

    /// An SQS client for a local endpoint.
    pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
        let (credentials, region, retry, timeout) = parts();
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(credentials)
                .endpoint_url(endpoint)
                .retry_config(retry)
                .timeout_config(timeout)
                .build(),
        )
    }

    /// An EventBridge client config builder for a local endpoint (add interceptors to it).
    #[cfg(feature = "eventbridge")]
    pub fn eventbridge_config(endpoint: &str) -> aws_sdk_eventbridge::config::Builder {
        let (credentials, region, retry, timeout) = parts();
        aws_sdk_eventbridge::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .endpoint_url(endpoint)
            .retry_config(retry)
            .timeout_config(timeout)
    }

    /// An EventBridge client for a local endpoint.
    #[cfg(feature = "eventbridge")]
    pub fn eventbridge_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::from_conf(eventbridge_config(endpoint).build())
    }
}

#[cfg(feature = "sqs")]
pub use aws_clients::sqs_client;
#[cfg(feature = "eventbridge")]
pub use aws_clients::{eventbridge_client, eventbridge_config};

/// The configuration [`fresh_eventbridge_bus`] uses: a unique bus name and resource prefix, a
/// 2 s long poll (so `unsubscribe` is quick).
#[cfg(feature = "eventbridge")]
pub fn unique_eventbridge_config() -> crate::eventbridge::EventBridgeConfig {
    let name = unique_name("ef-test");
    crate::eventbridge::EventBridgeConfig::new(&name)
        .with_resource_prefix(format!("{name}-"))
        .with_wait_time(Duration::from_secs(2))
}

/// An EventBridge bus on the shared moto with its own event bus (created) and resource prefix, or
/// `None` when the tests are skipped (see [`moto_endpoint`]).
#[cfg(feature = "eventbridge")]
pub async fn fresh_eventbridge_bus() -> Option<crate::eventbridge::EventBridgeBus> {
    fresh_eventbridge_bus_with(unique_eventbridge_config()).await
}

/// Like [`fresh_eventbridge_bus`] with a configuration of your own.
#[cfg(feature = "eventbridge")]
pub async fn fresh_eventbridge_bus_with(
    config: crate::eventbridge::EventBridgeConfig,
) -> Option<crate::eventbridge::EventBridgeBus> {
    let endpoint = moto_endpoint()?;
    let bus = crate::eventbridge::EventBridgeBus::new(
        eventbridge_client(endpoint),
        sqs_client(endpoint),
        config,
    );
    bus.ensure_event_bus()
        .await
        .unwrap_or_else(|e| panic!("creating a test event bus on {endpoint}: {e:?}"));
    Some(bus)
}

/// An SQS work queue on the shared moto with a unique name, created with `options`, or `None`
/// when the tests are skipped.
#[cfg(feature = "sqs")]
pub async fn fresh_sqs_queue(
    options: &crate::sqs::SqsQueueOptions,
) -> Option<crate::sqs::SqsWorkQueue> {
    let endpoint = moto_endpoint()?;
    let queue = crate::sqs::SqsWorkQueue::provision(
        sqs_client(endpoint),
        &unique_name("ef-test-queue"),
        options,
    )
    .await
    .unwrap_or_else(|e| panic!("creating a test queue on {endpoint}: {e:?}"));
    Some(queue)
}

/// A Pub/Sub bus on the shared emulator with its own topic (created), or `None` when the tests are
/// skipped (see [`pubsub_emulator_host`]).
#[cfg(feature = "pubsub")]
pub async fn fresh_pubsub_bus() -> Option<crate::pubsub::PubSubBus> {
    fresh_pubsub_bus_with(crate::pubsub::PubSubConfig::new(unique_name(
        "ef-test-topic",
    )))
    .await
}

/// Like [`fresh_pubsub_bus`] with a configuration of your own.
#[cfg(feature = "pubsub")]
pub async fn fresh_pubsub_bus_with(
    config: crate::pubsub::PubSubConfig,
) -> Option<crate::pubsub::PubSubBus> {
    let host = pubsub_emulator_host()?;
    let bus = crate::pubsub::PubSubBus::connect(PUBSUB_PROJECT, Some(host), config)
        .await
        .unwrap_or_else(|e| panic!("connecting to the Pub/Sub emulator at {host}: {e:?}"));
    bus.ensure_topic()
        .await
        .unwrap_or_else(|e| panic!("creating a test topic on {host}: {e:?}"));
    Some(bus)
}
