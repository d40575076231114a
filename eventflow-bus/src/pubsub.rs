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
//!   [`DeadLetters`];
//! - `S.redrive`: a topic and a subscription that the consumer of `S` reads as well; redriven
//!   messages go there, so they reach `S` only (publishing them to the bus topic would deliver them
//!   to every subscription again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::bus::{BusCapabilities, DeadLetter, DeadLetters, Filter};
use eventflow_core::sync::lock;
use eventflow_core::{
    Delivery, Error, EventBus, Message, MessageHandler, Result, Subscription, SubscriptionHandle,
};
use gcloud_gax::conn::Environment;
use gcloud_gax::grpc::{Code, Status};
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriberClient;
use gcloud_googleapis::pubsub::v1::{
    DeadLetterPolicy, ModifyAckDeadlineRequest, PubsubMessage, PullRequest, StreamingPullRequest,
};
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::publisher::{Publisher, PublisherConfig};
use gcloud_pubsub::subscriber::ReceivedMessage;
use gcloud_pubsub::subscription::SubscriptionConfig;
use tokio::sync::{Notify, OnceCell, Semaphore, mpsc, watch};

use crate::envelope;

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
    /// The subscriptions' ack deadline; held messages are extended every third of it
    /// (default 60 s, Pub/Sub allows 10–600 s).
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
            ack_deadline: Duration::from_secs(60),
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

    /// The server-side filter expression for `filter`: `None` when it matches everything or does
    /// not fit Pub/Sub's 256 bytes (the consumer filters either way).
    pub fn filter_expression(filter: &Filter) -> Option<String> {
        fn any_of(attribute: &str, values: &[String]) -> Option<String> {
            let clauses: Vec<String> = values
                .iter()
                .map(|v| {
                    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("attributes.{attribute} = \"{escaped}\"")
                })
                .collect();
            match clauses.len() {
                0 => None,
                1 => clauses.into_iter().next(),
                _ => Some(format!("({})", clauses.join(" OR "))),
            }
        }
        let parts: Vec<String> = [
            any_of(TYPE_ATTRIBUTE, &filter.message_types),
            any_of(SOURCE_ATTRIBUTE, &filter.sources),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            return None;
        }
        let expression = parts.join(" AND ");
        (expression.len() <= MAX_FILTER_BYTES).then_some(expression)
    }

    /// Creates the bus topic if it does not exist.
    pub async fn ensure_topic(&self) -> Result<()> {
        self.inner
            .topic_ready
            .get_or_try_init(|| self.ensure_topic_named(&self.inner.config.topic))
            .await
            .map(|_| ())
    }

    async fn ensure_topic_named(&self, id: &str) -> Result<()> {
        let topic = self.inner.client.topic(id);
        match topic.create(None, None).await {
            Ok(()) => {
                tracing::info!(topic = %id, "Pub/Sub topic created");
                Ok(())
            }
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(status_error("CreateTopic", status)),
        }
    }

    /// Creates a subscription on `topic` unless one of that id exists; an existing one must be on
    /// `topic` with the same filter.
    async fn ensure_subscription(
        &self,
        id: &str,
        topic: &str,
        config: SubscriptionConfig,
    ) -> Result<()> {
        let subscription = self.inner.client.subscription(id);
        let fq_topic = self.inner.client.fully_qualified_topic_name(topic);
        match subscription.create(&fq_topic, config.clone(), None).await {
            Ok(()) => {
                tracing::info!(subscription = %id, topic = %topic, filter = %config.filter, "Pub/Sub subscription created");
                Ok(())
            }
            Err(status) if status.code() == Code::AlreadyExists => {
                let (existing_topic, existing) = subscription
                    .config(None)
                    .await
                    .map_err(|s| status_error("GetSubscription", s))?;
                if existing_topic != fq_topic || existing.filter != config.filter {
                    return Err(Error::InvalidRequest(format!(
                        "Pub/Sub subscription {id} exists on {existing_topic} with filter {:?}; \
                         wanted {fq_topic} with filter {:?} (filters are immutable: delete it first)",
                        existing.filter, config.filter
                    )));
                }
                Ok(())
            }
            Err(status) => Err(status_error("CreateSubscription", status)),
        }
    }

    /// Creates what a subscription needs: the bus topic, the subscription (ordering on, the
    /// filter, the ack deadline), and its dead-letter and redrive topics and subscriptions.
    pub async fn provision_subscription(&self, subscription: &Subscription) -> Result<()> {
        let name = &subscription.name;
        self.ensure_topic().await?;
        let dead_letters = format!("{name}{DEAD_LETTER_SUFFIX}");
        let redrive = format!("{name}{REDRIVE_SUFFIX}");
        let ack_deadline = self.inner.config.ack_deadline.as_secs().clamp(10, 600) as i32;
        let plain = SubscriptionConfig {
            ack_deadline_seconds: ack_deadline,
            enable_message_ordering: true,
            ..SubscriptionConfig::default()
        };
        self.ensure_topic_named(&dead_letters).await?;
        self.ensure_subscription(&dead_letters, &dead_letters, plain.clone())
            .await?;
        self.ensure_topic_named(&redrive).await?;
        self.ensure_subscription(&redrive, &redrive, plain.clone())
            .await?;
        let mut main = SubscriptionConfig {
            filter: Self::filter_expression(&subscription.filter).unwrap_or_default(),
            ..plain
        };
        if self.inner.config.server_dead_letter_policy {
            main.dead_letter_policy = Some(DeadLetterPolicy {
                dead_letter_topic: self.inner.client.fully_qualified_topic_name(&dead_letters),
                max_delivery_attempts: subscription.retry.max_attempts.clamp(5, 100) as i32,
            });
        }
        self.ensure_subscription(name, &self.inner.config.topic, main)
            .await
    }

    /// Deletes a subscription and its dead-letter and redrive topics and subscriptions
    /// (development and tests). Missing pieces are not an error.
    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let client = &self.inner.client;
        for id in [
            name.to_owned(),
            format!("{name}{DEAD_LETTER_SUFFIX}"),
            format!("{name}{REDRIVE_SUFFIX}"),
        ] {
            match client.subscription(&id).delete(None).await {
                Ok(()) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(status_error("DeleteSubscription", s)),
            }
        }
        for id in [
            format!("{name}{DEAD_LETTER_SUFFIX}"),
            format!("{name}{REDRIVE_SUFFIX}"),
        ] {
            match client.topic(&id).delete(None).await {
                Ok(()) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(status_error("DeleteTopic", s)),
            }
        }
        Ok(())
    }

    /// Deletes the bus topic (development and tests).
    pub async fn delete_topic(&self) -> Result<()> {
        match self
            .inner
            .client
            .topic(&self.inner.config.topic)
            .delete(None)
            .await
        {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status_error("DeleteTopic", s)),
        }
    }

    async fn publisher(&self) -> Result<&Publisher> {
        self.inner
            .publisher
            .get_or_try_init(|| async {
                if self.inner.config.provision {
                    self.ensure_topic().await?;
                }
                let config = PublisherConfig {
                    workers: 1,
                    ..PublisherConfig::default()
                };
                Ok::<_, Error>(
                    self.inner
                        .client
                        .topic(&self.inner.config.topic)
                        .new_publisher(Some(config)),
                )
            })
            .await
    }

    /// Pulls up to `max` messages from `subscription` without waiting; they stay leased until
    /// acknowledged or released.
    async fn pull_now(
        &self,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<gcloud_googleapis::pubsub::v1::ReceivedMessage>> {
        let sub = self.inner.client.subscription(subscription);
        let mut got = Vec::new();
        while got.len() < max {
            #[allow(deprecated)]
            let request = PullRequest {
                subscription: sub.fully_qualified_name().to_owned(),
                return_immediately: true,
                max_messages: (max - got.len()).min(1000) as i32,
            };
            let response = sub
                .get_client()
                .pull(request, None)
                .await
                .map_err(|s| status_error("Pull", s))?
                .into_inner();
            if response.received_messages.is_empty() {
                break;
            }
            got.extend(response.received_messages);
        }
        Ok(got)
    }

    async fn modify_deadline(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
        seconds: i32,
    ) -> Result<()> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let sub = self.inner.client.subscription(subscription);
        for chunk in ack_ids.chunks(1000) {
            let request = ModifyAckDeadlineRequest {
                subscription: sub.fully_qualified_name().to_owned(),
                ack_ids: chunk.to_vec(),
                ack_deadline_seconds: seconds,
            };
            sub.get_client()
                .modify_ack_deadline(request, None)
                .await
                .map_err(|s| status_error("ModifyAckDeadline", s))?;
        }
        Ok(())
    }

    async fn subscription_exists(&self, id: &str) -> Result<bool> {
        self.inner
            .client
            .subscription(id)
            .exists(None)
            .await
            .map_err(|s| status_error("GetSubscription", s))
    }
}

/// The Pub/Sub message for `message`.
fn to_pubsub(message: &Message) -> Result<PubsubMessage> {
    if message.id.is_empty() || message.message_type.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "message {:?} has an empty id or message type",
            message.id
        )));
    }
    let data = envelope::encode(message)?.into_bytes();
    let mut attributes = HashMap::new();
    attributes.insert(TYPE_ATTRIBUTE.to_owned(), message.message_type.clone());
    attributes.insert(SOURCE_ATTRIBUTE.to_owned(), message.source.clone());
    attributes.insert(ID_ATTRIBUTE.to_owned(), message.id.clone());
    for (key, value) in &message.attributes {
        // The envelope carries every attribute; native ones are a copy for filters and tools.
        let fits = key.len() <= MAX_ATTRIBUTE_KEY
            && value.len() <= MAX_ATTRIBUTE_VALUE
            && !key.is_empty()
            && !key.to_ascii_lowercase().starts_with("goog")
            && attributes.len() < MAX_ATTRIBUTES;
        if fits {
            attributes
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
    let size = data.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(Error::LimitExceeded {
            limit: "Pub/Sub message size (bytes)",
            actual: size as u64,
            max: MAX_MESSAGE_BYTES as u64,
        });
    }
    Ok(PubsubMessage {
        data,
        attributes,
        ordering_key: message.ordering_key.clone().unwrap_or_default(),
        ..PubsubMessage::default()
    })
}

fn request_batches(messages: Vec<PubsubMessage>) -> Vec<Vec<PubsubMessage>> {
    let mut batches: Vec<Vec<PubsubMessage>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let size = message.data.len() + 64;
        let fits = batches.last().is_some_and(|b| {
            b.len() < MAX_MESSAGES_PER_REQUEST && bytes + size <= MAX_REQUEST_BYTES
        });
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = batches.last_mut() {
            batch.push(message);
        }
    }
    batches
}

#[async_trait]
impl EventBus for PubSubBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        let encoded = messages.iter().map(to_pubsub).collect::<Result<Vec<_>>>()?;
        let publisher = self.publisher().await?;
        for batch in request_batches(encoded) {
            publisher
                .publish_immediately(batch, None)
                .await
                .map_err(|s| status_error("Publish", s))?;
        }
        Ok(())
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
}

#[async_trait]
impl DeadLetters for PubSubBus {
    /// Pulls `S.dead-letters` without waiting and releases what it saw at once.
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let id = format!("{subscription}{DEAD_LETTER_SUFFIX}");
        if max == 0 || !valid_resource_id(&id) || !self.subscription_exists(&id).await? {
            return Ok(Vec::new());
        }
        let pulled = self.pull_now(&id, max).await?;
        let ack_ids = pulled.iter().map(|m| m.ack_id.clone()).collect();
        self.modify_deadline(&id, ack_ids, 0).await?;
        let mut letters: Vec<(i64, DeadLetter)> = pulled
            .into_iter()
            .filter_map(|received| received.message)
            .map(|m| {
                let published = m
                    .publish_time
                    .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                (published, dead_letter_from(subscription, &m))
            })
            .collect();
        letters.sort_by_key(|(published, _)| *published);
        Ok(letters.into_iter().map(|(_, l)| l).take(max).collect())
    }

    /// Moves every message of `S.dead-letters` to `S.redrive`, which the consumer of `S` reads.
    async fn redrive(&self, subscription: &str) -> Result<usize> {
        let dead = format!("{subscription}{DEAD_LETTER_SUFFIX}");
        if !valid_resource_id(&dead) || !self.subscription_exists(&dead).await? {
            return Err(Error::InvalidRequest(format!(
                "cannot redrive: subscription {subscription:?} has no dead-letter subscription"
            )));
        }
        let target = self
            .inner
            .client
            .topic(&format!("{subscription}{REDRIVE_SUFFIX}"))
            .new_publisher(Some(PublisherConfig {
                workers: 1,
                ..PublisherConfig::default()
            }));
        let mut moved = 0;
        loop {
            let pulled = self.pull_now(&dead, 500).await?;
            if pulled.is_empty() {
                break;
            }
            let mut ack_ids = Vec::with_capacity(pulled.len());
            let mut messages = Vec::with_capacity(pulled.len());
            for received in pulled {
                ack_ids.push(received.ack_id);
                let Some(mut message) = received.message else {
                    continue;
                };
                for key in [
                    DEAD_LETTER_SUBSCRIPTION,
                    DEAD_LETTER_ATTEMPTS,
                    DEAD_LETTER_ERROR,
                    DEAD_LETTERED_AT,
                ] {
                    message.attributes.remove(key);
                }
                message
                    .attributes
                    .retain(|k, _| !k.starts_with("CloudPubSubDeadLetter"));
                message.ordering_key = envelope::decode(&message.data)
                    .ok()
                    .and_then(|m| m.ordering_key)
                    .unwrap_or_default();
                message.message_id.clear();
                message.publish_time = None;
                messages.push(message);
            }
            for batch in request_batches(messages) {
                let count = batch.len();
                target
                    .publish_immediately(batch, None)
                    .await
                    .map_err(|s| status_error("Publish", s))?;
                moved += count;
            }
            self.inner
                .client
                .subscription(&dead)
                .ack(ack_ids)
                .await
                .map_err(|s| status_error("Acknowledge", s))?;
        }
        tracing::info!(subscription, moved, "dead letters redriven");
        Ok(moved)
    }
}

/// A dead letter from a message of `S.dead-letters`: ours carry attributes; ones forwarded by a
/// server-side dead-letter policy carry Pub/Sub's.
fn dead_letter_from(subscription: &str, message: &PubsubMessage) -> DeadLetter {
    let attribute = |k: &str| message.attributes.get(k).map(String::as_str);
    let decoded = envelope::decode(&message.data).unwrap_or_else(|error| {
        Message::new(
            "eventflow.UndecodableMessage",
            "eventflow-bus",
            serde_json::json!({
                "data": String::from_utf8_lossy(&message.data),
                "error": error.to_string(),
            }),
        )
        .with_id(attribute(ID_ATTRIBUTE).unwrap_or(&message.message_id))
    });
    let attempts = attribute(DEAD_LETTER_ATTEMPTS)
        .or_else(|| attribute("CloudPubSubDeadLetterSourceDeliveryCount"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let mut letter = DeadLetter::new(decoded, subscription, attempts);
    if let Some(error) = attribute(DEAD_LETTER_ERROR) {
        letter = letter.with_last_error(error);
    }
    let at = attribute(DEAD_LETTERED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            let t = message.publish_time.as_ref()?;
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
        });
    if let Some(at) = at {
        letter = letter.with_dead_lettered_at(at);
    }
    letter
}

// -------------------------------------------------------------------------------------------
// The consumer
// -------------------------------------------------------------------------------------------

/// One subscription's delivery machinery.
struct Consumer {
    bus: PubSubBus,
    subscription: Subscription,
    handler: Arc<dyn MessageHandler>,
    permits: Semaphore,
    /// Messages waiting behind the one being delivered, per ordering key. A key is present while
    /// a task delivers its messages.
    keys: Mutex<HashMap<String, VecDeque<Held>>>,
    /// Ack ids of held messages (received, not yet acked or nacked), by subscription id.
    leases: Mutex<HashMap<String, String>>,
    stopped: watch::Sender<bool>,
    tasks: AtomicUsize,
    idle: Notify,
    dead_letter_publisher: OnceCell<Publisher>,
}

/// A received message the consumer holds.
struct Held {
    received: ReceivedMessage,
    message: Message,
}

impl PubSubBus {
    async fn start_consumer(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        let name = subscription.name.clone();
        if self.inner.config.provision {
            self.provision_subscription(&subscription).await?;
        } else if !self.subscription_exists(&name).await? {
            return Err(Error::InvalidRequest(format!(
                "Pub/Sub subscription {name} does not exist (provisioning is off)"
            )));
        }
        let redrive_id = format!("{name}{REDRIVE_SUFFIX}");
        let redrive = self.subscription_exists(&redrive_id).await?;

        let permits = subscription.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let consumer = Arc::new(Consumer {
            bus: self.clone(),
            subscription,
            handler,
            permits: Semaphore::new(permits),
            keys: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            stopped: watch::Sender::new(false),
            tasks: AtomicUsize::new(0),
            idle: Notify::new(),
            dead_letter_publisher: OnceCell::new(),
        });
        let mut streams = vec![tokio::spawn(Arc::clone(&consumer).stream(name.clone()))];
        if redrive {
            streams.push(tokio::spawn(Arc::clone(&consumer).stream(redrive_id)));
        }
        let leaser = tokio::spawn(Arc::clone(&consumer).extend_leases());
        tracing::info!(subscription = %name, "Pub/Sub subscription consuming");

        let inner = Arc::clone(&self.inner);
        Ok(SubscriptionHandle::new(name.clone(), move || async move {
            consumer.stopped.send_replace(true);
            for stream in streams {
                if let Err(error) = stream.await {
                    tracing::error!(%error, "Pub/Sub stream task failed");
                }
            }
            consumer.release_queued().await;
            consumer.wait_idle().await;
            leaser.abort();
            lock(&inner.active).remove(&name);
            tracing::info!(subscription = %name, "Pub/Sub subscription stopped");
        }))
    }
}

impl Consumer {
    fn name(&self) -> &str {
        &self.subscription.name
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Streams `subscription_id` until stopped, reconnecting after errors.
    ///
    /// The consumer drives the `StreamingPull` itself and owns its request stream, so stopping
    /// half-closes it and the server ends the stream; what the server sent meanwhile is nacked. (A
    /// stream whose requests never end, as `gcloud-pubsub`'s own subscriber keeps it, stays open on
    /// the server after the client stops reading, and the server keeps handing it messages that
    /// nobody reads: a re-created consumer of the subscription would then get nothing.)
    async fn stream(self: Arc<Self>, subscription_id: String) {
        let client = &self.bus.inner.client;
        let fqsn = client.fully_qualified_subscription_name(&subscription_id);
        let subscriber_client = client.subscription(&subscription_id).get_client();
        let deadline = self.bus.inner.config.ack_deadline.as_secs().clamp(10, 600) as i32;
        let outstanding = (self.subscription.max_in_flight as i64 * 4).max(100);
        let client_id = uuid::Uuid::new_v4().to_string();
        let mut stopped = self.stopped.subscribe();
        let mut failures = 0u32;
        while !self.is_stopped() {
            let (requests, receiver) = mpsc::channel::<StreamingPullRequest>(4);
            let initial = StreamingPullRequest {
                subscription: fqsn.clone(),
                stream_ack_deadline_seconds: deadline,
                max_outstanding_messages: outstanding,
                client_id: client_id.clone(),
                ..StreamingPullRequest::default()
            };
            if requests.try_send(initial).is_err() {
                break;
            }
            let outgoing = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|request| (request, receiver))
            });
            let mut request = gcloud_gax::grpc::Request::new(outgoing);
            if let Ok(value) = format!("subscription={fqsn}").parse() {
                request
                    .metadata_mut()
                    .insert("x-goog-request-params", value);
            }
            let mut raw = RawSubscriberClient::new(self.bus.inner.streaming.conn())
                .max_decoding_message_size(MAX_MESSAGE_BYTES * 2);
            let opened = tokio::select! {
                opened = raw.streaming_pull(request) => Some(opened),
                stop = stopped.wait_for(|s| *s) => {
                    drop(stop);
                    None
                }
            };
            let Some(opened) = opened else { break };
            let mut responses = match opened {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(subscription = %subscription_id, %status, "could not open the Pub/Sub stream; retrying");
                    if !self.pause(failures).await {
                        break;
                    }
                    continue;
                }
            };
            let mut ping = tokio::time::interval(Duration::from_secs(10));
            ping.tick().await;
            loop {
                let event = tokio::select! {
                    next = responses.message() => Some(next),
                    _ = ping.tick() => None,
                    stop = stopped.wait_for(|s| *s) => {
                        drop(stop);
                        break;
                    }
                };
                match event {
                    Some(Ok(Some(response))) => {
                        failures = 0;
                        for received in response.received_messages {
                            let Some(message) = received.message else {
                                continue;
                            };
                            let delivery_attempt = usize::try_from(received.delivery_attempt)
                                .ok()
                                .filter(|a| *a > 0);
                            self.dispatch(ReceivedMessage {
                                message,
                                ack_id: received.ack_id,
                                subscription: fqsn.clone(),
                                subscriber_client: subscriber_client.clone(),
                                delivery_attempt,
                            })
                            .await;
                        }
                    }
                    Some(Ok(None)) => {
                        tracing::debug!(subscription = %subscription_id, "the server ended the Pub/Sub stream; reopening");
                        break;
                    }
                    Some(Err(status)) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(subscription = %subscription_id, %status, "Pub/Sub stream failed; reopening");
                        break;
                    }
                    None => {
                        // Keeps the stream alive through proxies; an empty request changes nothing.
                        let _ = requests.try_send(StreamingPullRequest::default());
                    }
                }
            }
            if self.is_stopped() {
                drop(requests);
                let drain = async {
                    while let Ok(Some(response)) = responses.message().await {
                        let ack_ids = response
                            .received_messages
                            .into_iter()
                            .map(|m| m.ack_id)
                            .collect();
                        if let Err(error) =
                            self.bus.modify_deadline(&subscription_id, ack_ids, 0).await
                        {
                            tracing::warn!(subscription = %subscription_id, %error, "nack of undelivered messages failed");
                        }
                    }
                };
                if tokio::time::timeout(Duration::from_secs(5), drain)
                    .await
                    .is_err()
                {
                    tracing::warn!(subscription = %subscription_id, "the server did not end the stream within 5 s of the half-close");
                }
                break;
            }
            if failures > 0 && !self.pause(failures).await {
                break;
            }
        }
    }

    /// Waits before reconnecting; `false` when stopped meanwhile.
    async fn pause(&self, failures: u32) -> bool {
        let pause = Duration::from_millis(100)
            .saturating_mul(2u32.saturating_pow(failures.min(7)))
            .min(Duration::from_secs(10));
        let mut stopped = self.stopped.subscribe();
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            stop = stopped.wait_for(|s| *s) => {
                drop(stop);
                false
            }
        }
    }

    async fn dispatch(self: &Arc<Self>, received: ReceivedMessage) {
        let message = match envelope::decode(&received.message.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(subscription = %self.name(), pubsub_message_id = %received.message.message_id, %error, "undecodable message; dead-lettering it");
                let attempts = received.delivery_attempt().unwrap_or(1) as u32;
                if self
                    .dead_letter_raw(&received.message, attempts, &error.to_string())
                    .await
                    .is_ok()
                {
                    ack(&received).await;
                }
                return;
            }
        };
        if !self.subscription.filter.matches(&message) {
            tracing::debug!(subscription = %self.name(), message_id = %message.id, "filtered out; acknowledged");
            ack(&received).await;
            return;
        }
        lock(&self.leases).insert(received.ack_id.clone(), received.subscription.clone());
        let held = Held { received, message };
        match held.message.ordering_key.clone().filter(|k| !k.is_empty()) {
            None => self.spawn(Arc::clone(self).process(held)),
            Some(key) => {
                let mut keys = lock(&self.keys);
                match keys.get_mut(&key) {
                    Some(waiting) => waiting.push_back(held),
                    None => {
                        keys.insert(key.clone(), VecDeque::new());
                        drop(keys);
                        self.spawn(Arc::clone(self).run_key(key, held));
                    }
                }
            }
        }
    }

    fn spawn(self: &Arc<Self>, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        let consumer = Arc::clone(self);
        tokio::spawn(async move {
            task.await;
            if consumer.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
                consumer.idle.notify_waiters();
            }
        });
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    async fn run_key(self: Arc<Self>, key: String, first: Held) {
        let mut next = Some(first);
        while let Some(held) = next {
            Arc::clone(&self).process(held).await;
            let mut keys = lock(&self.keys);
            next = keys.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                keys.remove(&key);
            }
        }
    }

    /// Nacks the messages queued behind a key that no task will deliver now.
    async fn release_queued(&self) {
        let queued: Vec<Held> = lock(&self.keys)
            .values_mut()
            .flat_map(std::mem::take)
            .collect();
        for held in queued {
            self.release(&held).await;
        }
    }

    async fn release(&self, held: &Held) {
        lock(&self.leases).remove(&held.received.ack_id);
        if let Err(status) = held.received.nack().await {
            tracing::warn!(subscription = %self.name(), %status, "nack failed; the ack deadline will release the message");
        }
    }

    /// Delivers until acknowledged, dead-lettered, or the consumer stops (then nacks).
    async fn process(self: Arc<Self>, held: Held) {
        let retry = self.subscription.retry;
        let max_attempts = retry.max_attempts.max(1);
        let mut attempt = held
            .received
            .delivery_attempt()
            .map_or(1, |a| u32::try_from(a).unwrap_or(u32::MAX).max(1));
        let mut stopped = self.stopped.subscribe();
        loop {
            let permit = tokio::select! {
                permit = self.permits.acquire() => permit.ok(),
                stop = stopped.wait_for(|s| *s) => {
                    drop(stop);
                    None
                }
            };
            let Some(permit) = permit.filter(|_| !self.is_stopped()) else {
                self.release(&held).await;
                return;
            };
            let delivery = Delivery::new(held.message.clone(), self.name(), attempt);
            let outcome =
                eventflow_core::bus::call_handler(BACKEND, self.handler.as_ref(), delivery).await;
            drop(permit);
            let error = match outcome {
                Ok(()) => {
                    lock(&self.leases).remove(&held.received.ack_id);
                    ack(&held.received).await;
                    return;
                }
                Err(error) => error,
            };
            if attempt >= max_attempts {
                lock(&self.leases).remove(&held.received.ack_id);
                match self
                    .dead_letter_raw(&held.received.message, attempt, &error)
                    .await
                {
                    Ok(()) => ack(&held.received).await,
                    Err(publish_error) => {
                        tracing::error!(subscription = %self.name(), message_id = %held.message.id, %publish_error, "could not dead-letter; nacking so Pub/Sub redelivers it");
                        if let Err(status) = held.received.nack().await {
                            tracing::warn!(%status, "nack failed");
                        }
                    }
                }
                return;
            }
            let woke = tokio::select! {
                () = tokio::time::sleep(retry.delay(attempt)) => true,
                stop = stopped.wait_for(|s| *s) => {
                    drop(stop);
                    false
                }
            };
            if !woke {
                self.release(&held).await;
                return;
            }
            attempt += 1;
        }
    }

    /// Publishes a message to `S.dead-letters` with the dead-letter attributes.
    async fn dead_letter_raw(
        &self,
        original: &PubsubMessage,
        attempts: u32,
        error: &str,
    ) -> Result<()> {
        let publisher = self
            .dead_letter_publisher
            .get_or_init(|| async {
                self.bus
                    .inner
                    .client
                    .topic(&format!("{}{DEAD_LETTER_SUFFIX}", self.name()))
                    .new_publisher(Some(PublisherConfig {
                        workers: 1,
                        ..PublisherConfig::default()
                    }))
            })
            .await;
        let mut attributes = original.attributes.clone();
        attributes.insert(DEAD_LETTER_SUBSCRIPTION.to_owned(), self.name().to_owned());
        attributes.insert(DEAD_LETTER_ATTEMPTS.to_owned(), attempts.to_string());
        attributes.insert(
            DEAD_LETTER_ERROR.to_owned(),
            truncate(error, MAX_ATTRIBUTE_VALUE),
        );
        attributes.insert(DEAD_LETTERED_AT.to_owned(), Utc::now().to_rfc3339());
        let message = PubsubMessage {
            data: original.data.clone(),
            attributes,
            ..PubsubMessage::default()
        };
        publisher
            .publish_immediately(vec![message], None)
            .await
            .map_err(|s| status_error("Publish", s))?;
        tracing::error!(
            subscription = %self.name(),
            message_id = original.attributes.get(ID_ATTRIBUTE).map(String::as_str).unwrap_or_default(),
            attempts,
            error,
            "message dead-lettered"
        );
        Ok(())
    }

    /// Extends the ack deadline of every held message every third of the deadline.
    async fn extend_leases(self: Arc<Self>) {
        let deadline = self.bus.inner.config.ack_deadline.as_secs().clamp(10, 600);
        let period = Duration::from_secs(deadline / 3);
        loop {
            tokio::time::sleep(period).await;
            let mut by_subscription: HashMap<String, Vec<String>> = HashMap::new();
            for (ack_id, fqsn) in lock(&self.leases).iter() {
                by_subscription
                    .entry(fqsn.clone())
                    .or_default()
                    .push(ack_id.clone());
            }
            for (fqsn, ack_ids) in by_subscription {
                let id = fqsn.rsplit('/').next().unwrap_or(&fqsn).to_owned();
                if let Err(error) = self
                    .bus
                    .modify_deadline(&id, ack_ids, deadline as i32)
                    .await
                {
                    tracing::warn!(subscription = %self.name(), %error, "could not extend ack deadlines");
                }
            }
        }
    }
}

async fn ack(received: &ReceivedMessage) {
    if let Err(status) = received.ack().await {
        // Pub/Sub redelivers it: at least once.
        tracing::warn!(%status, "ack failed; the message will be redelivered");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_expressions() {
        assert_eq!(PubSubBus::filter_expression(&Filter::all()), None);
        assert_eq!(
            PubSubBus::filter_expression(&Filter::all().message_type("A")).as_deref(),
            Some(r#"attributes.eventflow_type = "A""#)
        );
        assert_eq!(
            PubSubBus::filter_expression(
                &Filter::all()
                    .message_type("A")
                    .message_type("B")
                    .source("s\"x")
            )
            .as_deref(),
            Some(
                r#"(attributes.eventflow_type = "A" OR attributes.eventflow_type = "B") AND attributes.eventflow_source = "s\"x""#
            )
        );
        let long = Filter::all().message_type("x".repeat(300));
        assert_eq!(
            PubSubBus::filter_expression(&long),
            None,
            "too long: the consumer filters"
        );
    }

    #[test]
    fn attributes_are_copied_where_they_fit() {
        let message = Message::new("T", "s", serde_json::json!({}))
            .with_correlation_id("c")
            .with_attribute("big", "x".repeat(2000))
            .with_attribute("goog-reserved", "v");
        let encoded = to_pubsub(&message).expect("encode");
        assert_eq!(encoded.attributes["correlation-id"], "c");
        assert_eq!(encoded.attributes[TYPE_ATTRIBUTE], "T");
        assert!(!encoded.attributes.contains_key("big"));
        assert!(!encoded.attributes.contains_key("goog-reserved"));
        assert_eq!(
            envelope::decode(&encoded.data).expect("decode"),
            message,
            "the envelope keeps all"
        );
    }

    #[test]
    fn resource_ids() {
        assert!(valid_resource_id("ef-sub-1"));
        assert!(!valid_resource_id("1abc"));
        assert!(!valid_resource_id("goog-x"));
        assert!(!valid_resource_id("ab"));
        assert!(!valid_resource_id("a b c"));
    }
}
