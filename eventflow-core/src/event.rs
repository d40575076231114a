//! Domain events: stable type names, schema versions, and the upcaster chain that keeps old events readable.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::store::{RecordedEvent, StreamId};

/// An event an aggregate emits.
///
/// The stored payload is the serde JSON form of the value; [`event_type`](Self::event_type) and
/// [`schema_version`](Self::schema_version) are stored beside it so a reader knows what it is and how
/// old it is. Both must stay stable once events are stored: rename a Rust variant freely, but never
/// the string it returns.
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name of this event, e.g. `"OrderPlaced"`.
    fn event_type(&self) -> &'static str;

    /// The schema version of this event type's payload. Bump it when the payload changes shape and
    /// register an [`Upcaster`] from the old version.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The upcasters that turn this type's older stored payloads into the current shape. Every
    /// typed reader (the repository, projections) applies them, so they are declared once, here.
    ///
    /// An enum event is stored in serde's externally tagged form, `{"Variant": {...fields}}`; an
    /// upcaster receives and returns that whole value:
    ///
    /// ```
    /// use eventflow_core::{DomainEvent, Upcasters};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum AccountEvent {
    ///     // Version 1 had no currency; version 2 requires one.
    ///     Deposited { amount: u64, currency: String },
    /// }
    ///
    /// impl DomainEvent for AccountEvent {
    ///     fn event_type(&self) -> &'static str { "Deposited" }
    ///     fn schema_version(&self) -> u32 { 2 }
    ///     fn upcasters() -> Upcasters {
    ///         Upcasters::new().register("Deposited", 1, |mut v: serde_json::Value| {
    ///             v["Deposited"]["currency"] = "EUR".into(); // every v1 deposit was in euros
    ///             Ok(v)
    ///         })
    ///     }
    /// }
    /// ```
    fn upcasters() -> Upcasters
    where
        Self: Sized,
    {
        Upcasters::new()
    }
}

/// A typed, decoded event with its envelope.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Envelope<E> {
    /// Unique event id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// 1-based version within the stream.
    pub version: u64,
    /// Global position, where the store has one.
    pub position: Option<u64>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, actor, trace context (shared with the record).
    pub metadata: Arc<Metadata>,
    /// The event.
    pub event: E,
}

impl<E> Envelope<E> {
    /// Pairs a recorded event's envelope with its decoded payload.
    pub fn from_recorded(recorded: RecordedEvent, event: E) -> Self {
        Envelope {
            event_id: recorded.event_id,
            stream_id: recorded.stream_id,
            version: recorded.version,
            position: recorded.position,
            recorded_at: recorded.recorded_at,
            metadata: recorded.metadata,
            event,
        }
    }
}

/// Migrates the payload of one event type from one schema version to the next.
///
/// Upcasters work on the stored JSON before deserialisation, so old events never need a Rust type.
pub trait Upcaster: Send + Sync {
    /// Turns a payload of `from_version` into one of `from_version + 1`.
    fn upcast(&self, payload: Value) -> std::result::Result<Value, String>;
}

impl<F> Upcaster for F
where
    F: Fn(Value) -> std::result::Result<Value, String> + Send + Sync,
{
    fn upcast(&self, payload: Value) -> std::result::Result<Value, String> {
        self(payload)
    }
}

/// A registry of upcasters keyed by (event type, version they upgrade from).
///
/// Decoding applies them in a chain: a version 1 payload passes through 1→2, 2→3, ... until no
/// upcaster is registered for its version.
#[derive(Clone, Default)]
pub struct Upcasters {
    /// Event type → (version upgraded from → upcaster). Keyed by type first so a lookup borrows
    /// the stored type name instead of allocating a key per decoded event.
    chain: HashMap<String, HashMap<u32, Arc<dyn Upcaster>>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upcasters")
            .field(
                "registered",
                &self
                    .chain
                    .iter()
                    .flat_map(|(t, versions)| versions.keys().map(move |v| (t, v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Upcasters {
    /// An empty registry: every payload is read as it is stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the upcaster that turns `event_type` payloads of `from_version` into `from_version + 1`.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        upcaster: impl Upcaster + 'static,
    ) -> Self {
        self.chain
            .entry(event_type.into())
            .or_default()
            .insert(from_version, Arc::new(upcaster));
        self
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Deserialises a recorded event into `E`, upcasting its payload first when it is of an old version.
    pub fn decode<E: DeserializeOwned>(&self, event: &RecordedEvent) -> Result<E> {
        // Most types never register one: skip hashing the type name on every decoded event.
        if self.chain.is_empty() {
            return event.decode_as_stored();
        }
        let versions = self
            .chain
            .get(&*event.event_type)
            .filter(|versions| versions.contains_key(&event.schema_version));
        let Some(versions) = versions else {
            return event.decode_as_stored();
        };
        let mut payload: Value = event.decode_as_stored()?;
        let mut version = event.schema_version;
        while let Some(upcaster) = versions.get(&version) {
            payload = upcaster.upcast(payload).map_err(|reason| Error::Upcast {
                stream: event.stream_id.clone(),
                version: event.version,
                event_type: event.event_type.to_string(),
                from_version: version,
                reason,
            })?;
            version += 1;
        }
        serde_json::from_value(payload).map_err(|source| event.decode_error(version, source))
    }
}
