//! [`InMemoryBus`]: the event bus in process memory, with a real broker's delivery semantics.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;

use crate::bus::{
    BusCapabilities, DeadLetter, DeadLetters, EventBus, Filter, Message, MessageHandler,
    Subscription, SubscriptionHandle,
};
use crate::dispatcher::{Dispatcher, Settle};
use crate::error::{Error, Result};
use crate::mutex::lock;

/// The JSON length of `message` without string escapes: a walk over its values, no formatting.
fn unescaped_len(message: &Message) -> usize {
    fn value(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Null => 4,
            serde_json::Value::Bool(_) => 5,
            serde_json::Value::Number(_) => 24,
            serde_json::Value::String(s) => s.len() + 2,
            serde_json::Value::Array(items) => {
                2 + items.iter().map(|i| value(i) + 1).sum::<usize>()
            }
            serde_json::Value::Object(map) => {
                2 + map
                    .iter()
                    .map(|(k, v)| k.len() + 4 + value(v))
                    .sum::<usize>()
            }
        }
    }
    let attributes: usize = message
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    let key = message.ordering_key.as_ref().map_or(0, String::len);
    message.id.len()
        + message.message_type.len()
        + message.source.len()
        + key
        + attributes
        + value(&message.payload)
        + 96
}

/// The backend name in errors.
const BACKEND: &str = "in-memory bus";

/// Options of an [`InMemoryBus`]. The defaults deliver each message once per attempt and refuse
/// messages larger than EventBridge and SQS take.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InMemoryBusOptions {
    /// Deliver every message a second time after it was acknowledged, as a broker does when an
    /// acknowledgement is lost. Turn it on to prove that handlers are idempotent.
    pub duplicate_deliveries: bool,
    /// The largest message (its JSON form) a publish accepts; `None`: any. Default 256 KiB, the
    /// limit of EventBridge and SQS, so a message too large for them fails in tests too.
    pub max_message_bytes: Option<usize>,
}

impl Default for InMemoryBusOptions {
    fn default() -> Self {
        InMemoryBusOptions {
            duplicate_deliveries: false,
            max_message_bytes: Some(256 * 1024),
        }
    }
}

impl InMemoryBusOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes).
    pub fn max_message_bytes(mut self, max: Option<usize>) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Sets [`duplicate_deliveries`](Self::duplicate_deliveries).
    pub fn duplicate_deliveries(mut self, duplicate_deliveries: bool) -> Self {
        self.duplicate_deliveries = duplicate_deliveries;
        self
    }
}

/// An [`EventBus`] and [`DeadLetters`] in process memory, as strict as a real broker.
///
/// Users test their handlers on it, so it is not kinder than SQS or Pub/Sub:
///
/// - **Routing.** [`publish`](EventBus::publish) hands each message to every subscription that is
///   active when it is published and whose [`Filter`](crate::bus::Filter) matches. Messages
///   published before a subscription exists never reach it. An empty `id` or `message_type` is
///   refused with [`Error::InvalidRequest`] and nothing of the batch is published.
/// - **Delivery** runs in tokio tasks (on the runtime that called `subscribe`), at least once: a
///   handler `Ok` acknowledges; an `Err` or a panic redelivers after
///   [`Backoff::delay`](crate::bus::Backoff::delay), until `max_attempts` deliveries,
///   then the message becomes a [`DeadLetter`] of the subscription (with the last error and the
///   time). [`Delivery::attempt`](crate::bus::Delivery::attempt) counts from 1.
/// - **Concurrency.** At most `max_in_flight` handler calls run at once per subscription (a message
///   waiting for its backoff does not count). Messages with the same ordering key are handled one
///   at a time in publish order: the next one waits while the previous one is retried, and goes
///   on once it is acknowledged or dead-lettered. Messages without a key run concurrently and may
///   finish in any order.
/// - **Duplicates.** With [`InMemoryBusOptions::duplicate_deliveries`], every acknowledged message
///   is delivered once more (a fresh delivery starting at attempt 1, before the next message of
///   its ordering key).
/// - **Unsubscribe** ([`SubscriptionHandle::unsubscribe`]) stops taking new messages, lets handler
///   calls in flight finish (a handler that never returns blocks it), and frees the name for a new
///   `subscribe`. Messages of that subscription not yet acknowledged (queued, waiting for a
///   permit or for a backoff) are **dropped**: unlike a broker's queue, nothing outlives the
///   subscription except its dead letters. Dropping the handle without calling `unsubscribe`
///   leaves the subscription running for the life of the bus.
/// - **Dead letters** are kept per subscription name, oldest first, and survive `unsubscribe`
///   (like a dead-letter queue). [`redrive`](DeadLetters::redrive) needs the subscription to be
///   active: otherwise it returns [`Error::InvalidRequest`] and keeps the dead letters.
///
/// Delivery, concurrency and retries are the shared [`Dispatcher`]'s, as they are for the
/// Pub/Sub adapter. Clones share the same bus.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use eventflow_core::bus::{handler_fn, Delivery, EventBus, HandlerError, Message, Subscription};
/// use eventflow_core::InMemoryBus;
///
/// let bus = InMemoryBus::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let handler = handler_fn(move |delivery: Delivery| {
///     let tx = tx.clone();
///     async move {
///         tx.send(delivery.message.message_type)?;
///         Ok::<(), HandlerError>(())
///     }
/// });
/// let subscription = bus.subscribe(Subscription::new("billing"), handler).await?;
/// bus.publish(vec![Message::new("OrderPlaced", "ordering", serde_json::json!({"total": 42}))])
///     .await?;
/// assert_eq!(rx.recv().await.as_deref(), Some("OrderPlaced"));
/// subscription.unsubscribe().await;
/// # Ok::<(), eventflow_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct InMemoryBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    options: InMemoryBusOptions,
    /// Active subscriptions (and closing ones, until their deliveries in flight end), by name.
    subscriptions: Mutex<HashMap<String, Arc<Active>>>,
    dead_letters: Arc<DeadLetterStore>,
}

/// Dead letters by subscription name, oldest first.
type DeadLetterStore = Mutex<HashMap<String, Vec<DeadLetter>>>;

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<InMemoryBus>();
};

impl InMemoryBus {
    /// A bus with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus with `options`.
    pub fn with_options(options: InMemoryBusOptions) -> Self {
        InMemoryBus {
            shared: Arc::new(Shared {
                options,
                ..Shared::default()
            }),
        }
    }

    /// The options the bus was built with.
    pub fn options(&self) -> &InMemoryBusOptions {
        &self.shared.options
    }

    /// Waits until every message published so far is settled: handled, dead-lettered, or
    /// dropped by a closed subscription, including what handlers published meanwhile (a
    /// handler's publish is queued before its own delivery ends). For tests that would otherwise
    /// poll for a read model.
    pub async fn wait_idle(&self) {
        loop {
            let active: Vec<Arc<Active>> =
                lock(&self.shared.subscriptions).values().cloned().collect();
            if active.iter().all(|a| a.dispatcher.is_idle()) {
                return;
            }
            for subscription in active {
                subscription.dispatcher.wait_idle().await;
            }
        }
    }

    fn validate(&self, message: &Message) -> Result<()> {
        if let Some(max) = self.shared.options.max_message_bytes
            // Serialising every message to measure it would cost more than delivering it. The
            // walk below undercounts only escapes, which at most multiply a string's length by
            // six (`\u0000`), so a message it finds under a sixth of the limit is surely under it.
            && unescaped_len(message) > max / 6
        {
            let size = message.encoded_len();
            if size > max {
                return Err(Error::LimitExceeded {
                    limit: "in-memory bus message size in bytes",
                    actual: size as u64,
                    max: max as u64,
                });
            }
        }
        if message.id.is_empty() {
            return Err(Error::InvalidRequest("message id is empty".into()));
        }
        if message.message_type.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "message {} has an empty message type",
                message.id
            )));
        }
        Ok(())
    }

    fn publish_now(&self, messages: Vec<Message>) -> Result<()> {
        messages.iter().try_for_each(|m| self.validate(m))?;
        // A snapshot: a subscription added after this point does not get these messages, one that
        // is closing refuses them in `enqueue`.
        let subscriptions: Vec<Arc<Active>> =
            lock(&self.shared.subscriptions).values().cloned().collect();
        for message in messages {
            let mut routed = 0usize;
            for subscription in &subscriptions {
                if subscription.filter.matches(&message) && subscription.enqueue(message.clone()) {
                    routed += 1;
                }
            }
            tracing::debug!(
                message_id = %message.id,
                message_type = %message.message_type,
                subscriptions = routed,
                "message published"
            );
        }
        Ok(())
    }
}

impl fmt::Debug for InMemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = lock(&self.shared.subscriptions).keys().cloned().collect();
        names.sort();
        f.debug_struct("InMemoryBus")
            .field("options", &self.shared.options)
            .field("subscriptions", &names)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for InMemoryBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        let span = tracing::info_span!(
            "eventflow.publish",
            backend = BACKEND,
            messages = messages.len()
        );
        span.in_scope(|| self.publish_now(messages))
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle> {
        if subscription.name.is_empty() {
            return Err(Error::InvalidRequest("subscription name is empty".into()));
        }
        let name = subscription.name.clone();
        let settle = MemorySettle {
            name: name.clone(),
            dead_letters: Arc::clone(&self.shared.dead_letters),
        };
        let dispatcher = Dispatcher::new("memory", &subscription, handler, settle)?;
        dispatcher.set_duplicate_deliveries(self.shared.options.duplicate_deliveries);
        let state = Arc::new(Active {
            filter: subscription.filter,
            dispatcher,
        });
        match lock(&self.shared.subscriptions).entry(name.clone()) {
            Entry::Occupied(_) => {
                return Err(Error::InvalidRequest(format!(
                    "subscription {name:?} is already active"
                )));
            }
            Entry::Vacant(entry) => {
                entry.insert(Arc::clone(&state));
            }
        }
        tracing::info!(subscription = %name, "subscribed");

        let shared = Arc::clone(&self.shared);
        let handle_name = name.clone();
        Ok(SubscriptionHandle::new(handle_name, move || async move {
            state.dispatcher.close().await;
            state.dispatcher.wait_idle().await;
            let mut subscriptions = lock(&shared.subscriptions);
            if subscriptions
                .get(&name)
                .is_some_and(|current| Arc::ptr_eq(current, &state))
            {
                subscriptions.remove(&name);
            }
            drop(subscriptions);
            tracing::info!(subscription = %name, "unsubscribed");
        }))
    }

    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::new(true, true)
    }
}

#[async_trait]
impl DeadLetters for InMemoryBus {
    async fn dead_letters(&self, subscription: &str, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.shared.dead_letters)
            .get(subscription)
            .map(|letters| letters.iter().take(max).cloned().collect())
            .unwrap_or_default())
    }

    /// Re-delivers every dead letter of `subscription`, oldest first, with attempts counted from
    /// 1 again. The subscription must be active, else [`Error::InvalidRequest`] and the dead letters
    /// stay where they are.
    async fn redrive(&self, subscription: &str) -> Result<usize> {
        let state = lock(&self.shared.subscriptions)
            .get(subscription)
            .filter(|state| !state.dispatcher.is_closed())
            .cloned()
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "cannot redrive: subscription {subscription:?} is not active"
                ))
            })?;
        let letters = lock(&self.shared.dead_letters)
            .remove(subscription)
            .unwrap_or_default();
        let mut letters = letters.into_iter();
        let mut redriven = 0;
        for letter in letters.by_ref() {
            if state.enqueue(letter.message.clone()) {
                redriven += 1;
            } else {
                // Unsubscribed meanwhile: put this one and the rest back, in order, before any
                // dead letter that arrived since.
                let mut store = lock(&self.shared.dead_letters);
                let list = store.entry(subscription.to_owned()).or_default();
                let rest: Vec<DeadLetter> = std::iter::once(letter).chain(letters).collect();
                list.splice(0..0, rest);
                break;
            }
        }
        tracing::info!(subscription, redriven, "dead letters redriven");
        Ok(redriven)
    }
}

/// An active subscription: its filter, and the dispatcher that delivers its messages.
struct Active {
    filter: Filter,
    dispatcher: Dispatcher<MemorySettle>,
}

impl Active {
    /// Takes `message` for delivery; `false` once the subscription is closing.
    fn enqueue(&self, message: Message) -> bool {
        self.dispatcher.dispatch(message, (), 1).is_ok()
    }
}

/// How the in-memory bus settles a message: dead letters go to the bus's store; an acknowledged
/// or released message is simply dropped (nothing outlives a subscription but its dead letters).
struct MemorySettle {
    name: String,
    dead_letters: Arc<DeadLetterStore>,
}

#[async_trait]
impl Settle for MemorySettle {
    type Receipt = ();

    async fn ack(&self, (): ()) {}

    async fn dead_letter(&self, (): (), message: &Message, attempts: u32, error: String) {
        tracing::error!(
            subscription = %self.name,
            message_id = %message.id,
            message_type = %message.message_type,
            attempts,
            error = %error,
            "message dead-lettered"
        );
        let letter = DeadLetter::new(message.clone(), self.name.as_str(), attempts)
            .with_last_error(error)
            .with_dead_lettered_at(Utc::now());
        lock(&self.dead_letters)
            .entry(self.name.clone())
            .or_default()
            .push(letter);
    }

    async fn release(&self, (): ()) {}
}
