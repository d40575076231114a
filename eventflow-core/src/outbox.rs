//! The transactional outbox: events written with their outbox entries in one atomic append, relayed
//! to the bus at least once. There is no dual write: if the relay crashes after publishing and
//! before marking, the entry is published again, and consumers deduplicate by message id (= event id).
//!
//! An entry the bus refuses for good (too large for it, not a valid message) is **parked**: set
//! aside with the reason, listed by [`ParkedEntries::parked`] and put back by
//! [`ParkedEntries::redrive`]. It holds back the later entries of its own stream (their order
//! matters) and nothing else; transient failures are retried on the next round.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use crate::bus::{EventBus, Message, attributes};
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::store::{RecordedEvent, StreamId};

/// The outbox side of an event store.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `max` unpublished entries; entries of one stream come in version order. A stream
    /// with a parked entry contributes nothing until the entry is redriven.
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>>;

    /// Marks entries as published, so `pending` no longer returns them. Marking an entry that is
    /// already marked is not an error.
    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()>;

    /// Sets aside an entry the bus refused for good, with the reason. Parking an entry that is
    /// not pending is not an error.
    async fn park(&self, event: &RecordedEvent, reason: &str) -> Result<()>;
}

#[async_trait]
impl<O: Outbox + ?Sized> Outbox for Arc<O> {
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>> {
        (**self).pending(max).await
    }
    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()> {
        (**self).mark_published(events).await
    }
    async fn park(&self, event: &RecordedEvent, reason: &str) -> Result<()> {
        (**self).park(event, reason).await
    }
}

/// An outbox entry set aside because the bus refused it for good.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParkedEntry {
    /// The event whose entry it is.
    pub event: RecordedEvent,
    /// Why the bus refused it.
    pub reason: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

impl ParkedEntry {
    /// Builds an entry (used by backends).
    pub fn new(event: RecordedEvent, reason: impl Into<String>, parked_at: DateTime<Utc>) -> Self {
        ParkedEntry {
            event,
            reason: reason.into(),
            parked_at,
        }
    }
}

/// An operator's view of the parked outbox entries.
#[async_trait]
pub trait ParkedEntries: Send + Sync {
    /// Up to `max` parked entries, in (stream, version) order.
    async fn parked(&self, max: usize) -> Result<Vec<ParkedEntry>>;

    /// Puts the parked entry of `stream` at `version` back into the outbox (e.g. after the bus's
    /// limit was raised); `false` when there was none.
    async fn redrive(&self, stream: &StreamId, version: u64) -> Result<bool>;
}

/// Whether a publish failure is the message's own fault (it will never be accepted) rather than
/// the bus's (it may be on the next try).
fn refused_for_good(error: &Error) -> bool {
    matches!(
        error,
        Error::LimitExceeded { .. }
            | Error::InvalidRequest(_)
            | Error::Serialization { .. }
            | Error::Decode { .. }
    )
}

/// Attribute names under which a relayed event's envelope travels on the bus.
pub mod event_attributes {
    /// The event's stream id.
    pub const STREAM_ID: &str = "eventflow-stream-id";
    /// The event's stream version.
    pub const VERSION: &str = "eventflow-version";
    /// The event's global position, where the store has one.
    pub const POSITION: &str = "eventflow-position";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "eventflow-schema-version";
    /// When the store recorded it (RFC 3339).
    pub const RECORDED_AT: &str = "eventflow-recorded-at";
    /// The actor from the event metadata.
    pub const ACTOR: &str = "eventflow-actor";
    /// Prefix of free-form metadata headers.
    pub const HEADER_PREFIX: &str = "eventflow-header-";
}

/// Turns a recorded event into a bus message from `source`: id = event id, type = event type,
/// ordering key = stream id, metadata as attributes.
pub fn event_to_message(event: &RecordedEvent, source: &str) -> Result<Message> {
    use event_attributes as ea;
    let payload = serde_json::from_slice(&event.payload)
        .map_err(|e| Error::serialization(event.event_type.as_ref(), e))?;
    let mut message = Message::new(event.event_type.to_string(), source, payload)
        .with_id(event.event_id.to_string())
        .with_ordering_key(event.stream_id.as_str())
        .with_attribute(ea::STREAM_ID, event.stream_id.as_str())
        .with_attribute(ea::VERSION, event.version.to_string())
        .with_attribute(ea::SCHEMA_VERSION, event.schema_version.to_string())
        .with_attribute(ea::RECORDED_AT, event.recorded_at.to_rfc3339());
    if let Some(position) = event.position {
        message = message.with_attribute(ea::POSITION, position.to_string());
    }
    let m = &event.metadata;
    for (name, value) in [
        (attributes::CORRELATION_ID, &m.correlation_id),
        (attributes::CAUSATION_ID, &m.causation_id),
        (attributes::TRACEPARENT, &m.traceparent),
        (ea::ACTOR, &m.actor),
    ] {
        if let Some(value) = value {
            message = message.with_attribute(name, value.as_str());
        }
    }
    for (name, value) in &m.headers {
        message = message.with_attribute(format!("{}{name}", ea::HEADER_PREFIX), value.as_str());
    }
    Ok(message)
}

/// Rebuilds the recorded event a message was relayed from (see [`event_to_message`]), so a
/// [`Projection`](crate::Projection) can be fed from a bus subscription.
pub fn message_to_event(message: &Message) -> Result<RecordedEvent> {
    use event_attributes as ea;
    let missing = |name: &str| {
        Error::InvalidRequest(format!(
            "message {} has no valid {name} attribute",
            message.id
        ))
    };
    let attr = |name: &'static str| message.attribute(name).ok_or_else(|| missing(name));
    let event_id = Uuid::parse_str(&message.id).map_err(|_| missing("id"))?;
    let version = attr(ea::VERSION)?
        .parse()
        .map_err(|_| missing(ea::VERSION))?;
    let schema_version = attr(ea::SCHEMA_VERSION)?
        .parse()
        .map_err(|_| missing(ea::SCHEMA_VERSION))?;
    let recorded_at = DateTime::parse_from_rfc3339(attr(ea::RECORDED_AT)?)
        .map_err(|_| missing(ea::RECORDED_AT))?
        .with_timezone(&Utc);
    let position = match message.attribute(ea::POSITION) {
        Some(p) => Some(p.parse().map_err(|_| missing(ea::POSITION))?),
        None => None,
    };
    let owned = |name: &str| message.attribute(name).map(str::to_owned);
    let mut metadata = Metadata::new();
    metadata.correlation_id = owned(attributes::CORRELATION_ID);
    metadata.causation_id = owned(attributes::CAUSATION_ID);
    metadata.traceparent = owned(attributes::TRACEPARENT);
    metadata.actor = owned(ea::ACTOR);
    metadata.headers = message
        .attributes
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(ea::HEADER_PREFIX)?.to_owned(), v.clone())))
        .collect();
    let payload = serde_json::to_vec(&message.payload)
        .map_err(|e| Error::serialization(message.message_type.as_str(), e))?;
    Ok(RecordedEvent {
        event_id,
        stream_id: StreamId::new(attr(ea::STREAM_ID)?),
        version,
        position,
        event_type: message.message_type.clone().into(),
        schema_version,
        recorded_at,
        metadata: metadata.into(),
        payload: payload.into(),
    })
}

/// Publishes outbox entries to a bus, at least once, in per-stream order.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn EventBus>,
    source: String,
    batch_size: usize,
    /// Wakes [`run`](OutboxRelay::run) before its interval is up ([`kick`](OutboxRelay::kick)).
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("source", &self.source)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay from `outbox` to `bus`, publishing with `source` as the messages' source.
    pub fn new(outbox: Arc<dyn Outbox>, bus: Arc<dyn EventBus>, source: impl Into<String>) -> Self {
        OutboxRelay {
            outbox,
            bus,
            source: source.into(),
            batch_size: 100,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// How many entries one round reads and publishes (default 100).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Publishes what is pending, batch by batch, until the outbox is empty; returns how many
    /// entries were published. An entry is marked only after the bus accepted it.
    ///
    /// When the bus refuses a batch for a reason that will not pass (an entry too large for it,
    /// not a valid message), the batch is published entry by entry: the entries it refuses are
    /// parked, the later entries of their streams wait, and everything else goes out. A transient
    /// failure ends the round with the error; the entries stay pending for the next one.
    pub async fn relay_pending(&self) -> Result<usize> {
        let mut published = 0;
        loop {
            let batch = (*self.outbox).pending(self.batch_size).await?;
            if batch.is_empty() {
                return Ok(published);
            }
            let span = tracing::info_span!("eventflow.outbox.relay", count = batch.len());
            published += self.relay_batch(batch).instrument(span).await?;
        }
    }

    async fn relay_batch(&self, batch: Vec<RecordedEvent>) -> Result<usize> {
        let messages: Result<Vec<Message>> = batch
            .iter()
            .map(|event| event_to_message(event, &self.source))
            .collect();
        if let Ok(messages) = messages {
            match (*self.bus).publish(messages).await {
                Ok(()) => {
                    (*self.outbox).mark_published(&batch).await?;
                    return Ok(batch.len());
                }
                Err(error) if !refused_for_good(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "the bus refused a batch; relaying entry by entry");
                }
            }
        }
        let mut published = 0;
        let mut held_back: Vec<&StreamId> = Vec::new();
        for event in &batch {
            if held_back.contains(&&event.stream_id) {
                continue;
            }
            // Rebuilt rather than cloned up front: this path is the rare one.
            let refusal = match event_to_message(event, &self.source) {
                Ok(message) => match (*self.bus).publish(vec![message]).await {
                    Ok(()) => {
                        (*self.outbox)
                            .mark_published(std::slice::from_ref(event))
                            .await?;
                        published += 1;
                        continue;
                    }
                    Err(error) if refused_for_good(&error) => error,
                    Err(error) => return Err(error),
                },
                Err(error) => error,
            };
            tracing::error!(
                stream = %event.stream_id,
                version = event.version,
                event_type = %event.event_type,
                error = %refusal,
                "outbox entry refused by the bus for good; parked, its stream waits"
            );
            (*self.outbox).park(event, &refusal.to_string()).await?;
            held_back.push(&event.stream_id);
        }
        Ok(published)
    }

    /// Makes [`run`](Self::run) relay now rather than when its interval is up: call it after a
    /// command committed, so its events go out at once; the interval stays the safety net for an
    /// entry a kick missed (a crash between commit and kick).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Relays every `interval`, and at once when [kicked](Self::kick), until `shutdown` resolves;
    /// then one last round, so what was committed before the stop goes out. One task runs the
    /// rounds, so entries of a stream go out in order and kicks never race. Failures are logged and
    /// retried on the next round: entries stay in the outbox until published.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.relay_pending().await {
                tracing::warn!(%error, "outbox relay round failed; will retry");
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        if let Err(error) = self.relay_pending().await {
            tracing::warn!(%error, "final outbox relay round failed; entries stay pending");
        }
    }
}
