//! Size limits an append must respect, so code tested on the in-memory store meets the limits of
//! the backend it will run on in its tests, not in production.

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::store::{AppendRequest, ExpectedVersion, NewEvent, StreamId};

/// Names of the limits, as they appear in [`Error::LimitExceeded::limit`](crate::Error::LimitExceeded).
pub mod names {
    /// Items one append writes: events, outbox entries, the idempotency key, version checks.
    pub const ITEMS_PER_APPEND: &str = "items per append";
    /// The stored size of one event.
    pub const EVENT_BYTES: &str = "event size in bytes";
    /// The stored size of one append.
    pub const APPEND_BYTES: &str = "append size in bytes";
    /// A stream id's length.
    pub const STREAM_ID_BYTES: &str = "stream id size in bytes";
    /// A stream id's length, when the append writes outbox entries.
    pub const OUTBOX_STREAM_ID_BYTES: &str = "stream id size in bytes (with outbox entries)";
    /// The payload of an event with an outbox entry: what the bus carries.
    pub const OUTBOX_PAYLOAD_BYTES: &str = "outbox event payload size in bytes";
    /// The event type of an event with an outbox entry: EventBridge's `DetailType` carries it.
    pub const OUTBOX_EVENT_TYPE_BYTES: &str = "outbox event type size in bytes";
    /// A metadata value of an event with an outbox entry (correlation id, causation id, actor,
    /// `traceparent`, a header): a Pub/Sub attribute value carries it.
    pub const OUTBOX_METADATA_VALUE_BYTES: &str = "outbox metadata value size in bytes";
    /// A metadata header's name of an event with an outbox entry: part of a Pub/Sub attribute key.
    pub const OUTBOX_HEADER_NAME_BYTES: &str = "outbox metadata header name size in bytes";
    /// An idempotency key's length.
    pub const IDEMPOTENCY_KEY_BYTES: &str = "idempotency key size in bytes";
    /// The stored size of one read-model document, its collection and id included.
    pub const DOCUMENT_BYTES: &str = "document size in bytes";
}

/// The largest document [`InMemoryDocumentStore`](crate::InMemoryDocumentStore) stores by
/// default: DynamoDB's 400 KB item, which is where `eventflow-store-dynamodb` keeps a document.
pub const MAX_DOCUMENT_BYTES: u64 = 400 * 1024;

/// What an append may write. `None` means unlimited.
///
/// [`StoreLimits::dynamodb`] (the in-memory store's default) mirrors DynamoDB's transaction and item
/// limits, counted the way `eventflow-store-dynamodb` counts them (an estimate of the item size: the
/// payload, event type, stream id and metadata plus a fixed overhead for attribute names and numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreLimits {
    /// Most items in one append (events, outbox entries, the idempotency key, version checks).
    pub max_items_per_append: Option<u64>,
    /// Largest stored event.
    pub max_event_bytes: Option<u64>,
    /// Largest append, all its items together.
    pub max_append_bytes: Option<u64>,
    /// Longest stream id.
    pub max_stream_id_bytes: Option<u64>,
    /// Longest stream id of an append that writes outbox entries (DynamoDB's outbox sort key
    /// embeds it).
    pub max_outbox_stream_id_bytes: Option<u64>,
    /// Longest idempotency key.
    pub max_idempotency_key_bytes: Option<u64>,
    /// Largest payload of an event appended with an outbox entry: what the bus it is relayed to
    /// carries (an entry the bus cannot take is refused at append rather than relayed).
    pub max_outbox_payload_bytes: Option<u64>,
}

/// Attribute names, version number, timestamp and event id of a stored event item.
const EVENT_OVERHEAD_BYTES: u64 = 160;
/// An outbox entry: its keys (the stream id is counted separately) and the event id.
const OUTBOX_OVERHEAD_BYTES: u64 = 96;
/// An idempotency key item besides the key: the stream id is counted separately, plus versions
/// and a timestamp.
const KEY_OVERHEAD_BYTES: u64 = 96;

/// The largest event payload an outbox entry may carry by default: EventBridge and SQS take
/// 256 KiB per message (Pub/Sub 10 MB), and the message wraps the payload in its envelope
/// (type, source, attributes), so 8 KiB are left for that.
pub const OUTBOX_PAYLOAD_BYTES: u64 = 256 * 1024 - 8 * 1024;

impl StoreLimits {
    /// Sets [`max_outbox_payload_bytes`](Self::max_outbox_payload_bytes) (`None`: unlimited).
    pub const fn with_max_outbox_payload_bytes(mut self, max: Option<u64>) -> Self {
        self.max_outbox_payload_bytes = max;
        self
    }

    /// DynamoDB's limits: 100 items and 4 MB per transaction, 400 KB per item, 2,048-byte
    /// partition keys, and 1,024-byte sort keys (an outbox entry's sort key is the stream id, a
    /// separator and a 20-digit version); outbox payloads up to [`OUTBOX_PAYLOAD_BYTES`].
    pub const fn dynamodb() -> Self {
        StoreLimits {
            max_items_per_append: Some(100),
            max_event_bytes: Some(400 * 1024),
            max_append_bytes: Some(4 * 1024 * 1024),
            max_stream_id_bytes: Some(2048),
            max_outbox_stream_id_bytes: Some(1024 - 1 - 20),
            // The key item's partition key is the key behind the 12-byte prefix `idempotency#`.
            max_idempotency_key_bytes: Some(2048 - 12),
            max_outbox_payload_bytes: Some(OUTBOX_PAYLOAD_BYTES),
        }
    }

    /// No limits at all.
    pub const fn unlimited() -> Self {
        StoreLimits {
            max_items_per_append: None,
            max_event_bytes: None,
            max_append_bytes: None,
            max_stream_id_bytes: None,
            max_outbox_stream_id_bytes: None,
            max_idempotency_key_bytes: None,
            max_outbox_payload_bytes: None,
        }
    }

    /// Checks `request` against the limits, and what [`AppendRequest::validate`] checks (empty
    /// ids and types, a stream named twice), in one pass, before anything is written.
    pub fn check(&self, request: &AppendRequest) -> Result<()> {
        let mut footprint = (0, 0);
        if let Some(key) = &request.idempotency_key {
            exceeds(
                names::IDEMPOTENCY_KEY_BYTES,
                key.len() as u64,
                self.max_idempotency_key_bytes,
            )?;
            footprint.0 += 1;
            footprint.1 +=
                key.len() as u64 + request.stream.as_str().len() as u64 + KEY_OVERHEAD_BYTES;
        }
        let outbox = request.outbox;
        self.check_stream(
            &request.stream,
            request.expected,
            &request.events,
            outbox,
            &mut footprint,
        )?;
        if !request.other_streams.is_empty() {
            // Names each stream once; `validate` is the one place that rule is written.
            request.validate()?;
        }
        for other in &request.other_streams {
            self.check_stream(
                &other.stream,
                other.expected,
                &other.events,
                outbox,
                &mut footprint,
            )?;
        }
        exceeds(
            names::ITEMS_PER_APPEND,
            footprint.0,
            self.max_items_per_append,
        )?;
        exceeds(names::APPEND_BYTES, footprint.1, self.max_append_bytes)
    }

    /// Checks one stream of an append, adding its items and bytes to `footprint`.
    #[inline]
    fn check_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        outbox: bool,
        footprint: &mut (u64, u64),
    ) -> Result<()> {
        let stream_bytes = stream.as_str().len() as u64;
        if stream_bytes == 0 {
            return Err(Error::InvalidRequest("stream id is empty".into()));
        }
        exceeds(
            names::STREAM_ID_BYTES,
            stream_bytes,
            self.max_stream_id_bytes,
        )?;
        if outbox && !events.is_empty() {
            exceeds(
                names::OUTBOX_STREAM_ID_BYTES,
                stream_bytes,
                self.max_outbox_stream_id_bytes,
            )?;
        }
        let checks = match (expected, events.len()) {
            (ExpectedVersion::Any, _) => 0,
            (_, 0) => 1,
            _ => 0,
        };
        footprint.0 += events.len() as u64 * (1 + u64::from(outbox)) + checks;
        for event in events {
            if event.event_type.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "an event for stream {stream} has an empty event type"
                )));
            }
            let size = event_bytes(stream_bytes, event);
            exceeds(names::EVENT_BYTES, size, self.max_event_bytes)?;
            footprint.1 += size;
            if outbox {
                outbox_entry_fits(event, self.max_outbox_payload_bytes)?;
                footprint.1 += stream_bytes + OUTBOX_OVERHEAD_BYTES;
            }
        }
        Ok(())
    }
}

impl Default for StoreLimits {
    /// [`StoreLimits::dynamodb`].
    fn default() -> Self {
        StoreLimits::dynamodb()
    }
}

/// Moved: [`extension::check_outbox_entry`](crate::extension::check_outbox_entry).
#[deprecated(
    since = "0.3.0",
    note = "use `eventflow_core::extension::check_outbox_entry`"
)]
pub fn check_outbox_entry(event: &NewEvent, max_payload_bytes: Option<u64>) -> Result<()> {
    outbox_entry_fits(event, max_payload_bytes)
}

/// The longest event type an outbox entry carries: EventBridge's `DetailType` allows 128
/// characters (bytes are counted, which is never more lenient).
pub const MAX_OUTBOX_EVENT_TYPE_BYTES: u64 = 128;

/// The longest metadata value an outbox entry carries: a Pub/Sub attribute value allows 1,024
/// bytes.
pub const MAX_OUTBOX_METADATA_VALUE_BYTES: u64 = 1024;

/// The longest metadata header name an outbox entry carries: a Pub/Sub attribute key allows 256
/// bytes, of which `eventflow-header-` takes 17.
pub const MAX_OUTBOX_HEADER_NAME_BYTES: u64 = 256 - 17;

/// See [`extension::check_outbox_entry`](crate::extension::check_outbox_entry).
pub(crate) fn outbox_entry_fits(event: &NewEvent, max_payload_bytes: Option<u64>) -> Result<()> {
    exceeds(
        names::OUTBOX_PAYLOAD_BYTES,
        event.payload.len() as u64,
        max_payload_bytes,
    )?;
    // What every bus eventflow relays to accepts, so an entry one of them would refuse for good
    // is refused here, before it is written, rather than parked after.
    exceeds(
        names::OUTBOX_EVENT_TYPE_BYTES,
        event.event_type.len() as u64,
        Some(MAX_OUTBOX_EVENT_TYPE_BYTES),
    )?;
    let metadata = &event.metadata;
    let values = [
        &metadata.correlation_id,
        &metadata.causation_id,
        &metadata.actor,
        &metadata.traceparent,
    ];
    for value in values
        .into_iter()
        .flatten()
        .chain(metadata.headers.values())
    {
        exceeds(
            names::OUTBOX_METADATA_VALUE_BYTES,
            value.len() as u64,
            Some(MAX_OUTBOX_METADATA_VALUE_BYTES),
        )?;
    }
    for name in metadata.headers.keys() {
        exceeds(
            names::OUTBOX_HEADER_NAME_BYTES,
            name.len() as u64,
            Some(MAX_OUTBOX_HEADER_NAME_BYTES),
        )?;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&event.payload).map_err(|e| {
        Error::InvalidRequest(format!(
            "the payload of a {} event is not JSON, so no bus can carry its outbox entry: {e}",
            event.event_type
        ))
    })?;
    Ok(())
}

fn event_bytes(stream_bytes: u64, event: &NewEvent) -> u64 {
    stream_bytes
        + event.event_type.len() as u64
        + event.payload.len() as u64
        + metadata_bytes(&event.metadata)
        + EVENT_OVERHEAD_BYTES
}

fn metadata_bytes(metadata: &Metadata) -> u64 {
    let optional = [
        &metadata.correlation_id,
        &metadata.causation_id,
        &metadata.actor,
        &metadata.traceparent,
    ];
    let fields: usize = optional
        .iter()
        .filter_map(|f| f.as_ref())
        .map(|f| f.len() + 16)
        .sum();
    let headers: usize = metadata
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    (fields + headers) as u64
}

#[inline]
fn exceeds(limit: &'static str, actual: u64, max: Option<u64>) -> Result<()> {
    match max {
        Some(max) if actual > max => Err(Error::LimitExceeded { limit, actual, max }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// An event whose payload is a JSON string of `payload_bytes` bytes.
    fn event(payload_bytes: usize) -> NewEvent {
        let payload = format!("\"{}\"", "x".repeat(payload_bytes.saturating_sub(2)));
        NewEvent::new("Big", 1, Bytes::from(payload), Metadata::new())
    }

    #[test]
    fn outbox_entries_must_be_json() {
        let not_json = NewEvent::new("Raw", 1, Bytes::from_static(b"not json"), Metadata::new());
        let limits = StoreLimits::dynamodb();
        assert!(limits.check(&request(vec![not_json.clone()])).is_ok());
        let relayed = request(vec![not_json]).with_outbox(true);
        assert!(matches!(
            limits.check(&relayed),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn outbox_entries_respect_what_every_bus_carries() {
        let limits = StoreLimits::unlimited();
        let named = |event_type: String| {
            NewEvent::new(event_type, 1, Bytes::from_static(b"{}"), Metadata::new())
        };
        let refused = |event: NewEvent| {
            match limits.check(&request(vec![event.clone()]).with_outbox(true)) {
                Err(Error::LimitExceeded { limit, .. }) => {
                    // Without an outbox entry no bus carries it: accepted.
                    assert!(limits.check(&request(vec![event])).is_ok());
                    Some(limit)
                }
                other => {
                    assert!(other.is_ok(), "{other:?}");
                    None
                }
            }
        };
        assert_eq!(refused(named("E".repeat(128))), None);
        assert_eq!(
            refused(named("E".repeat(129))),
            Some(names::OUTBOX_EVENT_TYPE_BYTES),
            "EventBridge's DetailType allows 128"
        );
        let traced = |correlation: usize, header: usize| {
            let metadata = Metadata::new()
                .with_correlation_id("c".repeat(correlation))
                .with_header("h".repeat(header), "v");
            NewEvent::new("E", 1, Bytes::from_static(b"{}"), metadata)
        };
        assert_eq!(refused(traced(1024, 239)), None);
        assert_eq!(
            refused(traced(1025, 1)),
            Some(names::OUTBOX_METADATA_VALUE_BYTES),
            "a Pub/Sub attribute value allows 1,024 bytes"
        );
        assert_eq!(
            refused(traced(1, 240)),
            Some(names::OUTBOX_HEADER_NAME_BYTES),
            "a Pub/Sub attribute key allows 256 bytes"
        );
    }

    fn request(events: Vec<NewEvent>) -> AppendRequest {
        AppendRequest::new(StreamId::new("s-1"), ExpectedVersion::Any, events)
    }

    #[test]
    fn dynamodb_limits_refuse_what_dynamodb_would() {
        let limits = StoreLimits::dynamodb();
        assert!(limits.check(&request(vec![event(300 * 1024)])).is_ok());
        // The same event with an outbox entry is more than a bus message carries.
        let relayed = request(vec![event(300 * 1024)]).with_outbox(true);
        assert!(matches!(
            limits.check(&relayed),
            Err(Error::LimitExceeded {
                limit: names::OUTBOX_PAYLOAD_BYTES,
                ..
            })
        ));
        let refused = limits.check(&request(vec![event(400 * 1024)]));
        assert!(matches!(
            refused,
            Err(Error::LimitExceeded {
                limit: names::EVENT_BYTES,
                ..
            })
        ));
        let hundred: Vec<_> = (0..100).map(|_| event(10)).collect();
        assert!(limits.check(&request(hundred.clone())).is_ok());
        let with_outbox = request(hundred).with_outbox(true);
        assert!(matches!(
            limits.check(&with_outbox),
            Err(Error::LimitExceeded {
                limit: names::ITEMS_PER_APPEND,
                actual: 200,
                max: 100
            })
        ));
        let spread = request(vec![event(390 * 1024)]).with_stream(
            StreamId::new("s-2"),
            ExpectedVersion::Any,
            vec![event(390 * 1024)],
        );
        assert!(limits.check(&spread).is_ok(), "the size limit is per event");
        let mut too_big = request(Vec::new());
        for i in 0..11 {
            too_big = too_big.with_stream(
                StreamId::new(format!("t-{i}")),
                ExpectedVersion::Any,
                vec![event(390 * 1024)],
            );
        }
        assert!(matches!(
            limits.check(&too_big),
            Err(Error::LimitExceeded {
                limit: names::APPEND_BYTES,
                ..
            })
        ));
        assert!(StoreLimits::unlimited().check(&too_big).is_ok());
    }

    #[test]
    fn keys_are_limited() {
        let limits = StoreLimits::dynamodb();
        let long_stream = AppendRequest::new(
            StreamId::new("s".repeat(2100)),
            ExpectedVersion::Any,
            vec![event(1)],
        );
        assert!(matches!(
            limits.check(&long_stream),
            Err(Error::LimitExceeded {
                limit: names::STREAM_ID_BYTES,
                ..
            })
        ));
        let long_key = request(vec![event(1)]).with_idempotency_key("k".repeat(3000));
        assert!(matches!(
            limits.check(&long_key),
            Err(Error::LimitExceeded {
                limit: names::IDEMPOTENCY_KEY_BYTES,
                ..
            })
        ));
    }
}
