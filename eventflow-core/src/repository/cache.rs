//! The cache of aggregates kept between commands.

use std::sync::Mutex;

use crate::mutex::lock;
use crate::store::StreamId;

/// Aggregates kept between commands so a hot aggregate is not replayed every time. An entry is only
/// a starting point: loading still reads the events appended after it, so other writers are seen.
pub(super) struct AggregateCache<A> {
    pub(super) capacity: usize,
    pub(super) entries: Mutex<foldhash::HashMap<StreamId, (u64, A)>>,
}

impl<A> AggregateCache<A> {
    /// Takes the entry of the stream named `stream`, with the stored id: a hit builds no id.
    pub(super) fn take(&self, stream: &str) -> Option<(StreamId, (u64, A))> {
        lock(&self.entries).remove_entry(stream)
    }

    pub(super) fn put(&self, stream: StreamId, version: u64, state: A) {
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
