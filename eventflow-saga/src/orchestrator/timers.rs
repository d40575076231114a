//! Timers: at most one per saga (its step deadline, compensation deadline, retry time, or a
//! reload after a failure), fired by the clock.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::machine::TimerKey;

/// A saga's timer: when, and what for.
pub(super) type Timer = (DateTime<Utc>, TimerKey);

#[derive(Default)]
pub(super) struct Timers {
    queue: BTreeSet<(DateTime<Utc>, String, TimerKey)>,
    by_saga: HashMap<String, Timer>,
}

impl Timers {
    /// Replaces saga `saga_id`'s timer (`None`: it has none).
    pub(super) fn set(&mut self, saga_id: &str, timer: Option<Timer>) {
        if let Some((at, key)) = self.by_saga.remove(saga_id) {
            self.queue.remove(&(at, saga_id.to_owned(), key));
        }
        if let Some((at, key)) = timer {
            self.queue.insert((at, saga_id.to_owned(), key.clone()));
            self.by_saga.insert(saga_id.to_owned(), (at, key));
        }
    }

    /// Whether saga `saga_id` has a timer.
    pub(super) fn has(&self, saga_id: &str) -> bool {
        self.by_saga.contains_key(saga_id)
    }

    /// The next deadline.
    pub(super) fn next(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|t| t.0)
    }

    /// Removes and returns the timers due at `now`, earliest first.
    pub(super) fn take_due(
        &mut self,
        now: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, String, TimerKey)> {
        let mut due = Vec::new();
        while let Some(first) = self.queue.first() {
            if first.0 > now {
                break;
            }
            if let Some(entry) = self.queue.pop_first() {
                self.by_saga.remove(&entry.1);
                due.push(entry);
            }
        }
        due
    }
}
