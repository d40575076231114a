//! Event ids: UUID v7 (a millisecond timestamp, then random bits) from the wall clock and a
//! generator of this thread's own.
//!
//! uuid's `Uuid::now_v7` serialises every id through a process-wide context, and its
//! `fast-rng` draws from a cryptographic generator: together about a third of what encoding a
//! small event costs. An event id must be unique and roughly time-ordered, not unpredictable, so
//! each thread draws its 74 random bits from wyrand (a 64-bit generator) seeded from the
//! operating system's randomness through std's `RandomState`.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Random per thread (std gives each thread random hashing keys) and per call.
fn seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id())
}

/// wyrand: one multiplication per 64 bits; its state walks a full 2^64 cycle, so a thread
/// never repeats a draw.
fn next(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0xA076_1D64_78BD_642F);
    state.set(s);
    let t = u128::from(s) * u128::from(s ^ 0xE703_7ED1_A0B4_28DB);
    (t as u64) ^ ((t >> 64) as u64)
}

/// A random number from this thread's generator (for jitter, not for secrets).
pub(crate) fn random_u64() -> u64 {
    STATE.with(next)
}

/// A fresh v7 id.
pub(crate) fn new_v7() -> Uuid {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = since_epoch.as_secs() * 1_000 + u64::from(since_epoch.subsec_millis());
    let (a, b) = STATE.with(|state| (next(state), next(state)));
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let random = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]];
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_ordered_by_millisecond() {
        let ids: Vec<Uuid> = (0..100_000).map(|_| new_v7()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        let millis = |id: &Uuid| id.get_timestamp().map(|t| t.to_unix()).unwrap_or_default();
        assert!(ids.windows(2).all(|w| millis(&w[0]) <= millis(&w[1])));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let last = millis(&ids[ids.len() - 1]);
        assert!(
            now.as_secs().abs_diff(last.0) <= 1,
            "the timestamp is the wall clock"
        );
    }

    #[test]
    fn threads_draw_different_ids() {
        let draw = || (0..10_000).map(|_| new_v7()).collect::<Vec<_>>();
        let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(draw)).collect();
        let mut all = HashSet::new();
        for handle in handles {
            for id in handle.join().unwrap_or_default() {
                assert!(all.insert(id), "an id was drawn twice");
            }
        }
        assert_eq!(all.len(), 40_000);
    }
}
