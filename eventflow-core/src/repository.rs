//! The repository: load an aggregate, let it decide, append what it decided, retry on conflict.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::backoff::Backoff;
use crate::decider::{AggregateDecider, Decider};
use crate::error::{Error, Result};
use crate::event::{DomainEvent, Upcasters};
use crate::metadata::Metadata;
use crate::scratch::with_joined;
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
use crate::store::{
    AppendRequest, AppendResult, EventStore, EventStoreExt, ExpectedVersion, NewEvent,
    READ_PAGE_SIZE, RecordedEvent, StreamId,
};
use crate::sync::lock;

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

/// Per-command options: metadata to record and an optional idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandContext {
    /// Recorded with every event the command produces.
    pub metadata: Metadata,
    /// When set, a command with the same key returns the first one's result and appends nothing.
    pub idempotency_key: Option<String>,
}

impl CommandContext {
    /// No metadata and no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed<E> {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream's version after the command.
    pub version: u64,
    /// The events the command recorded (for a duplicate, those the first command recorded).
    pub events: Vec<Envelope<E>>,
    /// True when the idempotency key had been seen: nothing new was appended.
    pub deduplicated: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed, or conflicts persisted after every retry ([`Error::Conflict`]).
    #[error(transparent)]
    Store(#[from] Error),
}

/// A stream's state and the version it reflects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// How many events it reflects (0 for a new stream).
    pub version: u64,
}

struct Snapshotting<A> {
    store: Arc<dyn SnapshotStore>,
    policy: SnapshotPolicy,
    format_version: u32,
    encode: fn(&A) -> serde_json::Result<Vec<u8>>,
    decode: fn(&[u8]) -> serde_json::Result<A>,
}

fn encode_state<A: Serialize>(state: &A) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(state)
}

fn decode_state<A: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<A> {
    serde_json::from_slice(bytes)
}

/// Aggregates kept between commands so a hot aggregate is not replayed every time. An entry is only
/// a starting point: loading still reads the events appended after it, so other writers are seen.
struct AggregateCache<A> {
    capacity: usize,
    entries: Mutex<foldhash::HashMap<StreamId, (u64, A)>>,
}

impl<A> AggregateCache<A> {
    /// Takes the entry of the stream named `stream`, with the stored id: a hit builds no id.
    fn take(&self, stream: &str) -> Option<(StreamId, (u64, A))> {
        lock(&self.entries).remove_entry(stream)
    }

    fn put(&self, stream: StreamId, version: u64, state: A) {
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity && !entries.contains_key(&stream) {
            // Evicting an arbitrary entry keeps this O(1); the cost of a wrong pick is one replay.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(stream, (version, state));
    }
}

/// Loads the streams of a [`Decider`] from an [`EventStore`] and runs commands against them.
///
/// A command runs as: load (cache or snapshot, then later events) → [`Decider::decide`] → append
/// with [`ExpectedVersion::Observed`] (the version it loaded). On a conflict it catches up and tries again, up to
/// [`with_max_conflict_retries`](Self::with_max_conflict_retries) times. Aggregates use it as
/// [`Repository<A>`]; other typed users of the store (a saga orchestrator, a ledger) bring their
/// own decider ([`DeciderRepository::for_decider`]).
pub struct DeciderRepository<D: Decider> {
    decider: D,
    store: Arc<dyn EventStore>,
    /// The event type's [`DomainEvent::upcasters`], built once.
    upcasters: Upcasters,
    /// `"{stream_type}-"`: how an id is cut out of a stream id.
    prefix: String,
    snapshots: Option<Snapshotting<D::State>>,
    cache: Option<AggregateCache<D::State>>,
    conflict_retry: Backoff,
    outbox: bool,
    snapshot_format_version: u32,
}

/// 4 tries, 1 ms doubling to at most 20 ms, full jitter.
fn default_conflict_retry() -> Backoff {
    Backoff::new(4, Duration::from_millis(1), Duration::from_millis(20)).with_full_jitter()
}

/// The repository of aggregate type `A`: `Repository::<Order>::new(store)`.
pub type Repository<A> = DeciderRepository<AggregateDecider<A>>;

impl<D: Decider> fmt::Debug for DeciderRepository<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("stream_type", &self.decider.stream_type())
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy))
            .field("cache", &self.cache.as_ref().map(|c| c.capacity))
            .field("conflict_retry", &self.conflict_retry)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> DeciderRepository<AggregateDecider<A>> {
    /// A repository of aggregate `A` over `store`: no snapshots, no cache, no outbox, 3 retries
    /// on conflict.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::for_decider(AggregateDecider::new(), store)
    }
}

impl<D: Decider> DeciderRepository<D> {
    /// A repository running `decider` over `store`: no snapshots, no cache, no outbox, 3 retries
    /// on conflict.
    pub fn for_decider(decider: D, store: Arc<dyn EventStore>) -> Self {
        let prefix = format!("{}-", decider.stream_type());
        DeciderRepository {
            decider,
            store,
            upcasters: <D::Event as DomainEvent>::upcasters(),
            prefix,
            snapshots: None,
            cache: None,
            conflict_retry: default_conflict_retry(),
            outbox: false,
            snapshot_format_version: 1,
        }
    }

    /// The decider it runs.
    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// Takes snapshots by `policy` into `store`, and loads from the latest one.
    ///
    /// A snapshot that does not deserialise, or of another [format
    /// version](Self::with_snapshot_format_version), is ignored and the stream is replayed in full.
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self
    where
        D::State: Serialize + DeserializeOwned,
    {
        self.snapshots = Some(Snapshotting {
            store,
            policy,
            format_version: self.snapshot_format_version,
            encode: encode_state::<D::State>,
            decode: decode_state::<D::State>,
        });
        self
    }

    /// Sets the format version written into snapshots and expected of them (default 1), before or
    /// after [`with_snapshots`](Self::with_snapshots). Bump it when the state changes meaning, so
    /// older snapshots are ignored rather than misread.
    pub fn with_snapshot_format_version(mut self, version: u32) -> Self {
        self.snapshot_format_version = version;
        if let Some(s) = &mut self.snapshots {
            s.format_version = version;
        }
        self
    }

    /// Keeps up to `capacity` states in memory between commands.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(AggregateCache {
            capacity: capacity.max(1),
            entries: Mutex::default(),
        });
        self
    }

    /// Writes outbox entries with every append, for an [`OutboxRelay`](crate::OutboxRelay).
    pub fn with_outbox(mut self, outbox: bool) -> Self {
        self.outbox = outbox;
        self
    }

    /// How many times a command is retried after a conflict (default 3), keeping the backoff.
    pub fn with_max_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retry.max_attempts = retries.saturating_add(1);
        self
    }

    /// How a command is retried after a conflict: `max_attempts` tries in all; the first retry
    /// follows at once (catching up is usually all it needs), later ones wait
    /// [`Backoff::delay`] of the retries before. Default: 4 tries, 1 ms doubling to at most
    /// 20 ms, full jitter, so that writers that collided do not collide again.
    pub fn with_conflict_retry(mut self, retry: Backoff) -> Self {
        self.conflict_retry = retry;
        self
    }

    /// After the `conflicts`-th conflict of one command: false when no try is left, else true
    /// once it is time to try again.
    async fn wait_after_conflict(&self, conflicts: u32) -> bool {
        if !self.conflict_retry.allows_retry_after(conflicts) {
            return false;
        }
        if conflicts == 1 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.conflict_retry.delay(conflicts - 1)).await;
        }
        true
    }

    /// The store this repository writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The store as a trait object: calling through `&dyn` avoids the `Arc<S>` forwarding impl,
    /// which would box a second future per call.
    fn dyn_store(&self) -> &dyn EventStore {
        &*self.store
    }

    /// The stream of `id`: `"{stream_type}-{id}"`.
    pub fn stream_id(&self, id: &str) -> StreamId {
        StreamId::for_aggregate(self.decider.stream_type(), id)
    }

    /// The id a stream of this repository belongs to; `None` for another type's stream.
    pub fn id_of<'s>(&self, stream: &'s StreamId) -> Option<&'s str> {
        stream.as_str().strip_prefix(self.prefix.as_str())
    }

    /// Loads `id` from its snapshot and events (the cache is not read).
    pub async fn load(&self, id: &str) -> Result<Loaded<D::State>> {
        let stream = self.stream_id(id);
        let (state, version) = self.load_stream(id, &stream, None).await?;
        Ok(Loaded { state, version })
    }

    /// The events of `id`'s stream, decoded and upcasted, oldest first.
    pub async fn read_events(&self, id: &str) -> Result<Vec<Envelope<D::Event>>> {
        let recorded = self
            .dyn_store()
            .read_stream_to_end(&self.stream_id(id), 1)
            .await?;
        self.decode_all(recorded)
    }

    /// Recorded events of this repository's streams, decoded and upcasted.
    fn decode_all(&self, recorded: Vec<RecordedEvent>) -> Result<Vec<Envelope<D::Event>>> {
        recorded
            .into_iter()
            .map(|r| {
                let event = self.upcasters.decode(&r)?;
                Ok(Envelope::from_recorded(r, event))
            })
            .collect()
    }

    /// Saves a snapshot of a state the caller loaded, whatever the snapshot policy: for streams
    /// written outside [`execute`](Self::execute) (appends with [`ExpectedVersion::Any`] of facts
    /// that need no decision) that still want short loads. Without
    /// [`with_snapshots`](Self::with_snapshots) it is [`Error::InvalidRequest`].
    pub async fn save_snapshot(&self, id: &str, loaded: &Loaded<D::State>) -> Result<()> {
        let Some(snapshots) = &self.snapshots else {
            return Err(Error::InvalidRequest(format!(
                "no snapshot store for {} streams",
                self.decider.stream_type()
            )));
        };
        let bytes =
            (snapshots.encode)(&loaded.state).map_err(|e| Error::serialization("snapshot", e))?;
        let snapshot = Snapshot::new(
            self.stream_id(id),
            loaded.version,
            snapshots.format_version,
            bytes.into(),
        );
        snapshots.store.save(snapshot).await
    }

    /// Puts a state the caller loaded (and acted on) into the cache, so the next command starts
    /// from it. Without a cache it is dropped.
    pub fn remember(&self, id: &str, loaded: Loaded<D::State>) {
        self.cache_put(&self.stream_id(id), loaded.version, loaded.state);
    }

    /// Drops `id` from the cache: the next command loads it from the store.
    pub fn forget(&self, id: &str) {
        if let Some(cache) = &self.cache {
            with_joined(self.decider.stream_type(), id, |stream| cache.take(stream));
        }
    }

    /// Runs `command` against `id`.
    pub async fn execute(
        &self,
        id: &str,
        command: &D::Command,
        context: CommandContext,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        self.execute_and_inspect(id, command, context, |_, _| {})
            .await
    }

    /// Runs `command` against `id`, and shows `inspect` the state the command ended on with its
    /// version (after the append; after a refusal, the state it was refused in), before the state
    /// goes back into the cache. It is not called for a command answered from its idempotency key.
    ///
    /// For callers that act on the state rather than on the events, such as a process manager
    /// that sends whatever its state has in flight: a version other than the one it last saw plus
    /// the events it appended means another writer moved the stream.
    pub async fn execute_and_inspect(
        &self,
        id: &str,
        command: &D::Command,
        context: CommandContext,
        inspect: impl FnOnce(&D::State, u64) + Send,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        let (stream, cached) = self.take_cached(id);
        let span = tracing::info_span!(
            "eventflow.command",
            stream = %stream,
            correlation_id = context.metadata.correlation_id.as_deref().unwrap_or(""),
        );
        self.execute_in_span(id, stream, cached, command, context, inspect)
            .instrument(span)
            .await
    }

    /// The stream of `id` and its cached state, if any; the id comes from the cache on a hit.
    fn take_cached(&self, id: &str) -> (StreamId, Option<(u64, D::State)>) {
        let hit = self.cache.as_ref().and_then(|cache| {
            with_joined(self.decider.stream_type(), id, |stream| cache.take(stream))
        });
        match hit {
            Some((stream, entry)) => (stream, Some(entry)),
            None => (self.stream_id(id), None),
        }
    }

    async fn execute_in_span(
        &self,
        id: &str,
        stream: StreamId,
        cached: Option<(u64, D::State)>,
        command: &D::Command,
        context: CommandContext,
        inspect: impl FnOnce(&D::State, u64) + Send,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        // A cached state is decided on without reading the stream first: the append's version
        // check proves it was current. Only a decision that appends nothing (a rejection, an empty
        // result) is not proven by an append, so it first catches up with the stream and decides
        // again. After a conflict the state catches up from its version rather than from scratch.
        let mut start = cached;
        let mut verified = start.is_none();
        let mut attempt = 0;
        loop {
            if let Some(key) = &context.idempotency_key
                && let Some(original) = self.dyn_store().find_idempotency_key(key).await?
            {
                // Nothing is decided: the state taken from the cache goes back unchanged.
                if let Some((version, state)) = start.take() {
                    self.cache_put(&stream, version, state);
                }
                return self.replay_original(&stream, key, original).await;
            }
            let (mut state, version) = match start.take() {
                Some((version, state)) if !verified => (state, version),
                carried => {
                    verified = true;
                    self.load_stream(id, &stream, carried).await?
                }
            };
            let events = match self.decider.decide(&state, command) {
                Ok(events) if !events.is_empty() || context.idempotency_key.is_some() => events,
                outcome if !verified => {
                    drop(outcome);
                    verified = true;
                    start = Some((version, state));
                    continue;
                }
                Ok(_) => {
                    inspect(&state, version);
                    self.cache_put(&stream, version, state);
                    return Ok(Executed {
                        stream_id: stream,
                        version,
                        events: Vec::new(),
                        deduplicated: false,
                    });
                }
                Err(rejection) => {
                    inspect(&state, version);
                    self.cache_put(&stream, version, state);
                    return Err(CommandError::Rejected(rejection));
                }
            };
            let (new_events, mut envelopes) = encode_events(&stream, events, &context.metadata)?;
            let mut request = AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Observed(version),
                new_events,
            )
            .with_outbox(self.outbox);
            request.idempotency_key = context.idempotency_key.clone();
            let append = self
                .dyn_store()
                .append(request)
                .instrument(tracing::debug_span!(
                    "eventflow.append",
                    events = envelopes.len()
                ))
                .await;
            match append {
                Ok(result) => {
                    self.settle(&mut state, &mut envelopes, &result);
                    self.maybe_snapshot(&stream, version, result.last_version, &state)
                        .await;
                    inspect(&state, result.last_version);
                    self.cache_put(&stream, result.last_version, state);
                    return Ok(Executed {
                        stream_id: stream,
                        version: result.last_version,
                        events: envelopes,
                        deduplicated: false,
                    });
                }
                Err(Error::DuplicateIdempotencyKey { key, original }) => {
                    return self.replay_original(&stream, &key, *original).await;
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    attempt += 1;
                    if !self.wait_after_conflict(attempt).await {
                        return Err(conflict.into());
                    }
                    tracing::debug!(attempt, "conflict; catching up and retrying");
                    start = Some((version, state));
                    verified = true;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Runs one command on each of several streams, all or nothing: each command is decided on
    /// its stream's current state, and every event goes into **one** atomic multi-stream append
    /// ([`AppendRequest::with_stream`]) with each stream's exact version. If any command is refused,
    /// nothing is written and the refusal is returned; on a conflict every stream catches up and
    /// every command is decided again.
    ///
    /// For invariants spread over several streams, such as reserving every line of an order from
    /// per-product stock. An idempotency key is recorded with the first stream that appends, and a
    /// retry with the same key returns that stream's [`Executed`] alone (the key records one
    /// stream). Streams whose command decides no events are left out of the append. A stream named
    /// twice is a caller's mistake ([`Error::InvalidRequest`]).
    pub async fn execute_all(
        &self,
        commands: &[(String, D::Command)],
        context: CommandContext,
    ) -> Result<Vec<Executed<D::Event>>, CommandError<D::Error>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let streams: Vec<StreamId> = commands.iter().map(|(id, _)| self.stream_id(id)).collect();
        for (i, stream) in streams.iter().enumerate() {
            if streams[..i].contains(stream) {
                return Err(Error::InvalidRequest(format!(
                    "stream {stream} is named twice in one execute_all"
                ))
                .into());
            }
        }
        let span = tracing::info_span!(
            "eventflow.command",
            streams = streams.len(),
            correlation_id = context.metadata.correlation_id.as_deref().unwrap_or(""),
        );
        self.execute_all_in_span(commands, streams, context)
            .instrument(span)
            .await
    }

    async fn execute_all_in_span(
        &self,
        commands: &[(String, D::Command)],
        streams: Vec<StreamId>,
        context: CommandContext,
    ) -> Result<Vec<Executed<D::Event>>, CommandError<D::Error>> {
        let mut attempt = 0;
        loop {
            if let Some(key) = &context.idempotency_key
                && let Some(original) = self.dyn_store().find_idempotency_key(key).await?
            {
                return Ok(vec![self.replay_among(&streams, key, original).await?]);
            }
            // Decide every command before writing anything.
            let mut decided = Vec::with_capacity(commands.len());
            for ((id, command), stream) in commands.iter().zip(&streams) {
                let cached = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.take(stream.as_str()))
                    .map(|(_, entry)| entry);
                let (state, version) = self.load_stream(id, stream, cached).await?;
                match self.decider.decide(&state, command) {
                    Ok(events) => decided.push((stream, state, version, events)),
                    Err(rejection) => {
                        self.cache_put(stream, version, state);
                        for (stream, state, version, _) in decided {
                            self.cache_put(stream, version, state);
                        }
                        return Err(CommandError::Rejected(rejection));
                    }
                }
            }
            let mut request: Option<AppendRequest> = None;
            let mut pending = Vec::with_capacity(decided.len());
            let mut unchanged = Vec::new();
            for (stream, state, version, events) in decided {
                if events.is_empty() {
                    unchanged.push((stream, state, version));
                    continue;
                }
                let (new_events, envelopes) = encode_events(stream, events, &context.metadata)?;
                let expected = ExpectedVersion::Observed(version);
                request = Some(match request {
                    None => AppendRequest::new(stream.clone(), expected, new_events),
                    Some(request) => request.with_stream(stream.clone(), expected, new_events),
                });
                pending.push((stream, state, version, envelopes));
            }
            let Some(mut request) = request else {
                return Ok(unchanged
                    .into_iter()
                    .map(|(stream, state, version)| {
                        self.cache_put(stream, version, state);
                        Executed {
                            stream_id: stream.clone(),
                            version,
                            events: Vec::new(),
                            deduplicated: false,
                        }
                    })
                    .collect());
            };
            for (stream, state, version) in unchanged {
                self.cache_put(stream, version, state);
            }
            request.idempotency_key = context.idempotency_key.clone();
            let request = request.with_outbox(self.outbox);
            match self.dyn_store().append(request).await {
                Ok(result) => {
                    let results = std::iter::once(&result).chain(&result.other_streams);
                    let mut executed = Vec::with_capacity(pending.len());
                    for ((stream, mut state, version, mut envelopes), result) in
                        pending.into_iter().zip(results)
                    {
                        self.settle(&mut state, &mut envelopes, result);
                        self.maybe_snapshot(stream, version, result.last_version, &state)
                            .await;
                        self.cache_put(stream, result.last_version, state);
                        executed.push(Executed {
                            stream_id: stream.clone(),
                            version: result.last_version,
                            events: envelopes,
                            deduplicated: false,
                        });
                    }
                    return Ok(executed);
                }
                Err(Error::DuplicateIdempotencyKey { key, original }) => {
                    return Ok(vec![self.replay_among(&streams, &key, *original).await?]);
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    attempt += 1;
                    if !self.wait_after_conflict(attempt).await {
                        return Err(conflict.into());
                    }
                    tracing::debug!(attempt, "conflict; catching up and retrying every stream");
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// The result of an earlier [`execute_all`](Self::execute_all) with the same key, which must
    /// have recorded it on one of `streams`.
    async fn replay_among(
        &self,
        streams: &[StreamId],
        key: &str,
        original: AppendResult,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        let stream = match streams.iter().find(|s| **s == original.stream) {
            Some(stream) => stream,
            None => &streams[0],
        };
        self.replay_original(stream, key, original).await
    }

    /// Gives appended envelopes the versions, positions and time the store assigned, and evolves
    /// the state through them.
    fn settle(
        &self,
        state: &mut D::State,
        envelopes: &mut [Envelope<D::Event>],
        result: &AppendResult,
    ) {
        for (i, envelope) in envelopes.iter_mut().enumerate() {
            envelope.version = result.first_version + i as u64;
            envelope.position = result.first_position.map(|p| p + i as u64);
            envelope.recorded_at = result.recorded_at;
            self.decider.evolve(state, &envelope.event);
        }
    }

    fn cache_put(&self, stream: &StreamId, version: u64, state: D::State) {
        if let Some(cache) = &self.cache {
            cache.put(stream.clone(), version, state);
        }
    }

    /// What the command that recorded idempotency key `key` appended, typed, when it was
    /// recorded on one of this repository's streams: `Ok(None)` when no append used the key.
    /// A key recorded on another stream is [`Error::DuplicateIdempotencyKey`] with that
    /// append's result, so the caller can look it up where it belongs.
    pub async fn find_executed(&self, key: &str) -> Result<Option<Executed<D::Event>>> {
        let Some(original) = self.dyn_store().find_idempotency_key(key).await? else {
            return Ok(None);
        };
        if self.id_of(&original.stream).is_none() {
            return Err(Error::DuplicateIdempotencyKey {
                key: key.to_owned(),
                original: Box::new(original),
            });
        }
        self.read_executed(original).await.map(Some)
    }

    /// What an append that recorded an idempotency key wrote (`original`, from
    /// [`EventStore::find_idempotency_key`]), typed: `Ok(None)` when it was another stream type's.
    /// For callers that keep one key space over several stream types.
    pub async fn replay(&self, original: AppendResult) -> Result<Option<Executed<D::Event>>> {
        if self.id_of(&original.stream).is_none() {
            return Ok(None);
        }
        self.read_executed(original).await.map(Some)
    }

    /// The result of an earlier command with the same idempotency key, read back from the store.
    /// A key first used on another stream is a caller's mistake, reported with the original
    /// append ([`Error::DuplicateIdempotencyKey`]) rather than decoded.
    async fn replay_original(
        &self,
        stream: &StreamId,
        key: &str,
        original: AppendResult,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        if &original.stream != stream {
            return Err(CommandError::Store(Error::DuplicateIdempotencyKey {
                key: key.to_owned(),
                original: Box::new(original),
            }));
        }
        Ok(self.read_executed(original).await?)
    }

    async fn read_executed(&self, original: AppendResult) -> Result<Executed<D::Event>> {
        let recorded = self
            .dyn_store()
            .read_range(
                &original.stream,
                original.first_version,
                original.last_version,
            )
            .await?;
        let events = self.decode_all(recorded)?;
        Ok(Executed {
            stream_id: original.stream,
            version: original.last_version,
            events,
            deduplicated: true,
        })
    }

    async fn load_stream(
        &self,
        id: &str,
        stream: &StreamId,
        cached: Option<(u64, D::State)>,
    ) -> Result<(D::State, u64)> {
        let span = tracing::debug_span!("eventflow.load", %stream, cached = cached.is_some());
        self.load_stream_in_span(id, stream, cached)
            .instrument(span)
            .await
    }

    async fn load_stream_in_span(
        &self,
        id: &str,
        stream: &StreamId,
        cached: Option<(u64, D::State)>,
    ) -> Result<(D::State, u64)> {
        let (mut state, mut version) = match cached {
            Some((version, state)) => (state, version),
            None => self.load_snapshot(id, stream).await?,
        };
        // Decoded while the store visits its records (no record is copied), evolved after: a
        // store may hold a lock while it visits, and the decider's code does not run under it.
        let mut page: Vec<(u64, D::Event)> = Vec::new();
        loop {
            let visited = self
                .dyn_store()
                .visit_stream(stream, version + 1, READ_PAGE_SIZE, &mut |recorded| {
                    page.push((recorded.version, self.upcasters.decode(recorded)?));
                    Ok(())
                })
                .await?;
            for (recorded_version, event) in page.drain(..) {
                self.decider.evolve(&mut state, &event);
                version = recorded_version;
            }
            if visited < READ_PAGE_SIZE {
                return Ok((state, version));
            }
        }
    }

    async fn load_snapshot(&self, id: &str, stream: &StreamId) -> Result<(D::State, u64)> {
        let initial = || Ok((self.decider.initial_state(id), 0));
        let Some(snapshots) = &self.snapshots else {
            return initial();
        };
        let Some(snapshot) = snapshots.store.load(stream).await? else {
            return initial();
        };
        if snapshot.format_version != snapshots.format_version {
            tracing::debug!(%stream, "snapshot of another format version; replaying the stream");
            return initial();
        }
        match (snapshots.decode)(&snapshot.state) {
            Ok(state) => Ok((state, snapshot.version)),
            Err(error) => {
                tracing::warn!(%stream, %error, "snapshot does not deserialise; replaying the stream");
                initial()
            }
        }
    }

    /// Snapshot failures are logged, not returned: the events are already committed, and a missing
    /// snapshot only costs a longer replay.
    async fn maybe_snapshot(&self, stream: &StreamId, before: u64, after: u64, state: &D::State) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        if !snapshots.policy.should_snapshot(before, after) {
            return;
        }
        let saved = match (snapshots.encode)(state) {
            Ok(bytes) => {
                let snapshot = Snapshot::new(
                    stream.clone(),
                    after,
                    snapshots.format_version,
                    bytes.into(),
                );
                snapshots.store.save(snapshot).await
            }
            Err(e) => Err(Error::serialization("snapshot", e)),
        };
        if let Err(error) = saved {
            tracing::warn!(%stream, %error, "could not save snapshot");
        }
    }
}

/// Encodes decided events for `stream`, and the typed envelopes they will become once the store
/// assigns versions ([`DeciderRepository::settle`]).
fn encode_events<E: DomainEvent>(
    stream: &StreamId,
    events: Vec<E>,
    metadata: &Metadata,
) -> Result<(Vec<NewEvent>, Vec<Envelope<E>>)> {
    // One copy of the metadata for every event of the command, record and envelope alike.
    let metadata = Arc::new(metadata.clone());
    let mut new_events = Vec::with_capacity(events.len());
    for event in &events {
        new_events.push(NewEvent::encode(event, Arc::clone(&metadata))?);
    }
    let envelopes = events
        .into_iter()
        .zip(&new_events)
        .map(|(event, new)| Envelope {
            event_id: new.event_id,
            stream_id: stream.clone(),
            version: 0,
            position: None,
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
            metadata: Arc::clone(&metadata),
            event,
        })
        .collect();
    Ok((new_events, envelopes))
}
