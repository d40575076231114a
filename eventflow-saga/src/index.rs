//! The saga index: which sagas of a type exist and which have not ended, so a new orchestrator
//! finds what to resume on any [`EventStore`] (no global feed), without one hot stream and without
//! a read that grows with every saga ever run.
//!
//! - **Sharded.** [`INDEX_SHARDS`] streams `saga-index-{saga type}-{shard}`, the shard chosen by a
//!   stable hash of the saga id. Registering and settling are facts that commute (no decision
//!   reads the shard), so they are appended with [`ExpectedVersion::Any`]: concurrent starts never
//!   conflict, and they spread over the shards.
//! - **Compacted.** Each shard's open set is a fold with snapshots: whenever an append crosses a
//!   multiple of [`COMPACT_EVERY`] versions, the writer saves a snapshot of the shard's open set. Reading
//!   the unfinished sagas costs one snapshot and fewer than `COMPACT_EVERY` events per shard
//!   (plus what a missed compaction left), in proportion to the unfinished sagas, not to every
//!   saga ever run. Listing every saga ([`SagaIndex::entries`]) still reads the shards whole.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventflow_core::extension::RepositoryExt;
use eventflow_core::{
    AppendRequest, Decider, DeciderRepository, EventStore, ExpectedVersion, Metadata, NewEvent,
    SnapshotPolicy, SnapshotStore,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{IndexEvent, SagaOutcome};

/// How many shard streams a saga type's index has. Fixed: a saga is registered and settled in the
/// shard its id hashes to, so changing it would strand the sagas of other shards.
pub const INDEX_SHARDS: u32 = 16;

/// A shard's snapshot is saved each time its version crosses a multiple of this.
pub const COMPACT_EVERY: u64 = 64;

fn compaction() -> SnapshotPolicy {
    SnapshotPolicy::every(COMPACT_EVERY)
}

/// The shard saga `saga_id` is indexed in: FNV-1a of the id, stable across processes and releases.
pub fn shard_of(saga_id: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in saga_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(INDEX_SHARDS)) as u32
}

/// One shard's open sagas, in registration order: the fold its snapshots hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct IndexShard {
    open: Vec<String>,
}

/// The index shards as a [`Decider`]: registering and settling are recorded as they come.
#[derive(Debug)]
pub(crate) struct IndexDecider {
    stream_type: String,
}

impl Decider for IndexDecider {
    type State = IndexShard;
    type Command = IndexEvent;
    type Event = IndexEvent;
    type Error = Infallible;

    fn stream_type(&self) -> &str {
        &self.stream_type
    }

    fn initial_state(&self, _shard: &str) -> IndexShard {
        IndexShard::default()
    }

    fn decide(&self, _: &IndexShard, event: &IndexEvent) -> Result<Vec<IndexEvent>, Infallible> {
        Ok(vec![event.clone()])
    }

    fn evolve(&self, shard: &mut IndexShard, event: &IndexEvent) {
        match event {
            IndexEvent::Registered { saga_id } => {
                if !shard.open.contains(saga_id) {
                    shard.open.push(saga_id.clone());
                }
            }
            IndexEvent::Settled { saga_id, .. } => shard.open.retain(|id| id != saga_id),
        }
    }
}

/// Every saga the index knows: registration order (by time, then shard order) and outcomes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Entries {
    pub(crate) order: Vec<String>,
    pub(crate) settled: BTreeMap<String, (SagaOutcome, Option<String>)>,
}

/// The index of one saga type.
pub struct SagaIndex {
    store: Arc<dyn EventStore>,
    shards: DeciderRepository<IndexDecider>,
}

impl std::fmt::Debug for SagaIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaIndex")
            .field("streams", &self.shards.decider().stream_type)
            .finish_non_exhaustive()
    }
}

impl SagaIndex {
    /// The index of saga type `saga_type` in `store`, with its shard snapshots in `snapshots`.
    pub fn new(
        store: Arc<dyn EventStore>,
        saga_type: &str,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Self {
        let decider = IndexDecider {
            stream_type: format!("saga-index-{saga_type}"),
        };
        // The index is written with `Any`, not through `execute`: `append` applies the policy.
        let shards = DeciderRepository::for_decider(decider, Arc::clone(&store))
            .with_snapshots(snapshots, compaction());
        SagaIndex { store, shards }
    }

    /// Records that saga `saga_id` exists (before its first event).
    pub async fn register(&self, saga_id: &str) -> Result<()> {
        self.append(IndexEvent::Registered {
            saga_id: saga_id.to_owned(),
        })
        .await
    }

    /// Records how saga `saga_id` ended. Settling twice is harmless.
    pub async fn settle(
        &self,
        saga_id: &str,
        outcome: SagaOutcome,
        reason: Option<String>,
    ) -> Result<()> {
        self.append(IndexEvent::Settled {
            saga_id: saga_id.to_owned(),
            outcome,
            reason,
        })
        .await
    }

    async fn append(&self, event: IndexEvent) -> Result<()> {
        let saga_id = match &event {
            IndexEvent::Registered { saga_id } | IndexEvent::Settled { saga_id, .. } => saga_id,
        };
        let shard = shard_of(saga_id).to_string();
        let new_event = NewEvent::encode(&event, Metadata::new())?;
        let request = AppendRequest::new(
            self.shards.stream_id(&shard),
            ExpectedVersion::Any,
            vec![new_event],
        );
        let appended = self.store.append(request).await?;
        let before = appended.first_version.saturating_sub(1);
        if compaction().should_snapshot(before, appended.last_version) {
            // Best effort: a missed snapshot only makes the next read of this shard longer.
            if let Err(error) = self.compact(&shard).await {
                tracing::warn!(%shard, %error, "could not snapshot the saga index shard");
            }
        }
        Ok(())
    }

    async fn compact(&self, shard: &str) -> Result<()> {
        let loaded = self.shards.load(shard).await?;
        self.shards.snapshot_loaded(shard, &loaded).await?;
        Ok(())
    }

    /// The sagas registered and not settled, shard by shard in registration order. Reads each
    /// shard's snapshot and the events after it.
    pub async fn unfinished(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for shard in 0..INDEX_SHARDS {
            ids.extend(self.shards.load(&shard.to_string()).await?.state.open);
        }
        Ok(ids)
    }

    /// Every saga ever registered, in registration order, with the outcome of those settled.
    /// Reads every shard whole.
    pub(crate) async fn entries(&self) -> Result<Entries> {
        let mut registered: Vec<(DateTime<Utc>, u32, u64, String)> = Vec::new();
        let mut entries = Entries::default();
        for shard in 0..INDEX_SHARDS {
            for envelope in self.shards.read_events(&shard.to_string()).await? {
                match envelope.event {
                    IndexEvent::Registered { saga_id } => {
                        registered.push((envelope.recorded_at, shard, envelope.version, saga_id));
                    }
                    IndexEvent::Settled {
                        saga_id,
                        outcome,
                        reason,
                    } => {
                        entries.settled.insert(saga_id, (outcome, reason));
                    }
                }
            }
        }
        registered.sort();
        let mut seen = std::collections::HashSet::new();
        entries.order = registered
            .into_iter()
            .filter_map(|(.., id)| seen.insert(id.clone()).then_some(id))
            .collect();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("order-1"), shard_of("order-1"));
        let used: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&format!("order-{i}"))).collect();
        assert_eq!(used.len() as u32, INDEX_SHARDS, "200 ids use every shard");
    }
}
