use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::feed::GlobalFeed;
use crate::limits::StoreLimits;
use crate::memory::InMemoryCheckpointStore;
use crate::outbox::{Outbox, ParkedEntries, ParkedEntry};
use crate::store::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId,
};

/// An [`EventStore`], [`GlobalFeed`] and [`Outbox`] in process memory.
///
/// One mutex guards everything, which is what makes an append (events of every stream,
/// idempotency key, outbox entries) atomic and gives the global feed a total order. Events are
/// kept once, in the global log; streams index into it.
///
/// By default it refuses what DynamoDB would refuse ([`StoreLimits::dynamodb`]), so code tested in
/// memory meets [`Error::LimitExceeded`] in its tests rather than in production; choose other
/// limits with [`InMemoryEventStore::with_limits`].
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
    limits: StoreLimits,
    checkpoints: Arc<InMemoryCheckpointStore>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event, in global order; an event's position is its index + 1.
    log: Vec<RecordedEvent>,
    /// Log indices of each stream's events, in version order.
    streams: foldhash::HashMap<StreamId, Vec<usize>>,
    idempotency: foldhash::HashMap<String, AppendResult>,
    /// Log indices of events not yet relayed.
    outbox: BTreeSet<usize>,
    /// Log indices of entries the bus refused for good, with the reason and when.
    parked: BTreeMap<usize, (String, DateTime<Utc>)>,
}

impl InMemoryEventStore {
    /// An empty store with DynamoDB's limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enforces `limits` instead of DynamoDB's (e.g. [`StoreLimits::unlimited`]).
    pub fn with_limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written append behind (every append
        // validates before it mutates), so a poisoned lock is safe to keep using.
        crate::mutex::lock(&self.inner)
    }

    /// The checkpoint store beside this store, for the projections fed by its feed: the same one
    /// on every call, so projections and their queries agree on progress. It lives as long as the
    /// store, as the progress of a projection over an in-memory store should.
    pub fn checkpoint_store(&self) -> Arc<InMemoryCheckpointStore> {
        Arc::clone(&self.checkpoints)
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

impl Inner {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    /// At most `max_count` records of `stream` from `from_version` on, in order: what
    /// `read_stream` copies and `visit_stream` hands over.
    fn stream_records(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> impl Iterator<Item = &RecordedEvent> {
        let indices = self.streams.get(stream).map_or(&[][..], Vec::as_slice);
        let skip = usize::try_from(from_version.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(indices.len());
        indices[skip..]
            .iter()
            .take(max_count)
            .map(|&i| &self.log[i])
    }

    /// Appends `events` to `stream` after checking that it is at `expected`, with one map
    /// lookup (the common, one-stream append).
    #[inline(always)]
    fn check_and_write(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        outbox: bool,
        now: DateTime<Utc>,
    ) -> Result<AppendResult> {
        let Inner {
            log,
            streams,
            outbox: pending,
            ..
        } = self;
        let existing = streams.get_mut(stream);
        let actual = existing.as_ref().map_or(0, |v| v.len() as u64);
        check(stream, expected, actual)?;
        let indices = match existing {
            Some(indices) => Some(indices),
            None if events.is_empty() => None,
            None => Some(streams.entry(stream.clone()).or_default()),
        };
        Ok(write(
            log, indices, pending, stream, actual, events, outbox, now,
        ))
    }

    /// Appends `events` to `stream`, which is at version `actual` (already checked).
    fn write(
        &mut self,
        stream: &StreamId,
        actual: u64,
        events: Vec<NewEvent>,
        outbox: bool,
        now: DateTime<Utc>,
    ) -> AppendResult {
        let Inner {
            log,
            streams,
            outbox: pending,
            ..
        } = self;
        let indices = (!events.is_empty()).then(|| streams.entry(stream.clone()).or_default());
        write(log, indices, pending, stream, actual, events, outbox, now)
    }
}

/// Appends `events` to the log and to the stream's `indices` (`None` only when there are none).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn write(
    log: &mut Vec<RecordedEvent>,
    indices: Option<&mut Vec<usize>>,
    pending: &mut BTreeSet<usize>,
    stream: &StreamId,
    actual: u64,
    events: Vec<NewEvent>,
    outbox: bool,
    now: DateTime<Utc>,
) -> AppendResult {
    let first_position = log.len() as u64 + 1;
    let count = events.len() as u64;
    let result = AppendResult::new(
        stream.clone(),
        actual + 1,
        actual + count,
        (count > 0).then_some(first_position),
        now,
    );
    let Some(indices) = indices else {
        return result;
    };
    for (offset, event) in events.into_iter().enumerate() {
        let index = log.len();
        log.push(RecordedEvent::from_new(
            event,
            stream.clone(),
            actual + 1 + offset as u64,
            Some(index as u64 + 1),
            now,
        ));
        indices.push(index);
        if outbox {
            pending.insert(index);
        }
    }
    result
}

fn check(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> Result<()> {
    if expected.matches(actual) {
        Ok(())
    } else {
        Err(Error::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        })
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.limits.check(&request)?;
        // Read the clock before taking the lock, to keep the critical section short.
        let now = Utc::now();
        let mut inner = self.lock();
        if let Some(key) = &request.idempotency_key
            && let Some(original) = inner.idempotency.get(key)
        {
            return Err(Error::DuplicateIdempotencyKey {
                key: key.clone(),
                original: Box::new(original.clone()),
            });
        }
        if request.other_streams.is_empty() {
            let result = inner.check_and_write(
                &request.stream,
                request.expected,
                request.events,
                request.outbox,
                now,
            )?;
            if let Some(key) = request.idempotency_key {
                inner.idempotency.insert(key, result.clone());
            }
            return Ok(result);
        }
        // Every stream is checked before any is written: all or nothing.
        let actual = inner.version(&request.stream);
        check(&request.stream, request.expected, actual)?;
        let mut others = Vec::with_capacity(request.other_streams.len());
        for other in &request.other_streams {
            let version = inner.version(&other.stream);
            check(&other.stream, other.expected, version)?;
            others.push(version);
        }
        let mut result = inner.write(&request.stream, actual, request.events, request.outbox, now);
        for (other, version) in request.other_streams.into_iter().zip(others) {
            let written = inner.write(&other.stream, version, other.events, request.outbox, now);
            result.other_streams.push(written);
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
        Ok(self
            .lock()
            .stream_records(stream, from_version, max_count)
            .cloned()
            .collect())
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>> {
        Ok(self.lock().idempotency.get(key).cloned())
    }

    /// Visits the stored records under the lock: no record is copied.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        let inner = self.lock();
        let mut visited = 0;
        for record in inner.stream_records(stream, from_version, max_count) {
            visit(record)?;
            visited += 1;
        }
        Ok(visited)
    }
}

#[async_trait]
impl GlobalFeed for InMemoryEventStore {
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

    async fn head_position(&self) -> Result<u64> {
        Ok(self.lock().log.len() as u64)
    }
}

#[async_trait]
impl Outbox for InMemoryEventStore {
    async fn pending(&self, max: usize) -> Result<Vec<RecordedEvent>> {
        let inner = self.lock();
        let held: HashSet<&StreamId> = inner
            .parked
            .keys()
            .map(|&i| &inner.log[i].stream_id)
            .collect();
        Ok(inner
            .outbox
            .iter()
            .map(|&i| &inner.log[i])
            .filter(|event| !held.contains(&event.stream_id))
            .take(max)
            .cloned()
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

    async fn park(&self, event: &RecordedEvent, reason: &str) -> Result<()> {
        let now = Utc::now();
        let mut inner = self.lock();
        if let Some(position) = event.position
            && inner.outbox.remove(&(position as usize - 1))
        {
            inner
                .parked
                .insert(position as usize - 1, (reason.to_owned(), now));
        }
        Ok(())
    }
}

#[async_trait]
impl ParkedEntries for InMemoryEventStore {
    async fn parked(&self, max: usize) -> Result<Vec<ParkedEntry>> {
        let inner = self.lock();
        let mut entries: Vec<ParkedEntry> = inner
            .parked
            .iter()
            .map(|(&i, (reason, at))| ParkedEntry::new(inner.log[i].clone(), reason.as_str(), *at))
            .collect();
        entries.sort_by(|a, b| {
            (&a.event.stream_id, a.event.version).cmp(&(&b.event.stream_id, b.event.version))
        });
        entries.truncate(max);
        Ok(entries)
    }

    async fn redrive(&self, stream: &StreamId, version: u64) -> Result<bool> {
        let mut inner = self.lock();
        let Some(&index) = inner
            .streams
            .get(stream)
            .and_then(|indices| indices.get(version.saturating_sub(1) as usize))
        else {
            return Ok(false);
        };
        if inner.parked.remove(&index).is_none() {
            return Ok(false);
        }
        inner.outbox.insert(index);
        Ok(true)
    }
}
