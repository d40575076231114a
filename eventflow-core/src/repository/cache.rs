//! The cache of aggregates kept between commands.

use std::sync::Mutex;

use crate::mutex::lock;
use crate::store::StreamId;

/// Aggregates kept between commands so a hot aggregate is not replayed every time. An entry is only
/// a starting point: loading still reads the events appended after it, so other writers are seen.
///
/// A command takes its aggregate's state out and puts it back: the state leaves its slot, the
/// key stays. Removing and re-inserting the key instead would leave a tombstone in the table on
/// every command, and the table would rehash itself every few thousand commands to clear them.
pub(super) struct AggregateCache<A> {
    pub(super) capacity: usize,
    pub(super) entries: Mutex<foldhash::HashMap<StreamId, Slot<A>>>,
}

/// A stream's place in the cache: its id again (std's map hands out no key with a mutable
/// value, and a hit returns the id with one lookup), and the version and state, or `None` while
/// a command holds it.
pub(super) type Slot<A> = (StreamId, Option<(u64, A)>);

impl<A> AggregateCache<A> {
    /// Takes the state of the stream named `stream`, with the stored id: a hit builds no id.
    pub(super) fn take(&self, stream: &str) -> Option<(StreamId, (u64, A))> {
        let mut entries = lock(&self.entries);
        let (id, slot) = entries.get_mut(stream)?;
        let entry = slot.take()?;
        Some((id.clone(), entry))
    }

    /// Forgets the stream named `stream`, key and all.
    pub(super) fn remove(&self, stream: &str) {
        lock(&self.entries).remove(stream);
    }

    /// Puts a state back (or in): the id is cloned only for a stream not in the cache yet.
    pub(super) fn put(&self, stream: &StreamId, version: u64, state: A) {
        let mut entries = lock(&self.entries);
        if let Some((_, slot)) = entries.get_mut(stream) {
            *slot = Some((version, state));
            return;
        }
        if entries.len() >= self.capacity {
            // Evicting an arbitrary entry keeps this O(1); the cost of a wrong pick is one replay.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(stream.clone(), (stream.clone(), Some((version, state))));
    }
}
