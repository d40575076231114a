//! The global feed: a capability of the stores that keep one order over all their streams.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::store::{EventStore, RecordedEvent};

/// A store's global feed: every event of every stream, in the order the appends committed.
///
/// A capability of its own, not a method of [`EventStore`] that some backends refuse at run time:
/// a [`ProjectionRunner`](crate::ProjectionRunner) needs one, so handing it a store without a global
/// order (DynamoDB has none across partitions) is a compile error, not a production failure. Such
/// stores feed projections through the outbox and a bus instead
/// ([`Projector`](crate::Projector) is a bus handler).
#[async_trait]
pub trait GlobalFeed: EventStore {
    /// Reads at most `max_count` events with position `>= from_position` (positions are 1-based),
    /// in the order they were appended.
    async fn read_all(&self, from_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the last event in the feed (0 when the store is empty): how far a
    /// projection must get to have seen everything.
    async fn head_position(&self) -> Result<u64>;
}

#[async_trait]
impl<S: GlobalFeed + ?Sized> GlobalFeed for Arc<S> {
    async fn read_all(&self, from_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        (**self).read_all(from_position, max_count).await
    }
    async fn head_position(&self) -> Result<u64> {
        (**self).head_position().await
    }
}
