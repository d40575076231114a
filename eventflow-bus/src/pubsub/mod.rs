//! Google Cloud Pub/Sub: [`PubSubBus`].
//!
//! **Topology: one topic per bus, filters on attributes.** Every message of the bus goes to one
//! topic ([`PubSubConfig::topic`]); each subscription is a Pub/Sub subscription on it with a
//! server-side filter on the `eventflow_type` / `eventflow_source` attributes. One topic keeps
//! publishing a single call whatever the event type, and adding a consumer never touches the
//! producers; a topic per category would make publishers know categories and subscribers
//! subscribe to several topics. The cost is that every subscription's filter is evaluated for every
//! message, which Pub/Sub does for free (filtered-out messages are not billed as deliveries).
//!
//! Per subscription `S` there are also:
//! - `S.dead-letters`: a topic and a subscription holding dead letters, listed and redriven through
//!   [`DeadLetters`](eventflow_core::bus::DeadLetters);
//! - `S.redrive`: a topic and a subscription that the consumer of `S` reads as well; redriven
//!   messages go there, so they reach `S` only (publishing them to the bus topic would deliver them
//!   to every subscription again).
//!
//! **Client.** The adapter uses `gcloud-pubsub` for administration and publishing and drives the
//! `StreamingPull` itself, so that stopping a consumer half-closes its stream and drains it
//! (`consume.rs` explains why). Google's own `google-cloud-pubsub` 1.7 was tried in its place and
//! not adopted: on the emulator its shutdown leaves a stream that keeps leasing the
//! subscription's messages in about half the stops (`docs/trials/google-cloud-pubsub` has the
//! probe, the numbers and the upstream issues).
//!
//! The module is laid out as the adapter works: `provision` (topics, subscriptions, filters),
//! `publish`, `consume` (the streaming pull, feeding eventflow's shared
//! [`Dispatcher`](eventflow_core::extension::Dispatcher)) and `dead_letters`.

mod consume;
mod dead_letters;
mod provision;
mod publish;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventflow_core::bus::BusCapabilities;
use eventflow_core::extension::lock;
use eventflow_core::{
    Error, EventBus, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};
use gcloud_gax::conn::Environment;
use gcloud_gax::grpc::{Code, Status};
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::publisher::Publisher;
use tokio::sync::OnceCell;

/// The backend name in errors.
const BACKEND: &str = "pubsub";

/// Attribute carrying the message type (filters match on it).
pub const TYPE_ATTRIBUTE: &str = "eventflow_type";
/// Attribute carrying the message source (filters match on it).
pub const SOURCE_ATTRIBUTE: &str = "eventflow_source";
/// Attribute carrying the message id.
pub const ID_ATTRIBUTE: &str = "eventflow_id";
/// On a dead letter: the subscription that gave up.
pub const DEAD_LETTER_SUBSCRIPTION: &str = "eventflow_dead_letter_subscription";
/// On a dead letter: how many deliveries were made.
pub const DEAD_LETTER_ATTEMPTS: &str = "eventflow_dead_letter_attempts";
/// On a dead letter: the last handler error (at most 1,024 bytes).
pub const DEAD_LETTER_ERROR: &str = "eventflow_dead_letter_error";
/// On a dead letter: when it was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT: &str = "eventflow_dead_lettered_at";

/// Pub/Sub's largest message (10 MB, data and attributes).
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;
/// Messages per publish request.
const MAX_MESSAGES_PER_REQUEST: usize = 1000;
/// Bytes per publish request we aim for (the service takes 10 MB).
const MAX_REQUEST_BYTES: usize = 9_000_000;
/// Pub/Sub's longest filter expression.
const MAX_FILTER_BYTES: usize = 256;
/// Pub/Sub attribute limits: key bytes, value bytes, attributes per message.
const MAX_ATTRIBUTE_KEY: usize = 256;
const MAX_ATTRIBUTE_VALUE: usize = 1024;
const MAX_ATTRIBUTES: usize = 100;
/// Suffixes of the per-subscription resources.
const DEAD_LETTER_SUFFIX: &str = ".dead-letters";
const REDRIVE_SUFFIX: &str = ".redrive";

/// Configuration of a [`PubSubBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubSubConfig {
    /// The bus topic's id (not the full `projects/…/topics/…` name).
    pub topic: String,
    /// Whether the bus creates what it uses: the topic, and on `subscribe` the subscription and
    /// its dead-letter and redrive topics and subscriptions (default `true`).
    pub provision: bool,
    /// The subscriptions' ack deadline; held messages are extended every third of it, so a live
    /// subscriber keeps a slow handler's message. It is how long a message a **dead** subscriber
    /// held waits before Pub/Sub delivers it again, and, with ordering keys, how long every later
    /// message of its key waits behind it: hence the default of 10 s, Pub/Sub's least (it allows
    /// 10–600 s).
    pub ack_deadline: Duration,
    /// Also give the subscription a server-side dead-letter policy to `S.dead-letters` with
    /// `max_delivery_attempts` = the retry policy's attempts clamped to Pub/Sub's 5–100 (default
    /// `false`). It catches messages whose deliveries never finish (a consumer that crashes on
    /// them), which client-side dead-lettering cannot count. Needs the Pub/Sub service account to
    /// have publisher rights on the dead-letter topic and subscriber rights on the subscription;
    /// **the emulator does not support it** (it fails when forwarding).
    pub server_dead_letter_policy: bool,
}

impl PubSubConfig {
    /// A configuration for the topic `topic` with the defaults.
    pub fn new(topic: impl Into<String>) -> Self {
        PubSubConfig {
            topic: topic.into(),
            provision: true,
            ack_deadline: Duration::from_secs(10),
            server_dead_letter_policy: false,
        }
    }

    /// Sets whether the bus provisions topics and subscriptions.
    pub fn with_provision(mut self, provision: bool) -> Self {
        self.provision = provision;
        self
    }

    /// Sets the ack deadline (clamped to 10–600 s).
    pub fn with_ack_deadline(mut self, ack_deadline: Duration) -> Self {
        self.ack_deadline = ack_deadline.clamp(Duration::from_secs(10), Duration::from_secs(600));
        self
    }

    /// The ack deadline in whole seconds, within Pub/Sub's 10-600 (the field is public, so it
    /// may hold anything): what subscriptions are created and streams opened with.
    pub fn ack_deadline_seconds(&self) -> i32 {
        self.ack_deadline.as_secs().clamp(10, 600) as i32
    }

    /// Sets whether subscriptions get a server-side dead-letter policy too.
    pub fn with_server_dead_letter_policy(mut self, enabled: bool) -> Self {
        self.server_dead_letter_policy = enabled;
        self
    }
}

/// An [`EventBus`] on Google Cloud Pub/Sub (or its emulator): one topic, a filtered subscription
/// per [`Subscription`], streaming pull, ordering keys, client-side retries and dead-letter topics.
///
/// - **Publish**: one `Publish` call per 1,000 messages (or 9 MB). The data is the message
///   envelope; `eventflow_type`, `eventflow_source`, `eventflow_id` and the message's attributes
///   (correlation id, `traceparent`, … where they fit Pub/Sub's attribute limits) are native
///   attributes; the ordering key is the message's. A message over 10 MB is
///   [`Error::LimitExceeded`] and nothing of the publish is sent.
/// - **Subscribe** creates (with [`PubSubConfig::provision`]) the subscription with message
///   ordering on and the filter as a server-side filter when it fits Pub/Sub's 256 bytes. The
///   filter is **also applied by the consumer** (non-matching messages are acknowledged without a
///   delivery), so a filter that does not fit, or an emulator that ignores filters, still
///   delivers only matching messages. A subscription that exists with another topic or filter is
///   refused ([`Error::InvalidRequest`]): Pub/Sub filters are immutable.
/// - **Delivery**: at most `max_in_flight` handler calls at once; messages with the same ordering
///   key one at a time, in the order Pub/Sub delivers them (publish order, with ordering on). A
///   failed delivery is retried **by the consumer**, which keeps the message leased (extending its
///   ack deadline) and calls the handler again after `retry.delay(attempt)`; after
///   `retry.max_attempts` deliveries it publishes the message to `S.dead-letters` (with the
///   attempts, the last error and the time as attributes) and acknowledges it. Retrying in the
///   consumer rather than by `nack` keeps per-key order: a nacked message would be redelivered
///   after the ones behind it were handled. [`Delivery::attempt`] counts the consumer's deliveries,
///   starting at Pub/Sub's `delivery_attempt` when the service reports one.
/// - **Unsubscribe** stops the stream, nacks what was received but not handled (Pub/Sub
///   redelivers it to the next consumer), waits for the handler calls in flight, and keeps the
///   subscription: it is durable, like a queue.
///
/// **Guarantees on Google Cloud**: at-least-once delivery (Pub/Sub redelivers unacknowledged
/// messages; exactly-once delivery is not enabled); per-key order for messages published in order
/// from one region; dead letters after the configured attempts, counted per consumer process (a
/// process that crashes mid-retry starts counting again on redelivery, unless
/// [`PubSubConfig::server_dead_letter_policy`] lets Pub/Sub count). A new subscription only gets
/// messages published after it was created.
///
/// [`Delivery::attempt`]: eventflow_core::Delivery::attempt
#[derive(Clone)]
pub struct PubSubBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Connections for the consumers' streaming pulls, which this crate drives itself so that
    /// stopping a consumer closes its stream (see [`Consumer::stream`]).
    streaming: ConnectionManager,
    config: PubSubConfig,
    topic_ready: OnceCell<()>,
    publisher: OnceCell<Publisher>,
    active: Mutex<HashSet<String>>,
}

impl fmt::Debug for PubSubBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A failed Pub/Sub call, with the gRPC status as its source.
#[derive(Debug)]
struct PubSubFailure {
    operation: &'static str,
    status: Status,
}

impl fmt::Display for PubSubFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {}: {}",
            self.operation,
            self.status.code(),
            self.status.message()
        )
    }
}

impl std::error::Error for PubSubFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.status)
    }
}

fn status_error(operation: &'static str, status: Status) -> Error {
    let transient = matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
            | Code::Unknown
    );
    let source = PubSubFailure { operation, status };
    if transient {
        Error::transient(BACKEND, source)
    } else {
        Error::backend(BACKEND, source)
    }
}

/// Whether `id` is a valid Pub/Sub topic or subscription id.
fn valid_resource_id(id: &str) -> bool {
    (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && !id.to_ascii_lowercase().starts_with("goog")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
}

impl PubSubBus {
    /// A bus from a client configuration (endpoint, project, credentials).
    pub async fn from_client_config(
        client_config: ClientConfig,
        config: PubSubConfig,
    ) -> Result<Self> {
        let streaming = ConnectionManager::new(
            2,
            &client_config.endpoint,
            &client_config.environment,
            &client_config.connection_option,
        )
        .await
        .map_err(|e| Error::backend(BACKEND, e))?;
        let client = Client::new(client_config)
            .await
            .map_err(|e| Error::backend(BACKEND, e))?;
        Ok(PubSubBus {
            inner: Arc::new(Inner {
                client,
                streaming,
                config,
                topic_ready: OnceCell::new(),
                publisher: OnceCell::new(),
                active: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Connects to Pub/Sub in `project_id`: to the emulator at `emulator_host` (`host:port`) when
    /// given, else to Google Cloud with Application Default Credentials.
    pub async fn connect(
        project_id: &str,
        emulator_host: Option<&str>,
        config: PubSubConfig,
    ) -> Result<Self> {
        let client_config = match emulator_host {
            Some(host) => ClientConfig {
                project_id: Some(project_id.to_owned()),
                environment: Environment::Emulator(host.to_owned()),
                ..ClientConfig::default()
            },
            None => {
                let base = ClientConfig {
                    project_id: Some(project_id.to_owned()),
                    ..ClientConfig::default()
                };
                // `default()` picks the emulator when PUBSUB_EMULATOR_HOST is set; only then is
                // no authentication wanted.
                if matches!(base.environment, Environment::Emulator(_)) {
                    base
                } else {
                    base.with_auth()
                        .await
                        .map_err(|e| Error::backend(BACKEND, e))?
                }
            }
        };
        Self::from_client_config(client_config, config).await
    }

    /// The configuration.
    pub fn config(&self) -> &PubSubConfig {
        &self.inner.config
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

#[async_trait]
impl EventBus for PubSubBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        self.publish_messages(messages).await
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let name = subscription.name.clone();
        let longest = format!("{name}{DEAD_LETTER_SUFFIX}");
        if !valid_resource_id(&name) || !valid_resource_id(&longest) {
            return Err(Error::InvalidRequest(format!(
                "{name:?} is not a usable Pub/Sub subscription id (3-{} characters of \
                 [A-Za-z0-9-_.~+%], starting with a letter, not with \"goog\")",
                255 - DEAD_LETTER_SUFFIX.len()
            )));
        }
        if !lock(&self.inner.active).insert(name.clone()) {
            return Err(Error::InvalidRequest(format!(
                "subscription {name:?} is already active on this bus"
            )));
        }
        match self.start_consumer(subscription, handler).await {
            Ok(handle) => Ok(handle),
            Err(error) => {
                lock(&self.inner.active).remove(&name);
                Err(error)
            }
        }
    }

    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::new(true, true)
    }

    /// `GetTopic` on the bus topic: an error when it does not answer or the topic is gone.
    async fn health_check(&self) -> Result<()> {
        let topic = self.inner.client.topic(&self.inner.config.topic);
        match topic.exists(None).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::backend(
                BACKEND,
                format!("topic {} does not exist", self.inner.config.topic),
            )),
            Err(status) => Err(status_error("GetTopic", status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids() {
        assert!(valid_resource_id("ef-sub-1"));
        assert!(!valid_resource_id("1abc"));
        assert!(!valid_resource_id("goog-x"));
        assert!(!valid_resource_id("ab"));
        assert!(!valid_resource_id("a b c"));
    }
}
