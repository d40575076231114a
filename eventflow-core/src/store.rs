//! The event store: the small trait a backend implements over serialised events.
//!
//! Backends deal only in [`NewEvent`]s and [`RecordedEvent`]s (JSON payload bytes plus metadata); the
//! typed layer ([`Repository`](crate::Repository), [`Upcasters`](crate::Upcasters)) sits on top, so a
//! new backend is a few hundred lines and passes the same
#![cfg_attr(
    feature = "testkit",
    doc = "[conformance suite](crate::testkit::store_conformance)."
)]
#![cfg_attr(
    not(feature = "testkit"),
    doc = "conformance suite (feature `testkit`)."
)]

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::DomainEvent;
use crate::metadata::Metadata;
use crate::{event_id, scratch};

/// The id of an event stream, e.g. `order-42`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// A stream id from any string. Use [`StreamId::for_aggregate`] for aggregate streams.
    pub fn new(id: impl AsRef<str>) -> Self {
        StreamId(Arc::from(id.as_ref()))
    }

    /// The stream of the aggregate `id` of type `stream_type`: `"{stream_type}-{id}"`.
    pub fn for_aggregate(stream_type: &str, id: &str) -> Self {
        scratch::with_joined(stream_type, id, |joined| StreamId(Arc::from(joined)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Maps keyed by `StreamId` can be searched with a `&str`, without building an id (hashing and
/// equality are those of the string).
impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for StreamId {
    fn from(value: &str) -> Self {
        StreamId::new(value)
    }
}

impl From<String> for StreamId {
    fn from(value: String) -> Self {
        StreamId(Arc::from(value))
    }
}

/// What the writer believes the stream's version to be. Versions count events: a stream with
/// three events is at version 3, and a stream that does not exist is at version 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must be at exactly this version. `Exact(0)` is the same as `NoStream`.
    Exact(u64),
    /// The writer **read** the stream at this version, so the stream has at least this many
    /// events (versions never go backwards): the append conflicts if anything was appended since.
    /// A backend may prove that with the next version's absence alone; DynamoDB then writes one
    /// transaction item per event instead of an extra existence check. The repository uses it for
    /// versions it loaded (from the stream, its cache or a snapshot). A version that was not read
    /// from the stream, say one a client sends, must be [`Exact`](Self::Exact): a backend need not
    /// detect an `Observed` version beyond the head.
    Observed(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) | ExpectedVersion::Observed(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::Observed(v) => write!(f, "version {v} (as read)"),
        }
    }
}

/// An event ready to be appended: serialised, with its id and metadata, not yet given a version.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    /// Unique id, chosen by the writer so a retried append is recognisable downstream.
    pub event_id: Uuid,
    /// Stable event type name: borrowed for the `&'static str` a [`DomainEvent`] returns, so
    /// encoding and copying a record never allocate for it.
    pub event_type: Cow<'static, str>,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Bytes,
    /// Correlation, causation, actor, trace context: shared by the events of one command, and
    /// by every copy of a record, rather than copied into each.
    pub metadata: Arc<Metadata>,
}

impl NewEvent {
    /// A new event with a fresh time-ordered (v7) id.
    pub fn new(
        event_type: impl Into<Cow<'static, str>>,
        schema_version: u32,
        payload: Bytes,
        metadata: impl Into<Arc<Metadata>>,
    ) -> Self {
        NewEvent {
            event_id: event_id::new_v7(),
            event_type: event_type.into(),
            schema_version,
            payload,
            metadata: metadata.into(),
        }
    }

    /// Serialises a domain event.
    pub fn encode<E: DomainEvent>(event: &E, metadata: impl Into<Arc<Metadata>>) -> Result<Self> {
        // Serialised into a reused buffer, then copied into an allocation of the exact size: one
        // allocation per event, kept by the record.
        let payload = scratch::with_bytes(|buffer| {
            serde_json::to_writer(&mut *buffer, event)
                .map(|()| Bytes::copy_from_slice(buffer))
                .map_err(|e| Error::serialization(event.event_type(), e))
        })?;
        Ok(NewEvent::new(
            event.event_type(),
            event.schema_version(),
            payload,
            metadata,
        ))
    }

    /// Replaces the generated id (for writers that derive ids deterministically).
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// An event as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RecordedEvent {
    /// Unique id given by the writer.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// 1-based, gapless position within the stream.
    pub version: u64,
    /// Position in the store's global feed, where the store has one (1-based).
    pub position: Option<u64>,
    /// Stable event type name.
    pub event_type: Cow<'static, str>,
    /// Schema version of the payload as written.
    pub schema_version: u32,
    /// When the store accepted it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, actor, trace context (shared: see [`NewEvent::metadata`]).
    pub metadata: Arc<Metadata>,
    /// The JSON payload.
    pub payload: Bytes,
}

impl RecordedEvent {
    /// Builds the record of `event` appended at `version` (used by backends).
    pub fn from_new(
        event: NewEvent,
        stream_id: StreamId,
        version: u64,
        position: Option<u64>,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        RecordedEvent {
            event_id: event.event_id,
            stream_id,
            version,
            position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            recorded_at,
            metadata: event.metadata,
            payload: event.payload,
        }
    }

    /// Deserialises the payload as it is stored, without upcasting: typed readers go through
    /// [`Upcasters::decode`](crate::Upcasters::decode) (the repository and projections do).
    /// A failure is [`Error::Decode`], naming the stream, version, type and serde's reason.
    pub fn decode_as_stored<E: serde::de::DeserializeOwned>(&self) -> Result<E> {
        serde_json::from_slice(&self.payload)
            .map_err(|source| self.decode_error(self.schema_version, source))
    }

    /// The [`Error::Decode`] of this event, whose payload had `schema_version` when serde refused it.
    pub(crate) fn decode_error(&self, schema_version: u32, source: serde_json::Error) -> Error {
        Error::Decode {
            stream: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.to_string(),
            schema_version,
            source,
        }
    }
}

/// One stream's part of an atomic append: the events for it and the version it must be at.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream: StreamId,
    /// The concurrency check.
    pub expected: ExpectedVersion,
    /// The events, in order. May be empty: the stream's version is then only checked.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// The part of an append that writes `events` to `stream` at `expected`.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        StreamAppend {
            stream,
            expected,
            events,
        }
    }
}

/// One atomic append: all of `events` are written, or none.
///
/// An append may span several streams ([`with_stream`](Self::with_stream)), each with its own
/// expected version: every stream's events are written, or none are (a conflict on any stream
/// fails the whole append). The first stream is the request's *primary* stream: its result is the
/// one [`AppendResult`] describes, and an idempotency key is recorded against it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppendRequest {
    /// The primary stream to append to.
    pub stream: StreamId,
    /// The concurrency check of the primary stream.
    pub expected: ExpectedVersion,
    /// The events, in order. May be empty when only an idempotency key is to be recorded.
    pub events: Vec<NewEvent>,
    /// Further streams written in the same atomic append, each with its own check. A stream may
    /// appear only once in a request.
    pub other_streams: Vec<StreamAppend>,
    /// A key recorded atomically with the events; a later append with the same key fails with
    /// [`Error::DuplicateIdempotencyKey`] and writes nothing.
    pub idempotency_key: Option<String>,
    /// Whether to write an outbox entry per event, in the same atomic write, for the
    /// [`OutboxRelay`](crate::OutboxRelay) to publish.
    pub outbox: bool,
}

impl AppendRequest {
    /// An append to one stream without idempotency key or outbox entries.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        AppendRequest {
            stream,
            expected,
            events,
            other_streams: Vec::new(),
            idempotency_key: None,
            outbox: false,
        }
    }

    /// Adds `events` for `stream`, checked against `expected`, to the same atomic append.
    pub fn with_stream(
        mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        self.other_streams
            .push(StreamAppend::new(stream, expected, events));
        self
    }

    /// Records `key` with the events.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Writes outbox entries with the events (or not).
    pub fn with_outbox(mut self, outbox: bool) -> Self {
        self.outbox = outbox;
        self
    }

    /// Every stream of the request, the primary first: `(stream, expected, events)`.
    pub fn streams(&self) -> impl Iterator<Item = (&StreamId, ExpectedVersion, &[NewEvent])> {
        std::iter::once((&self.stream, self.expected, self.events.as_slice())).chain(
            self.other_streams
                .iter()
                .map(|s| (&s.stream, s.expected, s.events.as_slice())),
        )
    }

    /// How many events the request appends, over all its streams.
    pub fn event_count(&self) -> usize {
        self.events.len()
            + self
                .other_streams
                .iter()
                .map(|s| s.events.len())
                .sum::<usize>()
    }

    /// Refuses an empty stream id, a stream named twice or an event without a type, before
    /// anything is written.
    pub fn validate(&self) -> Result<()> {
        validate_stream(&self.stream, &self.events)?;
        for (i, other) in self.other_streams.iter().enumerate() {
            validate_stream(&other.stream, &other.events)?;
            let mut earlier = std::iter::once(&self.stream)
                .chain(self.other_streams[..i].iter().map(|o| &o.stream));
            if earlier.any(|stream| *stream == other.stream) {
                return Err(Error::InvalidRequest(format!(
                    "stream {} appears twice in one append",
                    other.stream
                )));
            }
        }
        Ok(())
    }
}

fn validate_stream(stream: &StreamId, events: &[NewEvent]) -> Result<()> {
    if stream.as_str().is_empty() {
        return Err(Error::InvalidRequest("stream id is empty".into()));
    }
    if events.iter().any(|e| e.event_type.is_empty()) {
        return Err(Error::InvalidRequest(format!(
            "an event for stream {stream} has an empty event type"
        )));
    }
    Ok(())
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AppendResult {
    /// The stream appended to.
    pub stream: StreamId,
    /// Version of the first appended event (`last_version + 1` when nothing was appended).
    pub first_version: u64,
    /// The stream's version after the append: the version of the last appended event.
    pub last_version: u64,
    /// Global position of the first event, where the store has a global feed.
    pub first_position: Option<u64>,
    /// When the append was accepted.
    pub recorded_at: DateTime<Utc>,
    /// What the append wrote to its [other streams](AppendRequest::other_streams), in request
    /// order. Empty for a one-stream append. An idempotency key records them too, so the
    /// `original` of a reused key says what every stream got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_streams: Vec<AppendResult>,
}

impl AppendResult {
    /// Builds a result (used by backends).
    pub fn new(
        stream: StreamId,
        first_version: u64,
        last_version: u64,
        first_position: Option<u64>,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        AppendResult {
            stream,
            first_version,
            last_version,
            first_position,
            recorded_at,
            other_streams: Vec::new(),
        }
    }

    /// How many events were appended to the primary stream.
    pub fn count(&self) -> u64 {
        (self.last_version + 1).saturating_sub(self.first_version)
    }
}

/// A store of event streams.
///
/// Object-safe (`Arc<dyn EventStore>`), because applications choose their backend at run time; that
/// is why it uses `async-trait` rather than native `async fn`. A store that also keeps a total
/// order over all streams implements [`GlobalFeed`](crate::GlobalFeed) as well.
///
/// Contract (checked by the conformance suite):
/// - `append` is atomic: every event of every stream of the request, the idempotency key and the
///   outbox entries are written, or nothing is. Versions are 1-based and gapless per stream.
/// - A failed version check on any stream of the request is [`Error::Conflict`] carrying that
///   stream's expected and actual versions.
/// - A reused idempotency key is [`Error::DuplicateIdempotencyKey`], checked before the versions.
/// - Reads see every append that returned `Ok` (read-your-writes).
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events atomically, to one stream or several.
    async fn append(&self, request: AppendRequest) -> Result<AppendResult>;

    /// Reads at most `max_count` events of `stream` with version `>= from_version`, in order.
    /// A stream that does not exist reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The result of the append that recorded `key`, if any.
    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>>;

    /// Hands the events [`read_stream`](Self::read_stream) would return to `visit`, in order and
    /// by reference, and returns how many it handed over. The first error `visit` returns ends
    /// the read and is returned.
    ///
    /// A store that keeps its events in memory does this without copying a record, which is what
    /// makes a replay cost little more than decoding; `visit` may then run while the store holds
    /// its lock, so it must be short (the repository decodes in it) and must not call the store.
    /// The provided implementation reads a page with `read_stream` and visits it.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        let page = self.read_stream(stream, from_version, max_count).await?;
        for event in &page {
            visit(event)?;
        }
        Ok(page.len())
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        (**self).append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_stream(stream, from_version, max_count).await
    }
    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>> {
        (**self).find_idempotency_key(key).await
    }
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        (**self)
            .visit_stream(stream, from_version, max_count, visit)
            .await
    }
}

/// Page size used by the conveniences that read a whole stream.
pub const READ_PAGE_SIZE: usize = 1_000;

/// Conveniences on every [`EventStore`].
#[async_trait]
pub trait EventStoreExt: EventStore {
    /// Reads a stream from `from_version` to its end, page by page.
    async fn read_stream_to_end(
        &self,
        stream: &StreamId,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        let mut next = from_version.max(1);
        loop {
            let page = self.read_stream(stream, next, READ_PAGE_SIZE).await?;
            let done = page.len() < READ_PAGE_SIZE;
            if let Some(last) = page.last() {
                next = last.version + 1;
            }
            events.extend(page);
            if done {
                return Ok(events);
            }
        }
    }

    /// Reads the versions `first..=last` of a stream (e.g. what an [`AppendResult`] wrote).
    async fn read_range(
        &self,
        stream: &StreamId,
        first: u64,
        last: u64,
    ) -> Result<Vec<RecordedEvent>> {
        if last < first {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity((last - first + 1) as usize);
        let mut next = first;
        while next <= last {
            let want = ((last - next + 1) as usize).min(READ_PAGE_SIZE);
            let page = self.read_stream(stream, next, want).await?;
            if page.is_empty() {
                break;
            }
            next = page.last().map_or(next, |e| e.version + 1);
            events.extend(page.into_iter().filter(|e| e.version <= last));
        }
        Ok(events)
    }
}

impl<S: EventStore + ?Sized> EventStoreExt for S {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_stream_ids_join_type_and_id_whatever_their_length() {
        assert_eq!(StreamId::for_aggregate("order", "42").as_str(), "order-42");
        assert_eq!(StreamId::for_aggregate("order", "").as_str(), "order-");
        let long = "é".repeat(80);
        assert_eq!(
            StreamId::for_aggregate("order", &long).as_str(),
            format!("order-{long}")
        );
    }

    #[test]
    fn expected_versions_match_as_documented() {
        assert!(ExpectedVersion::Any.matches(7));
        assert!(ExpectedVersion::NoStream.matches(0) && !ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::Exact(0).matches(0) && ExpectedVersion::Exact(3).matches(3));
        assert!(!ExpectedVersion::Exact(3).matches(4));
    }
}
