//! The transactional outbox: events written with their outbox entries in one atomic append, relayed
//! to the bus at least once. There is no dual write: if the relay crashes after publishing and
//! before marking, the entry is published again, and consumers deduplicate by message id (= event id).

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
    /// Up to `max` unpublished entries; entries of one stream come in version order.
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>>;

    /// Marks entries as published, so `pending` no longer returns them. Marking an entry that is
    /// already marked is not an error.
    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()>;
}

#[async_trait]
impl<O: Outbox + ?Sized> Outbox for Arc<O> {
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>> {
        (**self).pending(max).await
    }
    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()> {
        (**self).mark_published(events).await
    }
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
        .map_err(|e| Error::serialization(event.event_type.as_str(), e))?;
    let mut message = Message::new(event.event_type.clone(), source, payload)
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
        event_type: message.message_type.clone(),
        schema_version,
        recorded_at,
        metadata,
        payload: payload.into(),
    })
}

/// Publishes outbox entries to a bus, at least once, in per-stream order.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn EventBus>,
    source: String,
    batch_size: usize,
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
        }
    }

    /// How many entries one round reads and publishes (default 100).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Publishes what is pending, batch by batch, until the outbox is empty; returns how many
    /// entries were published. An entry is marked only after the bus accepted it.
    pub async fn relay_pending(&self) -> Result<usize> {
        let mut published = 0;
        loop {
            let batch = (*self.outbox).pending(self.batch_size).await?;
            if batch.is_empty() {
                return Ok(published);
            }
            let messages = batch
                .iter()
                .map(|event| event_to_message(event, &self.source))
                .collect::<Result<Vec<_>>>()?;
            let span = tracing::info_span!("eventflow.outbox.relay", count = messages.len());
            (*self.bus).publish(messages).instrument(span).await?;
            (*self.outbox).mark_published(&batch).await?;
            published += batch.len();
        }
    }

    /// Relays every `interval` until `shutdown` resolves. Failures are logged and retried on the next
    /// round: entries stay in the outbox until published.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.relay_pending().await {
                tracing::warn!(%error, "outbox relay round failed; will retry");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
