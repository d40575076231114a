use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::StreamId;

/// A [`SnapshotStore`] in process memory, keeping the latest snapshot per stream.
#[derive(Debug, Default)]
pub struct InMemorySnapshotStore {
    snapshots: Mutex<HashMap<StreamId, Snapshot>>,
}

impl InMemorySnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SnapshotStore for InMemorySnapshotStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(snapshots.get(stream).cloned())
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        match snapshots.get(&snapshot.stream_id) {
            Some(existing) if existing.version >= snapshot.version => {}
            _ => {
                snapshots.insert(snapshot.stream_id.clone(), snapshot);
            }
        }
        Ok(())
    }
}
