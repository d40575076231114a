//! How events, idempotency keys, outbox entries and snapshots are laid out as DynamoDB items, and
//! how big DynamoDB counts them.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use eventflow_core::{AppendResult, Error, Metadata, NewEvent, RecordedEvent, Result, StreamId};
use uuid::Uuid;

use crate::BACKEND;

/// A DynamoDB item: attribute name to value.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Attribute names of the events table.
pub(crate) mod event_attr {
    /// Partition key (S): the stream id.
    pub(crate) const STREAM_ID: &str = "stream_id";
    /// Sort key (N): the 1-based version within the stream.
    pub(crate) const VERSION: &str = "version";
    pub(crate) const EVENT_ID: &str = "event_id";
    pub(crate) const EVENT_TYPE: &str = "event_type";
    pub(crate) const SCHEMA_VERSION: &str = "schema_version";
    /// S when the payload is UTF-8 (JSON always is), B otherwise.
    pub(crate) const PAYLOAD: &str = "payload";
    /// S: the metadata as JSON; absent when empty.
    pub(crate) const METADATA: &str = "metadata";
    pub(crate) const RECORDED_AT: &str = "recorded_at";
}

/// Attribute names of the meta table (idempotency keys, outbox entries, snapshots).
pub(crate) mod meta_attr {
    /// Partition key (S): `idempotency#<key>`, `outbox#<shard>` or `snapshot#<stream>`.
    pub(crate) const PK: &str = "pk";
    /// Sort key (S).
    pub(crate) const SK: &str = "sk";
    pub(crate) const STREAM_ID: &str = "stream_id";
    pub(crate) const VERSION: &str = "version";
    pub(crate) const EVENT_ID: &str = "event_id";
    pub(crate) const FIRST_VERSION: &str = "first_version";
    pub(crate) const LAST_VERSION: &str = "last_version";
    pub(crate) const RECORDED_AT: &str = "recorded_at";
    pub(crate) const FORMAT_VERSION: &str = "format_version";
    pub(crate) const STATE: &str = "state";
    pub(crate) const TAKEN_AT: &str = "taken_at";
    pub(crate) const REASON: &str = "reason";
    pub(crate) const PARKED_AT: &str = "parked_at";
    pub(crate) const VALUE: &str = "value";
    pub(crate) const JSON: &str = "json";
    /// An idempotency key's other streams (S): JSON `[[stream, first, last], ...]`.
    pub(crate) const OTHER_STREAMS: &str = "other_streams";
}

/// Prefix of an idempotency key's partition key in the meta table.
pub(crate) const IDEMPOTENCY_PREFIX: &str = "idempotency#";
/// Sort key of an idempotency key item.
pub(crate) const IDEMPOTENCY_SK: &str = "idempotency";
/// Prefix of an outbox shard's partition key in the meta table.
pub(crate) const OUTBOX_PREFIX: &str = "outbox#";
/// Partition key of the parked outbox entries in the meta table.
pub(crate) const PARKED_PK: &str = "outbox-parked";
/// Prefix of a snapshot's partition key in the meta table.
pub(crate) const SNAPSHOT_PREFIX: &str = "snapshot#";
/// Prefix of a projection's checkpoints partition key in the meta table (the sort key is the
/// checkpoint's key).
pub(crate) const CHECKPOINT_PREFIX: &str = "checkpoint#";
/// Prefix of a document collection's partition key in the meta table (the sort key is the id).
pub(crate) const DOCUMENT_PREFIX: &str = "doc#";
/// Sort key of a snapshot item.
pub(crate) const SNAPSHOT_SK: &str = "snapshot";

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl Into<u64>) -> AttributeValue {
    AttributeValue::N(value.into().to_string())
}

/// RFC 3339 with nanoseconds, so a timestamp reads back equal to what was written.
pub(crate) fn timestamp(at: DateTime<Utc>) -> AttributeValue {
    s(at.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// The key of event `version` of `stream` in the events table.
pub(crate) fn event_key(stream: &StreamId, version: u64) -> Item {
    HashMap::from([
        (event_attr::STREAM_ID.to_owned(), s(stream.as_str())),
        (event_attr::VERSION.to_owned(), n(version)),
    ])
}

/// The events-table item of `event` appended to `stream` at `version`.
pub(crate) fn event_item(
    stream: &StreamId,
    version: u64,
    event: &NewEvent,
    recorded_at: DateTime<Utc>,
) -> Result<Item> {
    let mut item = event_key(stream, version);
    item.insert(
        event_attr::EVENT_ID.to_owned(),
        s(event.event_id.to_string()),
    );
    item.insert(
        event_attr::EVENT_TYPE.to_owned(),
        s(event.event_type.as_ref()),
    );
    item.insert(
        event_attr::SCHEMA_VERSION.to_owned(),
        n(event.schema_version),
    );
    item.insert(
        event_attr::PAYLOAD.to_owned(),
        payload_value(&event.payload),
    );
    if *event.metadata != Metadata::default() {
        let metadata =
            serde_json::to_string(&event.metadata).map_err(|e| Error::Serialization {
                what: format!("metadata of {}", event.event_type),
                source: e,
            })?;
        item.insert(event_attr::METADATA.to_owned(), s(metadata));
    }
    item.insert(event_attr::RECORDED_AT.to_owned(), timestamp(recorded_at));
    Ok(item)
}

/// Payloads are JSON and so UTF-8: kept as a string, readable in the console and in stream records.
/// Anything else is kept byte for byte as binary.
fn payload_value(payload: &Bytes) -> AttributeValue {
    match std::str::from_utf8(payload) {
        Ok(text) => s(text),
        Err(_) => AttributeValue::B(Blob::new(payload.to_vec())),
    }
}

/// Reads an event back from its events-table item.
/// The stream and version of an event item, when at least its key attributes are readable.
pub(crate) fn event_key_of(item: &Item) -> Option<(StreamId, u64)> {
    let stream = get_s(item, event_attr::STREAM_ID).ok()?;
    let version = get_n(item, event_attr::VERSION).ok()?;
    Some((StreamId::new(stream), version))
}

pub(crate) fn decode_event(item: &Item) -> Result<RecordedEvent> {
    let stream_id = StreamId::new(get_s(item, event_attr::STREAM_ID)?);
    let version = get_n(item, event_attr::VERSION)?;
    let event_id = Uuid::parse_str(get_s(item, event_attr::EVENT_ID)?)
        .map_err(|e| corrupt(event_attr::EVENT_ID, e))?;
    let event_type = get_s(item, event_attr::EVENT_TYPE)?.to_owned();
    let schema_version = get_n(item, event_attr::SCHEMA_VERSION)?;
    let payload = match item.get(event_attr::PAYLOAD) {
        Some(AttributeValue::S(text)) => Bytes::from(text.clone()),
        Some(AttributeValue::B(blob)) => Bytes::from(blob.clone().into_inner()),
        _ => return Err(corrupt(event_attr::PAYLOAD, "missing or neither S nor B")),
    };
    let metadata = match item.get(event_attr::METADATA) {
        Some(AttributeValue::S(json)) => {
            serde_json::from_str(json).map_err(|e| Error::Serialization {
                what: format!("metadata of {event_type}"),
                source: e,
            })?
        }
        _ => Metadata::new(),
    };
    let recorded_at = get_time(item, event_attr::RECORDED_AT)?;
    let event =
        NewEvent::new(event_type, schema_version, payload, metadata).with_event_id(event_id);
    Ok(RecordedEvent::from_new(
        event,
        stream_id,
        version,
        None,
        recorded_at,
    ))
}

/// The meta-table key of idempotency key `key`.
pub(crate) fn idempotency_key(key: &str) -> Item {
    HashMap::from([
        (
            meta_attr::PK.to_owned(),
            s(format!("{IDEMPOTENCY_PREFIX}{key}")),
        ),
        (meta_attr::SK.to_owned(), s(IDEMPOTENCY_SK)),
    ])
}

/// The item recording idempotency key `key` with the result of its append.
pub(crate) fn idempotency_item(key: &str, result: &AppendResult) -> Item {
    let mut item = idempotency_key(key);
    item.insert(meta_attr::STREAM_ID.to_owned(), s(result.stream.as_str()));
    item.insert(meta_attr::FIRST_VERSION.to_owned(), n(result.first_version));
    item.insert(meta_attr::LAST_VERSION.to_owned(), n(result.last_version));
    item.insert(
        meta_attr::RECORDED_AT.to_owned(),
        timestamp(result.recorded_at),
    );
    if !result.other_streams.is_empty() {
        let others: Vec<(&str, u64, u64)> = result
            .other_streams
            .iter()
            .map(|r| (r.stream.as_str(), r.first_version, r.last_version))
            .collect();
        // Serialising strings and numbers cannot fail.
        let json = serde_json::to_string(&others).unwrap_or_default();
        item.insert(meta_attr::OTHER_STREAMS.to_owned(), s(json));
    }
    item
}

/// The append result an idempotency key item recorded.
pub(crate) fn decode_idempotency(item: &Item) -> Result<AppendResult> {
    let recorded_at = get_time(item, meta_attr::RECORDED_AT)?;
    let mut result = AppendResult::new(
        StreamId::new(get_s(item, meta_attr::STREAM_ID)?),
        get_n(item, meta_attr::FIRST_VERSION)?,
        get_n(item, meta_attr::LAST_VERSION)?,
        None,
        recorded_at,
    );
    if item.contains_key(meta_attr::OTHER_STREAMS) {
        let json = get_s(item, meta_attr::OTHER_STREAMS)?;
        let others: Vec<(String, u64, u64)> = serde_json::from_str(json)
            .map_err(|e| Error::serialization("an idempotency key's other streams", e))?;
        result.other_streams = others
            .into_iter()
            .map(|(stream, first, last)| {
                AppendResult::new(StreamId::new(stream), first, last, None, recorded_at)
            })
            .collect();
    }
    Ok(result)
}

/// Digits of the zero-padded version in an outbox sort key (`u64::MAX` has 20).
const VERSION_DIGITS: usize = 20;

/// The outbox shard a stream's entries live in: FNV-1a of the stream id, modulo `shards`.
/// Stable across processes and releases, so every writer puts a stream's entries in the same shard.
pub(crate) fn outbox_shard(stream: &StreamId, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// The partition key of outbox shard `shard`.
pub(crate) fn outbox_pk(shard: u32) -> String {
    format!("{OUTBOX_PREFIX}{shard}")
}

/// The meta-table key of the outbox entry of event `version` of `stream`. The sort key,
/// `<stream>#<version, zero-padded to 20 digits>`, orders a stream's entries by version.
pub(crate) fn outbox_key(stream: &StreamId, version: u64, shards: u32) -> Item {
    entry_key(outbox_pk(outbox_shard(stream, shards)), stream, version)
}

/// The meta-table key of the parked outbox entry of event `version` of `stream`.
pub(crate) fn parked_key(stream: &StreamId, version: u64) -> Item {
    entry_key(PARKED_PK.to_owned(), stream, version)
}

fn entry_key(pk: String, stream: &StreamId, version: u64) -> Item {
    let sk = format!("{}#{version:0VERSION_DIGITS$}", stream.as_str());
    HashMap::from([
        (meta_attr::PK.to_owned(), s(pk)),
        (meta_attr::SK.to_owned(), s(sk)),
    ])
}

/// A parked outbox entry: the pointer to its event, why the bus refused it, and when.
pub(crate) fn parked_item(
    stream: &StreamId,
    version: u64,
    event_id: Uuid,
    reason: &str,
    at: DateTime<Utc>,
) -> Item {
    let mut item = parked_key(stream, version);
    item.insert(meta_attr::STREAM_ID.to_owned(), s(stream.as_str()));
    item.insert(meta_attr::VERSION.to_owned(), n(version));
    item.insert(meta_attr::EVENT_ID.to_owned(), s(event_id.to_string()));
    item.insert(meta_attr::REASON.to_owned(), s(reason));
    item.insert(meta_attr::PARKED_AT.to_owned(), timestamp(at));
    item
}

/// Stream, version, reason and time of a parked entry.
pub(crate) fn decode_parked(item: &Item) -> Result<(StreamId, u64, String, DateTime<Utc>)> {
    let (stream, version) = decode_outbox(item)?;
    Ok((
        stream,
        version,
        get_s(item, meta_attr::REASON)?.to_owned(),
        get_time(item, meta_attr::PARKED_AT)?,
    ))
}

/// The outbox entry of an event: a pointer (stream, version, event id) to the event item, so the
/// event's bytes are written once and an entry stays small whatever the payload.
pub(crate) fn outbox_item(stream: &StreamId, version: u64, event_id: Uuid, shards: u32) -> Item {
    let mut item = outbox_key(stream, version, shards);
    item.insert(meta_attr::STREAM_ID.to_owned(), s(stream.as_str()));
    item.insert(meta_attr::VERSION.to_owned(), n(version));
    item.insert(meta_attr::EVENT_ID.to_owned(), s(event_id.to_string()));
    item
}

/// Stream and version an outbox entry points at.
pub(crate) fn decode_outbox(item: &Item) -> Result<(StreamId, u64)> {
    Ok((
        StreamId::new(get_s(item, meta_attr::STREAM_ID)?),
        get_n(item, meta_attr::VERSION)?,
    ))
}

/// Longest stream id whose outbox sort key still fits DynamoDB's 1,024-byte sort key limit.
pub(crate) const MAX_OUTBOX_STREAM_ID_BYTES: usize = 1024 - 1 - VERSION_DIGITS;

/// Refuses an item over DynamoDB's item size limit before any call.
pub(crate) fn check_size(item: &Item) -> Result<()> {
    within_item_limit(item_size(item))
}

/// Refuses a document whose item (`key`, `json` and the widest version) would exceed DynamoDB's
/// item size limit, without building the item (and copying the document into it).
pub(crate) fn check_document_size(key: &Item, json: &str) -> Result<()> {
    let attributes = meta_attr::JSON.len() + json.len() + meta_attr::VERSION.len();
    within_item_limit(item_size(key) + attributes as u64 + number_size(&u64::MAX.to_string()))
}

fn within_item_limit(size: u64) -> Result<()> {
    if size > crate::limits::MAX_ITEM_BYTES {
        return Err(eventflow_core::Error::LimitExceeded {
            limit: crate::limits::names::ITEM_BYTES,
            actual: size,
            max: crate::limits::MAX_ITEM_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(corrupt(name, "missing or not a string")),
    }
}

pub(crate) fn get_n<T: std::str::FromStr>(item: &Item, name: &'static str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|e: T::Err| corrupt(name, e.to_string())),
        _ => Err(corrupt(name, "missing or not a number")),
    }
}

pub(crate) fn get_time(item: &Item, name: &'static str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(get_s(item, name)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(name, e))
}

/// A stored item that this crate did not write (or that was edited by hand).
pub(crate) fn corrupt(attribute: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::backend(
        BACKEND,
        format!("stored item has an invalid `{attribute}` attribute: {reason}"),
    )
}

/// The size DynamoDB counts for an item: attribute names plus values, per the rules in the
/// DynamoDB developer guide ("Item sizes and formats").
pub(crate) fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(values) => values.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(values) => values.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(values) => values.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<u64>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() as u64 + value_size(v))
                .sum::<u64>()
        }
        // A variant added by a later SDK: count it as its debug text, an overestimate.
        other => format!("{other:?}").len() as u64,
    }
}

/// Numbers take one byte per two significant digits, plus one byte.
fn number_size(number: &str) -> u64 {
    let digits = number
        .trim_start_matches(['-', '+'])
        .split(['e', 'E'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1) as u64;
    significant.div_ceil(2) + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn event_items_round_trip() {
        let metadata = Metadata::new()
            .with_actor("ann")
            .with_header("tenant", "acme");
        let event = NewEvent::new(
            "Placed",
            2,
            Bytes::from_static(br#"{"a":"\u00e9"}"#),
            metadata,
        );
        let at = Utc::now();
        let stream = StreamId::new("order-1");
        let item = event_item(&stream, 7, &event, at).unwrap();
        let back = decode_event(&item).unwrap();
        assert_eq!(back, RecordedEvent::from_new(event, stream, 7, None, at));
    }

    #[test]
    fn binary_payloads_round_trip() {
        let event = NewEvent::new(
            "Raw",
            1,
            Bytes::from_static(&[0xff, 0x00, 0x80]),
            Metadata::new(),
        );
        let item = event_item(&StreamId::new("s"), 1, &event, Utc::now()).unwrap();
        assert!(matches!(
            item.get(event_attr::PAYLOAD),
            Some(AttributeValue::B(_))
        ));
        assert_eq!(decode_event(&item).unwrap().payload, event.payload);
    }

    #[test]
    fn idempotency_items_round_trip() {
        let result = AppendResult::new(StreamId::new("s"), 3, 5, None, Utc::now());
        let item = idempotency_item("k", &result);
        assert_eq!(decode_idempotency(&item).unwrap(), result);
    }

    #[test]
    fn outbox_keys_sort_by_version_within_a_stream() {
        let stream = StreamId::new("order#7");
        let sk = |v| match outbox_key(&stream, v, 4).remove(meta_attr::SK) {
            Some(AttributeValue::S(sk)) => sk,
            other => panic!("{other:?}"),
        };
        assert!(sk(9) < sk(10));
        assert!(sk(99) < sk(100_000));
        assert_eq!(sk(1).len(), "order#7".len() + 21);
        let shard = outbox_shard(&stream, 4);
        assert!(shard < 4);
        assert_eq!(shard, outbox_shard(&StreamId::new("order#7"), 4), "stable");
        assert_eq!(outbox_shard(&stream, 0), 0);
    }

    #[test]
    fn sizes_follow_the_dynamodb_rules() {
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("7"), 2);
        assert_eq!(number_size("12"), 2);
        assert_eq!(number_size("123"), 3);
        assert_eq!(number_size("1000"), 2);
        assert_eq!(number_size("18446744073709551615"), 11);
        let item = HashMap::from([
            ("ab".to_owned(), s("xyz")),
            ("n".to_owned(), n(123u64)),
            ("b".to_owned(), AttributeValue::B(Blob::new(vec![0; 10]))),
        ]);
        assert_eq!(item_size(&item), (2 + 3) + (1 + 3) + (1 + 10));
    }
}
