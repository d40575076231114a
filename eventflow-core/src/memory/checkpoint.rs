use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::Result;
use crate::projection::CheckpointStore;

/// A [`CheckpointStore`] in process memory.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    /// Projection name → key → value.
    checkpoints: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, u64>>> {
        // Every update is a single insert or remove: a poisoned map is still consistent.
        crate::mutex::lock(&self.checkpoints)
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, projection: &str, key: &str) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .get(projection)
            .and_then(|keys| keys.get(key))
            .copied())
    }

    async fn save(&self, projection: &str, key: &str, value: u64) -> Result<()> {
        self.lock()
            .entry(projection.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn reset(&self, projection: &str) -> Result<()> {
        self.lock().remove(projection);
        Ok(())
    }
}
