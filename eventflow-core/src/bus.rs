//! The event bus: publish messages, subscribe named subscriptions with at-least-once delivery.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

pub use crate::backoff::Backoff;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{BoxError, Result};

/// Well-known message attribute names, shared by every adapter.
pub mod attributes {
    /// The correlation id of the request that caused the message.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The id of the message or command that caused this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// MIME type of the payload (`application/json`).
    pub const CONTENT_TYPE: &str = "content-type";
}

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Message {
    /// Unique id; for events relayed from a store it is the event id, so consumers can deduplicate.
    pub id: String,
    /// The message type, e.g. the event type `"OrderPlaced"`.
    pub message_type: String,
    /// The publishing context, e.g. `"ordering"`.
    pub source: String,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// String attributes (see [`attributes`] for the well-known ones).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Messages with the same key are delivered in publish order where the adapter promises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

impl Message {
    /// A message with a fresh id and content type `application/json`.
    pub fn new(
        message_type: impl Into<String>,
        source: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        let mut attributes = BTreeMap::new();
        attributes.insert(
            attributes::CONTENT_TYPE.to_owned(),
            "application/json".to_owned(),
        );
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            message_type: message_type.into(),
            source: source.into(),
            payload,
            attributes,
            ordering_key: None,
        }
    }

    /// Replaces the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets an attribute.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Sets the correlation id attribute.
    pub fn with_correlation_id(self, id: impl Into<String>) -> Self {
        self.with_attribute(attributes::CORRELATION_ID, id)
    }

    /// Sets the ordering key.
    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// The correlation id attribute, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.attribute(attributes::CORRELATION_ID)
    }

    /// The `traceparent` attribute, if set.
    pub fn traceparent(&self) -> Option<&str> {
        self.attribute(attributes::TRACEPARENT)
    }

    /// An attribute by name.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// The serialised size in bytes: what adapters compare with their service's limits.
    pub fn encoded_len(&self) -> usize {
        /// Counts bytes instead of keeping them.
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        match serde_json::to_writer(&mut count, self) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        }
    }
}

/// Which messages a subscription receives. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// Message types to receive.
    pub message_types: Vec<String>,
    /// Sources to receive from.
    pub sources: Vec<String>,
}

impl Filter {
    /// Matches every message.
    pub fn all() -> Self {
        Self::default()
    }

    /// Also receive messages of type `message_type`.
    pub fn message_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_types.push(message_type.into());
        self
    }

    /// Also receive messages from `source`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.sources.push(source.into());
        self
    }

    /// Whether `message` passes the filter.
    pub fn matches(&self, message: &Message) -> bool {
        (self.message_types.is_empty() || self.message_types.contains(&message.message_type))
            && (self.sources.is_empty() || self.sources.contains(&message.source))
    }
}

/// A named subscription: its filter, retry policy and concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscription {
    /// Unique name (a queue, a Pub/Sub subscription).
    pub name: String,
    /// Which messages it receives.
    pub filter: Filter,
    /// Redelivery and dead-lettering.
    pub retry: Backoff,
    /// At most this many messages are handled at once (per ordering key, one at a time).
    pub max_in_flight: usize,
}

impl Subscription {
    /// A subscription to every message, with the default retry policy and 16 messages in flight.
    pub fn new(name: impl Into<String>) -> Self {
        Subscription {
            name: name.into(),
            filter: Filter::all(),
            retry: Backoff::default(),
            max_in_flight: 16,
        }
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how many messages are handled at once.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }
}

/// One delivery of a message to a subscription.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// The subscription it was delivered to.
    pub subscription: String,
    /// 1 for the first delivery, 2 for the first redelivery, ...
    pub attempt: u32,
}

impl Delivery {
    /// Builds a delivery (used by adapters).
    pub fn new(message: Message, subscription: impl Into<String>, attempt: u32) -> Self {
        Delivery {
            message,
            subscription: subscription.into(),
            attempt,
        }
    }
}

/// Why a handler did not acknowledge a message. Any error converts into it with `?`.
pub struct HandlerError(BoxError);

impl HandlerError {
    /// A handler error with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError(message.to_string().into())
    }

    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError(error.into())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Handles deliveries. `Ok` acknowledges; `Err` asks for redelivery (and, after the retry policy's
/// attempts, dead-lettering); a panic counts as an `Err`. Handlers must be idempotent: delivery is
/// at least once.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one delivery.
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError>;
}

/// Moved: [`extension::call_handler`](crate::extension::call_handler).
#[deprecated(
    since = "0.3.0",
    note = "use `eventflow_core::extension::call_handler`"
)]
pub async fn call_handler(
    backend: &'static str,
    handler: &dyn MessageHandler,
    delivery: Delivery,
) -> std::result::Result<(), String> {
    deliver(backend, handler, delivery).await
}

/// See [`extension::call_handler`](crate::extension::call_handler).
pub(crate) async fn deliver(
    backend: &'static str,
    handler: &dyn MessageHandler,
    delivery: Delivery,
) -> std::result::Result<(), String> {
    let message = &delivery.message;
    let span = tracing::info_span!(
        "eventflow.deliver",
        backend,
        subscription = %delivery.subscription,
        message_id = %message.id,
        message_type = %message.message_type,
        source = %message.source,
        correlation_id = message.correlation_id(),
        traceparent = message.traceparent(),
        attempt = delivery.attempt,
    );
    // Called inside the span: the handler's synchronous part runs in it too.
    let outcome = AssertUnwindSafe(async move { handler.handle(delivery).await })
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error.to_string(),
        Err(panic) => format!("handler panicked: {}", panic_message(panic.as_ref())),
    };
    tracing::warn!(parent: &span, error = %error, "delivery failed");
    Err(error)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}

/// A [`MessageHandler`] from an async closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

/// Wraps an async closure as a [`MessageHandler`].
///
/// ```
/// use eventflow_core::bus::{handler_fn, Delivery, HandlerError};
/// let handler = handler_fn(|delivery: Delivery| async move {
///     println!("got {}", delivery.message.message_type);
///     Ok::<(), HandlerError>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<HandlerFn<F>>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(HandlerFn(f))
}

#[async_trait]
impl<F, Fut> MessageHandler for HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        (self.0)(delivery).await
    }
}

/// A running subscription. Dropping the handle leaves the subscription running (like a detached
/// task); call [`unsubscribe`](Self::unsubscribe) to stop it.
pub struct SubscriptionHandle {
    name: String,
    stop: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
}

impl fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SubscriptionHandle {
    /// A handle whose `unsubscribe` runs `stop` (used by adapters).
    pub fn new<F, Fut>(name: impl Into<String>, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        SubscriptionHandle {
            name: name.into(),
            stop: Some(Box::new(move || Box::pin(stop()))),
        }
    }

    /// The subscription's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops receiving and waits for the deliveries in flight to finish.
    pub async fn unsubscribe(mut self) {
        if let Some(stop) = self.stop.take() {
            stop().await;
        }
    }
}

/// What a bus adapter promises beyond the [`EventBus`] contract, so the conformance suite can say
/// what it checked and what the adapter does not offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusCapabilities {
    /// Messages with the same ordering key are handled one at a time, in publish order.
    pub ordering_per_key: bool,
    /// Dead letters can be listed and redriven through [`DeadLetters`].
    pub dead_letters: bool,
}

impl BusCapabilities {
    /// Capabilities with each flag given.
    pub fn new(ordering_per_key: bool, dead_letters: bool) -> Self {
        BusCapabilities {
            ordering_per_key,
            dead_letters,
        }
    }
}

/// A message bus with named subscriptions and at-least-once delivery.
///
/// Object-safe (`Arc<dyn EventBus>`): the adapter is chosen by configuration at run time.
///
/// Contract (checked by the conformance suite): a published message reaches every subscription whose
/// filter matches and that existed when it was published; a handler `Ok` acknowledges it; an `Err`
/// (or a panic) redelivers it after the retry policy's backoff until `max_attempts` deliveries, then
/// it is dead-lettered; attributes arrive unchanged.
///
/// Adapters may round a [`Backoff`] up to what their service supports (SQS counts backoff in
/// whole seconds; Pub/Sub dead-letters after 5 to 100 attempts) and say so in their docs.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes messages; returns once every message is accepted by the bus.
    ///
    /// Messages are validated before anything is sent: an empty id or type is
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest), a message over the service's size
    /// limit is [`Error::LimitExceeded`](crate::Error::LimitExceeded). A batch is not atomic on every
    /// service: on an error some messages may have been published, so publishers retry the batch and
    /// consumers deduplicate by message id.
    async fn publish(&self, messages: Vec<Message>) -> Result<()>;

    /// Starts a named subscription that delivers to `handler`. Messages published after this returns
    /// are delivered.
    ///
    /// Whether messages published while no consumer runs are kept for the next `subscribe` depends on
    /// the adapter: a durable queue or subscription keeps them, the in-memory bus does not. A second
    /// consumer of one name is an error on the in-memory bus and a competing consumer on SQS.
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle>;

    /// What this adapter promises beyond the base contract.
    fn capabilities(&self) -> BusCapabilities;

    /// Whether the bus answers: a cheap read of the service (a readiness probe), sending nothing.
    /// The default, for buses inside the process, is always `Ok`.
    async fn health_check(&self) -> Result<()> {
        Ok(())
    }
}

/// A message that exhausted its deliveries.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message as published.
    pub message: Message,
    /// The subscription that gave up on it.
    pub subscription: String,
    /// How many deliveries were made.
    pub attempts: u32,
    /// The last handler error, where the adapter keeps it.
    pub last_error: Option<String>,
    /// When it was dead-lettered, where the adapter knows.
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// Builds a dead letter (used by adapters).
    pub fn new(message: Message, subscription: impl Into<String>, attempts: u32) -> Self {
        DeadLetter {
            message,
            subscription: subscription.into(),
            attempts,
            last_error: None,
            dead_lettered_at: None,
        }
    }

    /// Sets the last error.
    pub fn with_last_error(mut self, error: impl Into<String>) -> Self {
        self.last_error = Some(error.into());
        self
    }

    /// Sets when it was dead-lettered.
    pub fn with_dead_lettered_at(mut self, at: DateTime<Utc>) -> Self {
        self.dead_lettered_at = Some(at);
        self
    }
}

/// Inspection and replay of a subscription's dead letters.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `max` dead letters of `subscription`, oldest first, without removing them.
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>>;

    /// Moves every dead letter of `subscription` back for delivery with fresh attempts; returns how many.
    /// The order is oldest first where the service keeps one (best effort on SQS). On the in-memory
    /// bus the subscription must be active.
    async fn redrive(&self, subscription: &str) -> Result<usize>;
}
