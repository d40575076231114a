use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::projection::CheckpointStore;

/// A [`CheckpointStore`] in process memory.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    checkpoints: Mutex<HashMap<String, u64>>,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, projection: &str) -> Result<Option<u64>> {
        let checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        Ok(checkpoints.get(projection).copied())
    }

    async fn save(&self, projection: &str, position: u64) -> Result<()> {
        let mut checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        checkpoints.insert(projection.to_owned(), position);
        Ok(())
    }

    async fn reset(&self, projection: &str) -> Result<()> {
        let mut checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        checkpoints.remove(projection);
        Ok(())
    }
}
