//! Choosing the adapter from the environment: [`from_env`], [`AnyBus`], [`work_queue_from_env`].
//!
//! | Variable | Adapter | Meaning |
//! |---|---|---|
//! | `EVENT_BUS_ADAPTER` | all | `local` (default when unset), `eventbridge` or `pubsub` |
//! | `EVENT_BUS_NAME` | eventbridge | **required**: the EventBridge bus |
//! | `AWS_REGION` / `AWS_DEFAULT_REGION` | eventbridge, sqs | **required** unless the AWS profile names one |
//! | `AWS_ENDPOINT_URL` | eventbridge, sqs | an emulator such as moto (the SDK reads it) |
//! | `PUBSUB_PROJECT_ID` / `GOOGLE_CLOUD_PROJECT` | pubsub | **required**: the project |
//! | `PUBSUB_TOPIC` | pubsub | the bus topic (default `eventflow-events`) |
//! | `PUBSUB_EMULATOR_HOST` | pubsub | `host:port` of the emulator; no credentials then |
//! | `EVENTFLOW_RESOURCE_PREFIX` | eventbridge, sqs | prefix of rule and queue names |
//! | `EVENTFLOW_PROVISION` | all | `false`: use existing rules, queues, topics, subscriptions |
//! | `EVENTFLOW_SQS_WAIT_SECONDS` | eventbridge | one receive's long poll, 0-20 (default 10): bounds a graceful stop |
//! | `EVENTFLOW_SQS_VISIBILITY_SECONDS` | eventbridge | subscription queues' visibility timeout, 1-43200 (default 10): when a message a dead consumer held comes back |
//! | `PUBSUB_ACK_DEADLINE_SECONDS` | pubsub | subscriptions' ack deadline, 10-600 (default 10): when a message a dead subscriber held comes back |
//! | `WORK_QUEUE_ADAPTER` | work queue | `local` (default) or `sqs` |
//!
//! Credentials come from each SDK's default chain (environment, profile, instance or workload
//! identity); `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) given through
//! [`from_lookup`] are used as static credentials.

use std::sync::Arc;

use async_trait::async_trait;
use eventflow_core::bus::{BusCapabilities, DeadLetter, DeadLetters};
use eventflow_core::{
    EventBus, InMemoryBus, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};

use crate::work_queue::{DeadLetterQueue, InMemoryWorkQueue, QueueSettings};

/// The adapter variable.
pub const ADAPTER_VAR: &str = "EVENT_BUS_ADAPTER";
/// How long, in whole seconds (0-20, default 10), one receive of an EventBridge subscription's SQS
/// queue waits for messages. Stopping a consumer lets the receive in progress finish, so this also
/// bounds how long a graceful stop takes.
pub const SQS_WAIT_VAR: &str = "EVENTFLOW_SQS_WAIT_SECONDS";
/// The work queue adapter variable.
pub const WORK_QUEUE_ADAPTER_VAR: &str = "WORK_QUEUE_ADAPTER";
/// The visibility timeout, in whole seconds (1-43200, default 10), of the SQS queues EventBridge
/// subscriptions create: how long a message a dead consumer held stays hidden. A live consumer
/// extends it while its handler runs.
pub const SQS_VISIBILITY_VAR: &str = "EVENTFLOW_SQS_VISIBILITY_SECONDS";
/// The Pub/Sub subscriptions' ack deadline, in whole seconds (10-600, default 10): how long a
/// message a dead subscriber held waits before it is delivered again. A live subscriber extends
/// it while its handler runs.
pub const PUBSUB_ACK_DEADLINE_VAR: &str = "PUBSUB_ACK_DEADLINE_SECONDS";

/// Why [`from_env`] could not build a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The adapter variable names no known adapter.
    #[error("{variable}={value:?} is not a known adapter; use one of: {expected}")]
    UnknownAdapter {
        /// The variable read.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// The adapter needs a setting that is not set.
    #[error("{adapter} needs {setting}, which is not set ({hint})")]
    MissingSetting {
        /// The chosen adapter.
        adapter: &'static str,
        /// The variable (or variables) to set.
        setting: &'static str,
        /// What it is for.
        hint: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("{setting}={value:?} is invalid: {reason}")]
    InvalidSetting {
        /// The variable.
        setting: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The adapter exists but this build left it out.
    #[error("{adapter} was chosen but eventflow-bus was built without its `{feature}` feature")]
    NotCompiled {
        /// The chosen adapter.
        adapter: &'static str,
        /// The Cargo feature that adds it.
        feature: &'static str,
    },
    /// Connecting or provisioning failed.
    #[error("could not set up the {adapter} adapter")]
    Backend {
        /// The chosen adapter.
        adapter: &'static str,
        /// The failure.
        #[source]
        source: eventflow_core::Error,
    },
}

/// The adapters [`from_env`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Adapter {
    /// [`InMemoryBus`]: one process, no infrastructure.
    Local,
    /// [`EventBridgeBus`](crate::eventbridge::EventBridgeBus).
    EventBridge,
    /// [`PubSubBus`](crate::pubsub::PubSubBus).
    PubSub,
}

impl Adapter {
    /// Parses an `EVENT_BUS_ADAPTER` value (case-insensitive; unset or empty is `Local`).
    pub fn parse(value: Option<&str>) -> Result<Adapter, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("local") | Some("memory") | Some("in-memory") => {
                Ok(Adapter::Local)
            }
            Some("eventbridge") => Ok(Adapter::EventBridge),
            Some("pubsub") => Ok(Adapter::PubSub),
            Some(_) => Err(ConfigError::UnknownAdapter {
                variable: ADAPTER_VAR,
                value: value.unwrap_or_default().to_owned(),
                expected: "local, eventbridge, pubsub",
            }),
        }
    }
}

/// A bus of whichever adapter the configuration chose: [`EventBus`] and [`DeadLetters`] by
/// delegation. Share it as `Arc<AnyBus>` (or `Arc<dyn EventBus>`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyBus {
    /// In memory.
    Local(InMemoryBus),
    /// EventBridge + SQS.
    #[cfg(feature = "eventbridge")]
    EventBridge(crate::eventbridge::EventBridgeBus),
    /// Google Cloud Pub/Sub.
    #[cfg(feature = "pubsub")]
    PubSub(crate::pubsub::PubSubBus),
}

impl AnyBus {
    /// Which adapter it is.
    pub fn adapter(&self) -> Adapter {
        match self {
            AnyBus::Local(_) => Adapter::Local,
            #[cfg(feature = "eventbridge")]
            AnyBus::EventBridge(_) => Adapter::EventBridge,
            #[cfg(feature = "pubsub")]
            AnyBus::PubSub(_) => Adapter::PubSub,
        }
    }

    /// How long a message a process held when it died may wait before the bus delivers it again,
    /// and the setting that says so; `None` in memory (whoever held the message died with the
    /// bus). Anything that waits for a reply across the bus (a saga step's deadline) must wait
    /// longer than this, or a crash turns into a timeout.
    pub fn redelivery(&self) -> Option<Redelivery> {
        match self {
            AnyBus::Local(_) => None,
            #[cfg(feature = "eventbridge")]
            AnyBus::EventBridge(bus) => Some(Redelivery {
                after: bus.config().queue.visibility_timeout,
                setting: SQS_VISIBILITY_VAR,
            }),
            #[cfg(feature = "pubsub")]
            AnyBus::PubSub(bus) => Some(Redelivery {
                after: bus.config().ack_deadline,
                setting: PUBSUB_ACK_DEADLINE_VAR,
            }),
        }
    }
}

/// How long a bus may take to deliver again a message whose consumer died holding it
/// ([`AnyBus::redelivery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redelivery {
    /// The longest wait: the SQS visibility timeout or the Pub/Sub ack deadline.
    pub after: std::time::Duration,
    /// The environment variable that sets it.
    pub setting: &'static str,
}

macro_rules! delegate {
    ($self:ident, $bus:ident => $call:expr) => {
        match $self {
            AnyBus::Local($bus) => $call,
            #[cfg(feature = "eventbridge")]
            AnyBus::EventBridge($bus) => $call,
            #[cfg(feature = "pubsub")]
            AnyBus::PubSub($bus) => $call,
        }
    };
}

#[async_trait]
impl EventBus for AnyBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        delegate!(self, bus => bus.publish(messages).await)
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        delegate!(self, bus => bus.subscribe(subscription, handler).await)
    }

    fn capabilities(&self) -> BusCapabilities {
        delegate!(self, bus => bus.capabilities())
    }

    async fn health_check(&self) -> Result<()> {
        delegate!(self, bus => bus.health_check().await)
    }
}

#[async_trait]
impl DeadLetters for AnyBus {
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>> {
        delegate!(self, bus => bus.dead_letters(subscription, max).await)
    }

    async fn redrive(&self, subscription: &str) -> Result<usize> {
        delegate!(self, bus => bus.redrive(subscription).await)
    }
}

/// The bus the process environment names (see the [module docs](self) for the variables).
///
/// ```no_run
/// # async fn example() -> Result<(), eventflow_bus::ConfigError> {
/// // EVENT_BUS_ADAPTER=eventbridge EVENT_BUS_NAME=commerce AWS_REGION=eu-west-1
/// let bus = eventflow_bus::from_env().await?;
/// # let _ = bus;
/// # Ok(()) }
/// ```
pub async fn from_env() -> Result<AnyBus, ConfigError> {
    from_lookup(|name| std::env::var(name).ok()).await
}

/// Like [`from_env`], reading settings through `lookup` (tests, or configuration from elsewhere).
pub async fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AnyBus, ConfigError> {
    let get = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let adapter = Adapter::parse(lookup(ADAPTER_VAR).as_deref())?;
    let provision = parse_bool(get("EVENTFLOW_PROVISION"), "EVENTFLOW_PROVISION")?.unwrap_or(true);
    tracing::info!(?adapter, provision, "event bus adapter chosen");
    match adapter {
        Adapter::Local => Ok(AnyBus::Local(InMemoryBus::new())),
        Adapter::EventBridge => eventbridge(&get, provision).await,
        Adapter::PubSub => pubsub(&get, provision).await,
    }
}

fn parse_bool(value: Option<String>, setting: &'static str) -> Result<Option<bool>, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true" | "1" | "yes") => Ok(Some(true)),
        Some("false" | "0" | "no") => Ok(Some(false)),
        Some(_) => Err(ConfigError::InvalidSetting {
            setting,
            value: value.unwrap_or_default(),
            reason: "expected true or false".into(),
        }),
    }
}

/// A whole number of seconds within `range` (the `limit` that sets it, for the message), if set.
#[cfg_attr(
    not(any(feature = "eventbridge", feature = "pubsub")),
    allow(dead_code)
)]
fn seconds_setting(
    get: &impl Fn(&str) -> Option<String>,
    setting: &'static str,
    range: std::ops::RangeInclusive<u64>,
    limit: &str,
) -> Result<Option<std::time::Duration>, ConfigError> {
    let Some(value) = get(setting) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(seconds) if range.contains(&seconds) => {
            Ok(Some(std::time::Duration::from_secs(seconds)))
        }
        _ => Err(ConfigError::InvalidSetting {
            setting,
            value,
            reason: format!(
                "expected whole seconds from {} to {} ({limit})",
                range.start(),
                range.end()
            ),
        }),
    }
}

#[cfg(feature = "sqs")]
async fn aws_sdk_config(
    get: &impl Fn(&str) -> Option<String>,
    adapter: &'static str,
) -> Result<aws_config::SdkConfig, ConfigError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")) {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(endpoint) = get("AWS_ENDPOINT_URL") {
        loader = loader.endpoint_url(endpoint);
    }
    // The SDK's default chain reads these from the process environment; reading them through
    // `get` as well makes `from_lookup` self-contained.
    if let (Some(key), Some(secret)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            key,
            secret,
            get("AWS_SESSION_TOKEN"),
            None,
            "eventflow-bus-config",
        ));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ConfigError::MissingSetting {
            adapter,
            setting: "AWS_REGION",
            hint: "the AWS region of the bus and queues",
        });
    }
    Ok(config)
}

#[cfg(feature = "eventbridge")]
async fn eventbridge(
    get: &impl Fn(&str) -> Option<String>,
    provision: bool,
) -> Result<AnyBus, ConfigError> {
    use crate::eventbridge::{EventBridgeBus, EventBridgeConfig};
    let bus_name = get("EVENT_BUS_NAME").ok_or(ConfigError::MissingSetting {
        adapter: "eventbridge",
        setting: "EVENT_BUS_NAME",
        hint: "the EventBridge event bus to publish to",
    })?;
    let sdk = aws_sdk_config(get, "eventbridge").await?;
    let mut config = EventBridgeConfig::new(bus_name)
        .with_resource_prefix(get("EVENTFLOW_RESOURCE_PREFIX").unwrap_or_default())
        .with_provision(provision);
    let visibility = "SQS's visibility timeout limit";
    if let Some(timeout) = seconds_setting(get, SQS_VISIBILITY_VAR, 1..=43_200, visibility)? {
        let queue = config.queue.clone().with_visibility_timeout(timeout);
        config = config.with_queue_options(queue);
    }
    if let Some(wait) = seconds_setting(get, SQS_WAIT_VAR, 0..=20, "SQS's long-poll limit")? {
        config = config.with_wait_time(wait);
    }
    let bus = EventBridgeBus::from_sdk_config(&sdk, config);
    if provision {
        bus.ensure_event_bus()
            .await
            .map_err(|source| ConfigError::Backend {
                adapter: "eventbridge",
                source,
            })?;
    }
    Ok(AnyBus::EventBridge(bus))
}

#[cfg(not(feature = "eventbridge"))]
async fn eventbridge(
    _get: &impl Fn(&str) -> Option<String>,
    _provision: bool,
) -> Result<AnyBus, ConfigError> {
    Err(ConfigError::NotCompiled {
        adapter: "eventbridge",
        feature: "eventbridge",
    })
}

#[cfg(feature = "pubsub")]
async fn pubsub(
    get: &impl Fn(&str) -> Option<String>,
    provision: bool,
) -> Result<AnyBus, ConfigError> {
    use crate::pubsub::{PubSubBus, PubSubConfig};
    let project = get("PUBSUB_PROJECT_ID")
        .or_else(|| get("GOOGLE_CLOUD_PROJECT"))
        .ok_or(ConfigError::MissingSetting {
            adapter: "pubsub",
            setting: "PUBSUB_PROJECT_ID (or GOOGLE_CLOUD_PROJECT)",
            hint: "the Google Cloud project of the topic",
        })?;
    let topic = get("PUBSUB_TOPIC").unwrap_or_else(|| "eventflow-events".to_owned());
    let emulator = get("PUBSUB_EMULATOR_HOST");
    let mut config = PubSubConfig::new(topic).with_provision(provision);
    let limits = "Pub/Sub's ack deadline limits";
    if let Some(deadline) = seconds_setting(get, PUBSUB_ACK_DEADLINE_VAR, 10..=600, limits)? {
        config = config.with_ack_deadline(deadline);
    }
    let backend = |source| ConfigError::Backend {
        adapter: "pubsub",
        source,
    };
    let bus = PubSubBus::connect(&project, emulator.as_deref(), config)
        .await
        .map_err(backend)?;
    if provision {
        bus.ensure_topic().await.map_err(backend)?;
    }
    Ok(AnyBus::PubSub(bus))
}

#[cfg(not(feature = "pubsub"))]
async fn pubsub(
    _get: &impl Fn(&str) -> Option<String>,
    _provision: bool,
) -> Result<AnyBus, ConfigError> {
    Err(ConfigError::NotCompiled {
        adapter: "pubsub",
        feature: "pubsub",
    })
}

/// The work queue the environment names, with `settings` (a name alone gives the defaults: 30 s
/// visibility, dead-lettered after 5 receives): `WORK_QUEUE_ADAPTER=local` (default) gives an
/// [`InMemoryWorkQueue`], `sqs` an [`SqsWorkQueue`](crate::sqs::SqsWorkQueue) named
/// `EVENTFLOW_RESOURCE_PREFIX + name`, provisioned with the settings' visibility timeout and
/// dead-letter queue unless `EVENTFLOW_PROVISION=false`.
pub async fn work_queue_from_env(
    settings: impl Into<QueueSettings>,
) -> Result<Arc<dyn DeadLetterQueue>, ConfigError> {
    work_queue_from_lookup(settings, |n| std::env::var(n).ok()).await
}

/// Like [`work_queue_from_env`], reading settings through `lookup`.
pub async fn work_queue_from_lookup(
    settings: impl Into<QueueSettings>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn DeadLetterQueue>, ConfigError> {
    let settings = settings.into();
    let get = |n: &str| {
        lookup(n)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let provision = parse_bool(get("EVENTFLOW_PROVISION"), "EVENTFLOW_PROVISION")?.unwrap_or(true);
    match get(WORK_QUEUE_ADAPTER_VAR)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("local") | Some("memory") => Ok(Arc::new(InMemoryWorkQueue::new(settings))),
        Some("sqs") => sqs_queue(&settings, &get, provision).await,
        Some(other) => Err(ConfigError::UnknownAdapter {
            variable: WORK_QUEUE_ADAPTER_VAR,
            value: other.to_owned(),
            expected: "local, sqs",
        }),
    }
}

#[cfg(feature = "sqs")]
async fn sqs_queue(
    settings: &QueueSettings,
    get: &impl Fn(&str) -> Option<String>,
    provision: bool,
) -> Result<Arc<dyn DeadLetterQueue>, ConfigError> {
    use crate::sqs::{SqsQueueOptions, SqsWorkQueue};
    let name = &settings.name;
    let sdk = aws_sdk_config(get, "sqs").await?;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let queue_name = format!(
        "{}{name}",
        get("EVENTFLOW_RESOURCE_PREFIX").unwrap_or_default()
    );
    let backend = |source| ConfigError::Backend {
        adapter: "sqs",
        source,
    };
    let queue = if provision {
        let options = SqsQueueOptions::new()
            .with_visibility_timeout(settings.visibility_timeout)
            .with_max_receives(settings.max_receives);
        SqsWorkQueue::provision(client, &queue_name, &options)
            .await
            .map_err(backend)?
    } else {
        SqsWorkQueue::open(client, &queue_name)
            .await
            .map_err(backend)?
    };
    Ok(Arc::new(queue.with_logical_name(name)))
}

#[cfg(not(feature = "sqs"))]
async fn sqs_queue(
    _settings: &QueueSettings,
    _get: &impl Fn(&str) -> Option<String>,
    _provision: bool,
) -> Result<Arc<dyn DeadLetterQueue>, ConfigError> {
    Err(ConfigError::NotCompiled {
        adapter: "sqs",
        feature: "sqs",
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[tokio::test]
    async fn unset_adapter_is_local() {
        let bus = from_lookup(env(&[])).await.expect("local");
        assert_eq!(bus.adapter(), Adapter::Local);
    }

    #[tokio::test]
    async fn unknown_adapter_is_a_clear_error() {
        let error = from_lookup(env(&[(ADAPTER_VAR, "kafka")]))
            .await
            .expect_err("unknown");
        assert!(matches!(error, ConfigError::UnknownAdapter { .. }));
        assert_eq!(
            error.to_string(),
            "EVENT_BUS_ADAPTER=\"kafka\" is not a known adapter; use one of: local, eventbridge, pubsub"
        );
    }

    #[tokio::test]
    async fn missing_settings_are_named() {
        let error = from_lookup(env(&[(ADAPTER_VAR, "eventbridge")]))
            .await
            .expect_err("missing");
        assert!(
            matches!(
                error,
                ConfigError::MissingSetting {
                    setting: "EVENT_BUS_NAME",
                    ..
                }
            ),
            "{error}"
        );
        let error = from_lookup(env(&[(ADAPTER_VAR, "pubsub")]))
            .await
            .expect_err("missing");
        assert!(error.to_string().contains("PUBSUB_PROJECT_ID"), "{error}");
        let error = from_lookup(env(&[
            (ADAPTER_VAR, "eventbridge"),
            ("EVENT_BUS_NAME", "bus"),
            ("AWS_REGION", "us-east-1"),
            (SQS_WAIT_VAR, "30"),
        ]))
        .await
        .expect_err("bad wait");
        assert!(
            matches!(
                error,
                ConfigError::InvalidSetting {
                    setting: SQS_WAIT_VAR,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("long-poll limit"), "{error}");
        let error = from_lookup(env(&[
            (ADAPTER_VAR, "eventbridge"),
            ("EVENT_BUS_NAME", "bus"),
            ("AWS_REGION", "us-east-1"),
            (SQS_VISIBILITY_VAR, "0"),
        ]))
        .await
        .expect_err("bad visibility");
        assert!(
            matches!(
                error,
                ConfigError::InvalidSetting {
                    setting: SQS_VISIBILITY_VAR,
                    ..
                }
            ),
            "{error}"
        );
        let error = from_lookup(env(&[("EVENTFLOW_PROVISION", "maybe")]))
            .await
            .expect_err("bad");
        assert!(
            matches!(error, ConfigError::InvalidSetting { .. }),
            "{error}"
        );
        let error = work_queue_from_lookup("q", env(&[(WORK_QUEUE_ADAPTER_VAR, "rabbit")]))
            .await
            .err()
            .expect("unknown");
        assert!(matches!(error, ConfigError::UnknownAdapter { .. }));
    }
}
