//! The repository: load an aggregate, let it decide, append what it decided, retry on conflict.

mod cache;
mod command;
mod execute;
mod extension;
mod loading;

/// Moved to [`crate::event`]; still importable from here.
pub use crate::event::Envelope;
pub use command::{CommandContext, CommandError, Executed, Loaded};
pub use extension::RepositoryExt;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::AggregateCache;
use loading::{Snapshotting, decode_state, encode_state};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::backoff::Backoff;
use crate::decider::{AggregateDecider, Decider};
use crate::error::{Error, Result};
use crate::event::{DomainEvent, Upcasters};
use crate::scratch::with_joined;
use crate::snapshot::{SnapshotPolicy, SnapshotStore};
use crate::store::{AppendResult, EventStore, EventStoreExt, RecordedEvent, StreamId};

/// Loads the streams of a [`Decider`] from an [`EventStore`] and runs commands against them.
///
/// A command runs as: load (cache or snapshot, then later events) → [`Decider::decide`] → append
/// with [`ExpectedVersion::Observed`](crate::ExpectedVersion::Observed) (the version it loaded). On a
/// conflict it catches up and tries again, as [`with_conflict_retry`](Self::with_conflict_retry)
/// says. Aggregates use it as
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
    #[deprecated(
        since = "0.3.0",
        note = "use `with_conflict_retry(Backoff::new(retries + 1, first, longest))`"
    )]
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

    /// Takes `id`'s entry out of the cache, if there is one, with the stored stream id (a hit
    /// builds no id).
    fn take_cached(&self, id: &str) -> Option<(StreamId, (u64, D::State))> {
        let cache = self.cache.as_ref()?;
        with_joined(self.decider.stream_type(), id, |stream| cache.take(stream))
    }

    /// Drops `id`'s entry from the cache, key and all (a finished saga is never loaded again).
    fn forget_cached(&self, id: &str) {
        if let Some(cache) = &self.cache {
            with_joined(self.decider.stream_type(), id, |stream| {
                cache.remove(stream)
            });
        }
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

    /// Moved: [`cache_loaded`](crate::extension::RepositoryExt::cache_loaded).
    #[deprecated(
        since = "0.3.0",
        note = "use `eventflow_core::extension::RepositoryExt::cache_loaded`"
    )]
    pub fn remember(&self, id: &str, loaded: Loaded<D::State>) {
        RepositoryExt::cache_loaded(self, id, loaded);
    }

    /// Moved: [`evict`](crate::extension::RepositoryExt::evict).
    #[deprecated(
        since = "0.3.0",
        note = "use `eventflow_core::extension::RepositoryExt::evict`"
    )]
    pub fn forget(&self, id: &str) {
        RepositoryExt::evict(self, id);
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
}
