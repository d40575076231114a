//! Snapshots: a stored aggregate state at a version, so loading replays only later events.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::StreamId;

/// An aggregate's serialised state after `version` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The number of events folded into the state.
    pub version: u64,
    /// The version of the state's format; a snapshot of another format is ignored.
    pub format_version: u32,
    /// The JSON state.
    pub state: Bytes,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

impl Snapshot {
    /// Builds a snapshot taken now.
    pub fn new(stream_id: StreamId, version: u64, format_version: u32, state: Bytes) -> Self {
        Snapshot {
            stream_id,
            version,
            format_version,
            state,
            taken_at: Utc::now(),
        }
    }
}

/// Where snapshots are kept. Object-safe for the same reason as [`EventStore`](crate::EventStore).
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream`, if any.
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// Stores `snapshot` unless one of a later version is already stored.
    async fn save(&self, snapshot: Snapshot) -> Result<()>;
}

/// When the repository takes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: u64,
}

impl SnapshotPolicy {
    /// A snapshot whenever an append crosses a multiple of `n` events (`n` of 0 is treated as 1).
    pub fn every(n: u64) -> Self {
        SnapshotPolicy { every: n.max(1) }
    }

    /// Whether an append that moved the stream from `before` to `after` should be snapshotted.
    pub fn should_snapshot(self, before: u64, after: u64) -> bool {
        after > before && before / self.every != after / self.every
    }
}
