//! Projections: read models built from recorded events, with checkpoints, catch-up and rebuild.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use crate::bus::{Delivery, HandlerError, MessageHandler};
use crate::error::Result;
use crate::outbox::message_to_event;
use crate::store::{EventStore, RecordedEvent};

/// A read model fed by recorded events.
///
/// Delivery is at least once (a runner that crashes between applying and saving its checkpoint
/// replays the last batch; a bus redelivers), so `apply` must be idempotent: remember the last
/// stream version applied per stream, or the event ids, and skip what was seen.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The name its checkpoint is kept under.
    fn name(&self) -> &str;

    /// Applies one event to the read model.
    async fn apply(&self, event: &RecordedEvent) -> Result<()>;

    /// Clears the read model, before a rebuild.
    async fn reset(&self) -> Result<()>;
}

/// Where projections keep their position in the global feed.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The last position `projection` has applied, if any.
    async fn load(&self, projection: &str) -> Result<Option<u64>>;
    /// Records that `projection` has applied everything up to `position`.
    async fn save(&self, projection: &str, position: u64) -> Result<()>;
    /// Forgets the checkpoint, so the next run starts from the beginning.
    async fn reset(&self, projection: &str) -> Result<()>;
}

/// Feeds a [`Projection`] from a store's global feed, saving a checkpoint after every batch.
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    projection: Arc<dyn Projection>,
    batch_size: usize,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl ProjectionRunner {
    /// A runner for `projection` over `store`'s global feed.
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        projection: Arc<dyn Projection>,
    ) -> Self {
        ProjectionRunner {
            store,
            checkpoints,
            projection,
            batch_size: 500,
        }
    }

    /// Events read per batch, and so between checkpoints (default 500).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Applies every event after the checkpoint, up to the head of the feed; returns how many.
    ///
    /// An error stops the catch-up with the checkpoint at the last completed batch, so the next call
    /// resumes there.
    pub async fn catch_up(&self) -> Result<usize> {
        let name = self.projection.name().to_owned();
        let span = tracing::info_span!("eventflow.projection.catch_up", projection = %name);
        async {
            let mut position = self.checkpoints.load(&name).await?.unwrap_or(0);
            let mut applied = 0;
            loop {
                let batch = (*self.store)
                    .read_all(position + 1, self.batch_size)
                    .await?;
                let Some(last) = batch.last().and_then(|e| e.position) else {
                    return Ok(applied);
                };
                for event in &batch {
                    self.projection.apply(event).await?;
                }
                self.checkpoints.save(&name, last).await?;
                applied += batch.len();
                position = last;
                if batch.len() < self.batch_size {
                    return Ok(applied);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Resets the read model and the checkpoint, then replays the whole feed.
    pub async fn rebuild(&self) -> Result<usize> {
        self.projection.reset().await?;
        self.checkpoints.reset(self.projection.name()).await?;
        self.catch_up().await
    }

    /// Catches up every `interval` until `shutdown` resolves; failures are logged and retried.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.catch_up().await {
                tracing::warn!(projection = self.projection.name(), %error, "projection catch-up failed; will retry");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Feeds a [`Projection`] from a bus subscription instead of the global feed (for backends without
/// one, or projections in another service). Messages must come from an
/// [`OutboxRelay`](crate::OutboxRelay); a projection error asks the bus to redeliver.
pub struct ProjectionHandler<P: ?Sized> {
    projection: Arc<P>,
}

impl<P: Projection + ?Sized + 'static> ProjectionHandler<P> {
    /// Wraps `projection` as a message handler.
    pub fn new(projection: Arc<P>) -> Arc<Self> {
        Arc::new(ProjectionHandler { projection })
    }
}

#[async_trait]
impl<P: Projection + ?Sized + 'static> MessageHandler for ProjectionHandler<P> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event = message_to_event(&delivery.message)?;
        self.projection.apply(&event).await?;
        Ok(())
    }
}
