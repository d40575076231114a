//! Projections: read models built from the events of some stream types, decoded and upcasted,
//! applied once each and in order per stream, fed from a store's global feed or from a bus
//! subscription.
//!
//! The user writes a [`Projection`]: the event type it reads, the stream types it reads them from,
//! and what to do with one typed event. It names no aggregate: a context reading another context's
//! published events declares its own type for them (the event types it reads, decoded from the
//! published payloads) and never imports the producer's domain. The framework side, a
//! [`Projector`], does everything else the same way whatever feeds it: it ignores other streams
//! and event types before decoding, applies the event type's [upcasters](crate::DomainEvent::upcasters),
//! skips what was already applied (a redelivery, a replayed batch), holds back an event that
//! arrives before its predecessor, and records per-stream progress so a query can wait for its own
//! write ([`Projector::wait_for`]). A [`ProjectionRunner`] feeds it from a [`GlobalFeed`]; as a
//! [`MessageHandler`] it is fed by a bus subscription.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument;

use crate::bus::{Delivery, HandlerError, MessageHandler};
use crate::error::{Error, Result};
use crate::event::{DomainEvent, Envelope, Upcasters};
use crate::feed::GlobalFeed;
use crate::outbox::message_to_event;
use crate::repository::Executed;
use crate::store::{RecordedEvent, StreamId};

/// A read model fed by the events of some stream types.
///
/// `apply` receives each event once, decoded and upcasted, in version order per stream, with the
/// id of the stream it belongs to (the part after `"{stream type}-"`).
///
/// The events come from one or more stream types ([`STREAMS`](Self::STREAMS)). `Event` is the
/// producer's event type when the projection sits beside it, or a type the consumer owns when it
/// reads another context's published events: a `#[serde(tag = "type")]` enum with one variant per
/// published event type it reads, listed in [`EVENT_TYPES`](Self::EVENT_TYPES).
///
/// The framework records progress after `apply` returns, so a crash in between applies that one
/// event again on restart: make `apply` an upsert where you can.
///
/// `apply` and `reset` are written as `async fn` in an implementation. A projection is always a
/// type parameter of its [`Projector`], never a trait object, so the trait needs no boxing.
pub trait Projection: Send + Sync + 'static {
    /// The events it reads.
    type Event: DomainEvent;

    /// The stream types it reads from: `&["cart"]` reads the `cart-…` streams.
    const STREAMS: &'static [&'static str];

    /// The event types it reads when it reads only some of its streams' events (a consumer of
    /// another context's published events); others are skipped before decoding. Empty (the
    /// default): every event of its streams, which lets the projector also refuse an event that
    /// arrives before its predecessor. With a selection, the events in between were never meant
    /// to arrive, so the order among the selected ones is the feed's or the bus's order per stream
    /// (which the buses keep by ordering key) and a redelivery is still skipped.
    const EVENT_TYPES: &'static [&'static str] = &[];

    /// The name its progress is kept under; unique among projections sharing a checkpoint store.
    fn name(&self) -> &str;

    /// Applies one event of the stream of `id`.
    fn apply(
        &self,
        id: &str,
        event: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Clears the read model, before a rebuild.
    fn reset(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Where projections keep their progress: a position in the global feed, and the last version
/// applied of each stream.
///
/// Object-safe (hence `async_trait`), so one store (in memory, or a table beside the read model)
/// serves every projection.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The value saved under `key` for `projection`, if any.
    async fn load(&self, projection: &str, key: &str) -> Result<Option<u64>>;
    /// Saves `value` under `key` for `projection`.
    async fn save(&self, projection: &str, key: &str, value: u64) -> Result<()>;
    /// Forgets everything saved for `projection`, so the next run starts from the beginning.
    async fn reset(&self, projection: &str) -> Result<()>;
}

/// The [`CheckpointStore`] key of a projection's position in the global feed. Other keys are
/// stream ids, which never start with `$`.
pub const FEED_POSITION_KEY: &str = "$feed-position";

/// What became of one recorded event handed to a [`Projector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The projection applied it.
    Applied,
    /// Its version was applied before (a redelivery or a replayed batch): skipped.
    AlreadyApplied,
    /// It belongs to a stream type the projection does not read: not decoded, skipped.
    OtherStream,
    /// Its event type is not among those the projection reads: not decoded, skipped.
    OtherEventType,
}

/// The framework side of a [`Projection`]: decoding, upcasting, de-duplication, order and progress.
pub struct Projector<P: Projection> {
    projection: Arc<P>,
    upcasters: Upcasters,
    checkpoints: Arc<dyn CheckpointStore>,
    /// `"{stream type}-"` of every stream type the projection reads.
    prefixes: Vec<String>,
    /// Last version applied per stream, as far as this process has seen.
    applied: Mutex<HashMap<StreamId, u64>>,
    /// Bumped after every applied event, to wake [`Projector::wait_for`].
    progress: watch::Sender<u64>,
    /// One event at a time: check, apply and record must not interleave for one stream, and a
    /// projection's own state is simplest to reason about without concurrent applies.
    gate: tokio::sync::Mutex<()>,
}

impl<P: Projection> std::fmt::Debug for Projector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("projection", &self.projection.name())
            .field("streams", &P::STREAMS)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> Projector<P> {
    /// A projector for `projection`, keeping progress in `checkpoints`.
    pub fn new(projection: Arc<P>, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        Projector {
            projection,
            upcasters: P::Event::upcasters(),
            checkpoints,
            prefixes: P::STREAMS.iter().map(|t| format!("{t}-")).collect(),
            applied: Mutex::new(HashMap::new()),
            progress: watch::channel(0).0,
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The projection it feeds.
    pub fn projection(&self) -> &Arc<P> {
        &self.projection
    }

    /// The id of `stream` when it is one of the stream types the projection reads.
    fn id_of<'s>(&self, stream: &'s StreamId) -> Option<&'s str> {
        self.prefixes
            .iter()
            .find_map(|prefix| stream.as_str().strip_prefix(prefix.as_str()))
    }

    /// Whether the projection reads events of `event_type`.
    fn reads(event_type: &str) -> bool {
        P::EVENT_TYPES.is_empty() || P::EVENT_TYPES.contains(&event_type)
    }

    fn applied(&self) -> MutexGuard<'_, HashMap<StreamId, u64>> {
        // The map only caches what the checkpoint store holds: a poisoned one is still correct.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last version of `stream` this projection has applied (0: none).
    pub async fn applied_version(&self, stream: &StreamId) -> Result<u64> {
        if let Some(version) = self.applied().get(stream) {
            return Ok(*version);
        }
        let name = self.projection.name();
        let stored = self.checkpoints.load(name, stream.as_str()).await?;
        Ok(stored.unwrap_or(0))
    }

    /// Waits until `stream` has been applied up to `version`, at most `timeout`; true when it
    /// was. This is how a query reads its own write: the command returns the stream's version,
    /// the query waits for the projection to reach it.
    pub async fn wait_for(
        &self,
        stream: &StreamId,
        version: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let mut progress = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.applied_version(stream).await? >= version {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives as long as `self`; a timeout ends the wait.
                Ok(Err(_)) | Err(_) => return Ok(self.applied_version(stream).await? >= version),
            }
        }
    }

    /// Hands one recorded event to the projection: skipped when it belongs to a stream or event
    /// type the projection does not read or was applied before, applied when it is the stream's
    /// next version.
    ///
    /// An event that arrives before its predecessor is refused with [`Error::OutOfOrder`] and
    /// nothing is applied: the feed or bus delivers it again later, after the gap is filled.
    ///
    /// Several instances of one projector (competing consumers of one queue, sharing a durable
    /// checkpoint store) stay in step: before applying, the projector reads the stored
    /// checkpoint, not only what this instance has seen.
    pub async fn apply(&self, recorded: RecordedEvent) -> Result<Applied> {
        let Some(id) = self.id_of(&recorded.stream_id) else {
            return Ok(Applied::OtherStream);
        };
        if !Self::reads(&recorded.event_type) {
            return Ok(Applied::OtherEventType);
        }
        let id = id.to_owned();
        let _one_at_a_time = self.gate.lock().await;
        if let Some(skipped) = self.admit(&recorded.stream_id, recorded.version).await? {
            return Ok(skipped);
        }
        let event = self.upcasters.decode(&recorded)?;
        let envelope = Envelope::from_recorded(recorded, event);
        self.apply_admitted(&id, &envelope).await?;
        Ok(Applied::Applied)
    }

    /// Applies what a command of this process just recorded, without waiting for the bus: the
    /// writer's own read model is current when the command returns, however slow the bus, and
    /// the bus's delivery of the same events later is a duplicate. Events applied before are
    /// skipped; events after a gap (an earlier version this projection has not seen yet) are
    /// left to the bus, which delivers them in order.
    pub async fn apply_executed(&self, executed: &Executed<P::Event>) -> Result<()> {
        let Some(id) = self.id_of(&executed.stream_id) else {
            return Ok(());
        };
        let _one_at_a_time = self.gate.lock().await;
        for envelope in &executed.events {
            if !Self::reads(envelope.event.event_type()) {
                continue;
            }
            match self.admit(&envelope.stream_id, envelope.version).await {
                Ok(None) => self.apply_admitted(id, envelope).await?,
                Ok(Some(_)) => {}
                Err(Error::OutOfOrder { .. }) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Whether `version` of `stream` is the next to apply (`None`), or was applied before
    /// (`Some(AlreadyApplied)`); an error when an earlier version is missing and the projection
    /// reads every event of its streams. Called with the gate held.
    async fn admit(&self, stream: &StreamId, version: u64) -> Result<Option<Applied>> {
        let mut last = self.applied().get(stream).copied().unwrap_or(0);
        if version > last {
            // Another instance may have applied more since this one last looked.
            let stored = self
                .checkpoints
                .load(self.projection.name(), stream.as_str());
            last = last.max(stored.await?.unwrap_or(0));
        }
        if version <= last {
            return Ok(Some(Applied::AlreadyApplied));
        }
        if version > last + 1 && P::EVENT_TYPES.is_empty() {
            return Err(Error::OutOfOrder {
                stream: stream.clone(),
                expected: last + 1,
                actual: version,
            });
        }
        Ok(None)
    }

    /// Applies an admitted event and records the progress. Called with the gate held.
    async fn apply_admitted(&self, id: &str, envelope: &Envelope<P::Event>) -> Result<()> {
        self.projection.apply(id, envelope).await?;
        let stream = &envelope.stream_id;
        self.checkpoints
            .save(self.projection.name(), stream.as_str(), envelope.version)
            .await?;
        self.applied().insert(stream.clone(), envelope.version);
        self.progress.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Clears the read model and everything recorded of its progress.
    pub async fn reset(&self) -> Result<()> {
        let _one_at_a_time = self.gate.lock().await;
        self.projection.reset().await?;
        self.checkpoints.reset(self.projection.name()).await?;
        self.applied().clear();
        Ok(())
    }
}

/// Fed by a bus subscription: messages must come from an [`OutboxRelay`](crate::OutboxRelay). A
/// duplicate is acknowledged without applying it; an out-of-order event or a failed apply asks
/// the bus to redeliver.
#[async_trait]
impl<P: Projection> MessageHandler for Projector<P> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event = message_to_event(&delivery.message)?;
        let version = event.version;
        let outcome = self.apply(event).await;
        // The message's ordering key is the event's stream (the outbox sets it).
        tracing::debug!(
            projection = self.projection.name(),
            stream = ?delivery.message.ordering_key,
            version,
            outcome = ?outcome,
            "projected a delivery"
        );
        outcome?;
        Ok(())
    }
}

/// Feeds a [`Projector`] from a store's global feed, saving the feed position after every batch.
///
/// It takes a [`GlobalFeed`], so a runner over a store without one does not compile.
pub struct ProjectionRunner<P: Projection> {
    feed: Arc<dyn GlobalFeed>,
    projector: Arc<Projector<P>>,
    checkpoints: Arc<dyn CheckpointStore>,
    batch_size: usize,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projector", &self.projector)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// A runner for `projection` over `feed`, keeping progress in `checkpoints`: a durable read
    /// model wants a durable checkpoint store beside it, or it is rebuilt from the start of the
    /// feed after every restart while looking current. Stores offer one beside them
    /// ([`InMemoryEventStore::checkpoint_store`](crate::InMemoryEventStore::checkpoint_store), the
    /// DynamoDB store's meta table).
    pub fn new(
        feed: Arc<dyn GlobalFeed>,
        projection: Arc<P>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        ProjectionRunner {
            feed,
            projector: Arc::new(Projector::new(projection, Arc::clone(&checkpoints))),
            checkpoints,
            batch_size: 500,
        }
    }

    /// A runner keeping progress in `checkpoints`.
    #[deprecated(
        since = "0.3.0",
        note = "use `ProjectionRunner::new`, which takes the checkpoint store"
    )]
    pub fn with_checkpoints(
        feed: Arc<dyn GlobalFeed>,
        projection: Arc<P>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self::new(feed, projection, checkpoints)
    }

    /// Events read per batch, and so between feed checkpoints (default 500).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The projector: the projection, its progress, [`Projector::wait_for`].
    pub fn projector(&self) -> &Arc<Projector<P>> {
        &self.projector
    }

    /// The projection it feeds.
    pub fn projection(&self) -> &Arc<P> {
        self.projector.projection()
    }

    fn name(&self) -> &str {
        self.projector.projection.name()
    }

    /// The feed position this projection has applied up to.
    pub async fn position(&self) -> Result<u64> {
        let saved = self
            .checkpoints
            .load(self.name(), FEED_POSITION_KEY)
            .await?;
        Ok(saved.unwrap_or(0))
    }

    /// How many events of the feed (of any stream) it has not read yet.
    pub async fn lag(&self) -> Result<u64> {
        let head = self.feed.head_position().await?;
        Ok(head.saturating_sub(self.position().await?))
    }

    /// Applies every event after the checkpoint, up to the head of the feed; returns how many
    /// events it applied.
    ///
    /// An error stops the catch-up with the checkpoint at the last completed batch, so the next call
    /// resumes there (events of that batch already applied are skipped).
    pub async fn catch_up(&self) -> Result<usize> {
        let span = tracing::info_span!("eventflow.projection.catch_up", projection = %self.name());
        async {
            let mut position = self.position().await?;
            let mut applied = 0;
            loop {
                let batch = self.feed.read_all(position + 1, self.batch_size).await?;
                let Some(last) = batch.last().and_then(|e| e.position) else {
                    return Ok(applied);
                };
                let full = batch.len() == self.batch_size;
                for event in batch {
                    if self.projector.apply(event).await? == Applied::Applied {
                        applied += 1;
                    }
                }
                self.checkpoints
                    .save(self.name(), FEED_POSITION_KEY, last)
                    .await?;
                position = last;
                if !full {
                    return Ok(applied);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Resets the read model and its progress, then replays the whole feed.
    pub async fn rebuild(&self) -> Result<usize> {
        self.projector.reset().await?;
        self.catch_up().await
    }

    /// Catches up every `interval` until `shutdown` resolves; failures are logged and retried.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.catch_up().await {
                tracing::warn!(projection = self.name(), %error, "projection catch-up failed; will retry");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
