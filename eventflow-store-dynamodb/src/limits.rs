//! DynamoDB's limits, checked before any call so that an append is refused whole, with a typed
//! [`Error::LimitExceeded`] naming the limit, rather than split
//! over several transactions or sent to fail remotely.

use eventflow_core::{AppendRequest, Error, ExpectedVersion, Metadata, NewEvent, Result};

use crate::items::{
    IDEMPOTENCY_PREFIX, IDEMPOTENCY_SK, MAX_OUTBOX_STREAM_ID_BYTES, OUTBOX_PREFIX, event_attr,
    meta_attr,
};

/// Most items (puts and condition checks) in one `TransactWriteItems`.
pub const MAX_TRANSACTION_ITEMS: u64 = 100;
/// Largest item DynamoDB stores: 400 KB, attribute names included.
pub const MAX_ITEM_BYTES: u64 = 400 * 1024;
/// Largest aggregate size of the items of one transaction: 4 MB.
pub const MAX_TRANSACTION_BYTES: u64 = 4 * 1024 * 1024;
/// Largest partition key value (a stream id, or a prefixed idempotency key).
pub const MAX_PARTITION_KEY_BYTES: u64 = 2048;
/// Largest sort key value (the outbox sort key embeds the stream id).
pub const MAX_SORT_KEY_BYTES: u64 = 1024;

/// Names of the limits, as they appear in [`Error::LimitExceeded::limit`](eventflow_core::Error::LimitExceeded).
pub mod names {
    /// [`MAX_TRANSACTION_ITEMS`](super::MAX_TRANSACTION_ITEMS).
    pub const TRANSACTION_ITEMS: &str = "DynamoDB items per transaction";
    /// [`MAX_ITEM_BYTES`](super::MAX_ITEM_BYTES).
    pub const ITEM_BYTES: &str = "DynamoDB item size in bytes";
    /// [`MAX_TRANSACTION_BYTES`](super::MAX_TRANSACTION_BYTES).
    pub const TRANSACTION_BYTES: &str = "DynamoDB transaction size in bytes";
    /// [`MAX_PARTITION_KEY_BYTES`](super::MAX_PARTITION_KEY_BYTES) for a stream id.
    pub const STREAM_ID_BYTES: &str = "DynamoDB partition key size in bytes (stream id)";
    /// [`MAX_PARTITION_KEY_BYTES`](super::MAX_PARTITION_KEY_BYTES) for an idempotency key.
    pub const IDEMPOTENCY_KEY_BYTES: &str =
        "DynamoDB partition key size in bytes (idempotency key)";
    /// [`MAX_SORT_KEY_BYTES`](super::MAX_SORT_KEY_BYTES) for an outbox entry's sort key.
    pub const OUTBOX_STREAM_ID_BYTES: &str =
        "DynamoDB sort key size in bytes (outbox entry: stream id)";
}

/// Upper bound of the size of a version number (`u64::MAX`: 20 digits, 11 bytes).
const MAX_VERSION_BYTES: u64 = 11;
/// A `recorded_at` timestamp: `2025-01-01T00:00:00.000000000Z`.
const TIMESTAMP_BYTES: u64 = 30;
/// A hyphenated UUID.
const UUID_BYTES: u64 = 36;

/// What a checked append will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Items in the transaction.
    pub(crate) items: u64,
    /// Their aggregate size.
    pub(crate) bytes: u64,
}

/// Condition-check items an append of this shape needs besides its puts: the check that item `n`
/// exists for a caller's `Exact(n > 0)`, and for an empty append the check that the stream has
/// not moved on. An `Observed` version was read from the stream: it needs no existence check.
pub(crate) fn condition_checks(expected: ExpectedVersion, events: usize) -> u64 {
    match (expected, events) {
        (ExpectedVersion::Any, _) => 0,
        (
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) | ExpectedVersion::Observed(_),
            0,
        ) => 1,
        (ExpectedVersion::Exact(_), 0) => 2,
        (
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) | ExpectedVersion::Observed(_),
            _,
        ) => 0,
        (ExpectedVersion::Exact(_), _) => 1,
        // A variant added to the core later: assume the most checks.
        _ => 2,
    }
}

/// Checks keys, item sizes, item count and transaction size of `request`, over all its streams,
/// before any call. Sizes are upper bounds (the largest possible version number and timestamp are
/// assumed), so a request that passes never fails remotely on a limit, whatever versions it lands at.
pub(crate) fn check(
    request: &AppendRequest,
    max_outbox_payload_bytes: Option<u64>,
) -> Result<Footprint> {
    request.validate()?;
    let mut items = 0;
    let mut bytes = 0;
    for (stream, expected, events) in request.streams() {
        let stream_bytes = stream.as_str().len() as u64;
        exceeds(
            names::STREAM_ID_BYTES,
            stream_bytes,
            MAX_PARTITION_KEY_BYTES,
        )?;
        let count = events.len() as u64;
        let checks = condition_checks(expected, events.len());
        items += count + checks;
        for event in events {
            let size = event_item_size(stream_bytes, event)?;
            exceeds(names::ITEM_BYTES, size, MAX_ITEM_BYTES)?;
            if request.outbox {
                eventflow_core::extension::check_outbox_entry(event, max_outbox_payload_bytes)?;
            }
            bytes += size;
        }
        let event_key_bytes = event_attr::STREAM_ID.len() as u64
            + stream_bytes
            + event_attr::VERSION.len() as u64
            + MAX_VERSION_BYTES;
        bytes += checks * event_key_bytes;
        if request.outbox && count > 0 {
            exceeds(
                names::OUTBOX_STREAM_ID_BYTES,
                stream_bytes,
                MAX_OUTBOX_STREAM_ID_BYTES as u64,
            )?;
            items += count;
            bytes += count * outbox_item_size(stream_bytes);
        }
    }
    if let Some(key) = &request.idempotency_key {
        let pk = (IDEMPOTENCY_PREFIX.len() + key.len()) as u64;
        exceeds(names::IDEMPOTENCY_KEY_BYTES, pk, MAX_PARTITION_KEY_BYTES)?;
        items += 1;
        bytes += idempotency_item_size(pk, request.stream.as_str().len() as u64);
    }
    exceeds(names::TRANSACTION_ITEMS, items, MAX_TRANSACTION_ITEMS)?;
    exceeds(names::TRANSACTION_BYTES, bytes, MAX_TRANSACTION_BYTES)?;
    Ok(Footprint { items, bytes })
}

fn exceeds(limit: &'static str, actual: u64, max: u64) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded { limit, actual, max });
    }
    Ok(())
}

/// Upper bound of an event item's size (see [`crate::items::event_item`]).
pub(crate) fn event_item_size(stream_bytes: u64, event: &NewEvent) -> Result<u64> {
    use event_attr as a;
    let name = |n: &str| n.len() as u64;
    let metadata = if *event.metadata == Metadata::default() {
        0
    } else {
        let json = serde_json::to_string(&event.metadata).map_err(|e| Error::Serialization {
            what: format!("metadata of {}", event.event_type),
            source: e,
        })?;
        name(a::METADATA) + json.len() as u64
    };
    Ok(name(a::STREAM_ID)
        + stream_bytes
        + name(a::VERSION)
        + MAX_VERSION_BYTES
        + name(a::EVENT_ID)
        + UUID_BYTES
        + name(a::EVENT_TYPE)
        + event.event_type.len() as u64
        + name(a::SCHEMA_VERSION)
        + 6
        + name(a::PAYLOAD)
        + event.payload.len() as u64
        + metadata
        + name(a::RECORDED_AT)
        + TIMESTAMP_BYTES)
}

/// Upper bound of an outbox entry's size (see [`crate::items::outbox_item`]).
fn outbox_item_size(stream_bytes: u64) -> u64 {
    use meta_attr as a;
    let name = |n: &str| n.len() as u64;
    name(a::PK)
        + OUTBOX_PREFIX.len() as u64
        + 10
        + name(a::SK)
        + stream_bytes
        + 21
        + name(a::STREAM_ID)
        + stream_bytes
        + name(a::VERSION)
        + MAX_VERSION_BYTES
        + name(a::EVENT_ID)
        + UUID_BYTES
}

/// Upper bound of an idempotency key item's size (see [`crate::items::idempotency_item`]).
fn idempotency_item_size(pk_bytes: u64, stream_bytes: u64) -> u64 {
    use meta_attr as a;
    let name = |n: &str| n.len() as u64;
    name(a::PK)
        + pk_bytes
        + name(a::SK)
        + IDEMPOTENCY_SK.len() as u64
        + name(a::STREAM_ID)
        + stream_bytes
        + name(a::FIRST_VERSION)
        + MAX_VERSION_BYTES
        + name(a::LAST_VERSION)
        + MAX_VERSION_BYTES
        + name(a::RECORDED_AT)
        + TIMESTAMP_BYTES
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use eventflow_core::{AppendResult, StreamId};

    use super::*;
    use crate::items::{event_item, idempotency_item, item_size, outbox_item};

    fn events(count: usize, payload_bytes: usize) -> Vec<NewEvent> {
        (0..count)
            .map(|_| {
                // A JSON string, so an outbox entry of it is a valid message.
                let payload = format!("\"{}\"", "x".repeat(payload_bytes.saturating_sub(2)));
                NewEvent::new("Sized", 1, Bytes::from(payload), Metadata::new())
            })
            .collect()
    }

    fn request(expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
        AppendRequest::new(StreamId::new("s-1"), expected, events)
    }

    fn limit_of(result: Result<Footprint>) -> &'static str {
        match result {
            Err(Error::LimitExceeded { limit, .. }) => limit,
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn item_count_includes_outbox_key_and_condition_checks() {
        let r = request(ExpectedVersion::NoStream, events(100, 10));
        assert_eq!(check(&r, None).unwrap().items, 100);
        let r = request(ExpectedVersion::NoStream, events(101, 10));
        assert_eq!(limit_of(check(&r, None)), names::TRANSACTION_ITEMS);
        // 49 events + 49 outbox entries + key + check of item 7 = 100.
        let r = request(ExpectedVersion::Exact(7), events(49, 10))
            .with_outbox(true)
            .with_idempotency_key("k");
        assert_eq!(check(&r, None).unwrap().items, 100);
        let r = request(ExpectedVersion::Exact(7), events(50, 10)).with_outbox(true);
        assert_eq!(limit_of(check(&r, None)), names::TRANSACTION_ITEMS);
        // An empty append with a key checks item 7 exists and item 8 does not.
        let r = request(ExpectedVersion::Exact(7), Vec::new()).with_idempotency_key("k");
        assert_eq!(check(&r, None).unwrap().items, 3);
        // A version the writer read needs no existence check: 50 events + 50 outbox entries.
        let r = request(ExpectedVersion::Observed(7), events(50, 10)).with_outbox(true);
        assert_eq!(check(&r, None).unwrap().items, 100);
    }

    #[test]
    fn sizes_are_checked_per_item_and_per_transaction() {
        let r = request(ExpectedVersion::Any, events(1, 400 * 1024));
        assert_eq!(limit_of(check(&r, None)), names::ITEM_BYTES);
        let r = request(ExpectedVersion::Any, events(12, 350 * 1024));
        assert_eq!(limit_of(check(&r, None)), names::TRANSACTION_BYTES);
        assert!(check(&request(ExpectedVersion::Any, events(11, 350 * 1024)), None).is_ok());
    }

    #[test]
    fn limits_count_every_stream_of_a_multi_stream_append() {
        // 3 streams x (30 events + 30 outbox entries) = 180 items: refused as one transaction.
        let mut r = request(ExpectedVersion::NoStream, events(30, 10)).with_outbox(true);
        for i in 2..=3 {
            r = r.with_stream(
                StreamId::new(format!("s-{i}")),
                ExpectedVersion::NoStream,
                events(30, 10),
            );
        }
        assert_eq!(limit_of(check(&r, None)), names::TRANSACTION_ITEMS);
        // 12 streams of one 350 KB event each: over 4 MB together.
        let mut r = request(ExpectedVersion::Any, events(1, 350 * 1024));
        for i in 2..=12 {
            r = r.with_stream(
                StreamId::new(format!("s-{i}")),
                ExpectedVersion::Any,
                events(1, 350 * 1024),
            );
        }
        assert_eq!(limit_of(check(&r, None)), names::TRANSACTION_BYTES);
        // A checked stream without events counts its condition checks.
        let r = request(ExpectedVersion::NoStream, events(1, 10)).with_stream(
            StreamId::new("s-2"),
            ExpectedVersion::Exact(4),
            Vec::new(),
        );
        assert_eq!(check(&r, None).unwrap().items, 3);
    }

    #[test]
    fn keys_are_checked() {
        let long = "x".repeat(2049);
        let r = AppendRequest::new(StreamId::new(&long), ExpectedVersion::Any, events(1, 1));
        assert_eq!(limit_of(check(&r, None)), names::STREAM_ID_BYTES);
        let r = AppendRequest::new(
            StreamId::new(&long[..1100]),
            ExpectedVersion::Any,
            events(1, 1),
        )
        .with_outbox(true);
        assert_eq!(limit_of(check(&r, None)), names::OUTBOX_STREAM_ID_BYTES);
        let r = request(ExpectedVersion::Any, events(1, 1)).with_idempotency_key(long);
        assert_eq!(limit_of(check(&r, None)), names::IDEMPOTENCY_KEY_BYTES);
        let r = AppendRequest::new(StreamId::new(""), ExpectedVersion::Any, events(1, 1));
        assert!(matches!(check(&r, None), Err(Error::InvalidRequest(_))));
    }

    #[test]
    fn size_bounds_cover_the_real_items() {
        let stream = StreamId::new("order-42");
        let at = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap();
        let event = NewEvent::new(
            "Placed",
            u32::MAX,
            Bytes::from_static(b"{\"a\":1}"),
            Metadata::new().with_actor("ann"),
        );
        let bound = event_item_size(stream.as_str().len() as u64, &event).unwrap();
        let item = event_item(&stream, u64::MAX, &event, at).unwrap();
        assert!(item_size(&item) <= bound, "{} > {bound}", item_size(&item));
        assert!(bound - item_size(&item) < 16);
        let outbox = outbox_item(&stream, u64::MAX, event.event_id, u32::MAX);
        assert!(item_size(&outbox) <= outbox_item_size(8));
        let result = AppendResult::new(stream, u64::MAX, u64::MAX, None, at);
        let key = idempotency_item("key", &result);
        let pk = (IDEMPOTENCY_PREFIX.len() + 3) as u64;
        assert!(item_size(&key) <= idempotency_item_size(pk, 8));
    }
}
