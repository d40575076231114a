use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;

use crate::error::{Error, Result};
use crate::outbox::Outbox;
use crate::store::{AppendRequest, AppendResult, EventStore, RecordedEvent, StreamId};

/// An [`EventStore`] and [`Outbox`] in process memory.
///
/// One mutex guards everything, which is what makes an append (events, idempotency key, outbox
/// entries) atomic and gives the global feed a total order. Events are kept once, in the global
/// log; streams index into it.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event, in global order; an event's position is its index + 1.
    log: Vec<RecordedEvent>,
    /// Log indices of each stream's events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    idempotency: HashMap<String, AppendResult>,
    /// Log indices of events not yet relayed.
    outbox: BTreeSet<usize>,
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written append behind (every append
        // validates before it mutates), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of events in the store.
    pub fn len(&self) -> usize {
        self.lock().log.len()
    }

    /// True when the store holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        if request.stream.as_str().is_empty() {
            return Err(Error::InvalidRequest("stream id is empty".into()));
        }
        // Read the clock before taking the lock, to keep the critical section short.
        let now = Utc::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(key) = &request.idempotency_key
            && let Some(original) = inner.idempotency.get(key)
        {
            return Err(Error::DuplicateIdempotencyKey {
                key: key.clone(),
                original: Box::new(original.clone()),
            });
        }
        let Inner {
            log,
            streams,
            outbox,
            ..
        } = inner;
        let existing = streams.get_mut(&request.stream);
        let actual = existing.as_ref().map_or(0, |v| v.len() as u64);
        if !request.expected.matches(actual) {
            return Err(Error::Conflict {
                stream: request.stream,
                expected: request.expected,
                actual,
            });
        }
        let first_position = log.len() as u64 + 1;
        let count = request.events.len() as u64;
        let result = AppendResult::new(
            request.stream.clone(),
            actual + 1,
            actual + count,
            (count > 0).then_some(first_position),
            now,
        );
        if count > 0 {
            let indices = match existing {
                Some(indices) => indices,
                None => streams.entry(request.stream.clone()).or_default(),
            };
            for (offset, event) in request.events.into_iter().enumerate() {
                let index = log.len();
                log.push(RecordedEvent::from_new(
                    event,
                    request.stream.clone(),
                    actual + 1 + offset as u64,
                    Some(index as u64 + 1),
                    now,
                ));
                indices.push(index);
                if request.outbox {
                    outbox.insert(index);
                }
            }
        }
        if let Some(key) = request.idempotency_key {
            inner.idempotency.insert(key, result.clone());
        }
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        let Some(indices) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indices
            .iter()
            .skip(skip)
            .take(max_count)
            .map(|&i| inner.log[i].clone())
            .collect())
    }

    async fn read_all(&self, from_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        let skip = from_position.saturating_sub(1) as usize;
        Ok(inner
            .log
            .iter()
            .skip(skip)
            .take(max_count)
            .cloned()
            .collect())
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>> {
        Ok(self.lock().idempotency.get(key).cloned())
    }
}

#[async_trait]
impl Outbox for InMemoryEventStore {
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        Ok(inner
            .outbox
            .iter()
            .take(max)
            .map(|&i| inner.log[i].clone())
            .collect())
    }

    async fn mark_published(&self, events: &[RecordedEvent]) -> Result<()> {
        let mut inner = self.lock();
        for event in events {
            if let Some(position) = event.position {
                inner.outbox.remove(&(position as usize - 1));
            }
        }
        Ok(())
    }
}
