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
//! endpoint from the environment is used instead of starting one: [`AWS_ENDPOINT_ENV`] for moto,
//! `PUBSUB_EMULATOR_HOST` for Pub/Sub.

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub use eventflow_core::testkit::emulator::Emulator;
use eventflow_core::testkit::emulator::{
    EmulatorCommand, StopSignal, endpoint_from_env, on_path, skip_or_fail,
};

/// Environment variable naming a running moto (or other EventBridge + SQS) endpoint to use
/// instead of starting `moto_server`.
pub const AWS_ENDPOINT_ENV: &str = "EVENTFLOW_BUS_AWS_ENDPOINT";
/// Environment variable naming the Pub/Sub emulator jar, when `gcloud` is not on the `PATH`.
pub const PUBSUB_JAR_ENV: &str = "EVENTFLOW_PUBSUB_EMULATOR_JAR";
/// The project id the tests use on the emulator.
pub const PUBSUB_PROJECT: &str = "eventflow-test";

/// How long an emulator gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A shared endpoint, and the emulator and watchdog when this process started it.
struct Shared {
    endpoint: String,
    _emulator: Option<(Emulator, ChildStdin)>,
}

fn share(emulator: Emulator, endpoint: String) -> Shared {
    let watchdog = emulator
        .stop_at_exit(StopSignal::Term)
        .unwrap_or_else(|e| panic!("starting the {} watchdog: {e}", emulator.name()));
    Shared {
        endpoint,
        _emulator: Some((emulator, watchdog)),
    }
}

fn from_env(variable: &str) -> Option<Shared> {
    endpoint_from_env(variable).map(|endpoint| Shared {
        endpoint,
        _emulator: None,
    })
}

/// The moto endpoint (`http://127.0.0.1:PORT`) shared by this process: [`AWS_ENDPOINT_ENV`] when
/// set, else a `moto_server` started on first use and stopped when the process exits. `None`
/// after a loud SKIPPED line when neither can be had (a panic when `CI=true`).
pub fn moto_endpoint() -> Option<&'static str> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(shared) = from_env(AWS_ENDPOINT_ENV) {
                return Some(shared);
            }
            if !on_path("moto_server") {
                skip_or_fail(&format!(
                    "EventBridge/SQS tests did not run: moto_server is not on PATH and \
                     {AWS_ENDPOINT_ENV} is not set (install with `pip install 'moto[server]'`)"
                ));
                return None;
            }
            let emulator = EmulatorCommand::new("bus-moto", "moto_server")
                .args(["-H", "127.0.0.1", "-p", "{port}"])
                .ready_when("/moto-api/", "")
                .start_timeout(START_TIMEOUT)
                .start()
                .unwrap_or_else(|e| panic!("starting moto_server: {e}"));
            let endpoint = format!("http://127.0.0.1:{}", emulator.port());
            Some(share(emulator, endpoint))
        })
        .as_ref()
        .map(|shared| shared.endpoint.as_str())
}

/// The Pub/Sub emulator jar: [`PUBSUB_JAR_ENV`], else the one in the Google Cloud SDK that
/// `gcloud info` names.
fn pubsub_jar() -> Result<PathBuf, String> {
    if let Ok(jar) = std::env::var(PUBSUB_JAR_ENV)
        && !jar.trim().is_empty()
    {
        return Ok(PathBuf::from(jar.trim()));
    }
    if !on_path("gcloud") {
        return Err(format!(
            "gcloud is not on PATH and {PUBSUB_JAR_ENV} is not set"
        ));
    }
    let output = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running gcloud info: {e}"))?;
    let root = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let lib = Path::new(&root).join("platform/pubsub-emulator/lib");
    let jar = std::fs::read_dir(&lib)
        .map_err(|e| {
            format!(
                "{}: {e} (install with `gcloud components install pubsub-emulator`)",
                lib.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cloud-pubsub-emulator-") && n.ends_with("-all.jar"))
        })
        .ok_or_else(|| format!("no cloud-pubsub-emulator-*-all.jar in {}", lib.display()))?;
    Ok(jar)
}

/// The Pub/Sub emulator host (`127.0.0.1:PORT`) shared by this process: `PUBSUB_EMULATOR_HOST`
/// when set, else an emulator started on first use (`java -jar cloud-pubsub-emulator-*-all.jar`)
/// and stopped when the process exits. `None` after a loud SKIPPED line when neither can be had (a
/// panic when `CI=true`).
pub fn pubsub_emulator_host() -> Option<&'static str> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(shared) = from_env("PUBSUB_EMULATOR_HOST") {
                return Some(shared);
            }
            let jar = match (on_path("java"), pubsub_jar()) {
                (true, Ok(jar)) => jar,
                (false, _) => {
                    skip_or_fail("Pub/Sub tests did not run: java is not on PATH and PUBSUB_EMULATOR_HOST is not set");
                    return None;
                }
                (_, Err(why)) => {
                    skip_or_fail(&format!(
                        "Pub/Sub tests did not run: no emulator ({why}) and PUBSUB_EMULATOR_HOST is not set"
                    ));
                    return None;
                }
            };
            let jar = jar.to_string_lossy().into_owned();
            let emulator = EmulatorCommand::new("bus-pubsub-emulator", "java")
                .args(["-jar", &jar, "--host=127.0.0.1", "--port={port}"])
                .ready_when("/", "Ok")
                .start_timeout(START_TIMEOUT)
                .start()
                .unwrap_or_else(|e| panic!("starting the Pub/Sub emulator: {e}"));
            let host = format!("127.0.0.1:{}", emulator.port());
            Some(share(emulator, host))
        })
        .as_ref()
        .map(|shared| shared.endpoint.as_str())
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
