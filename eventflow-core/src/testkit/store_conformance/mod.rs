//! The store conformance suite: the behaviour every [`EventStore`] + [`Outbox`] backend promises.

mod multi_stream;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::ConformanceReport;
use crate::error::Error;
use crate::feed::GlobalFeed;
use crate::metadata::Metadata;
use crate::outbox::{Outbox, ParkedEntries};
use crate::store::{
    AppendRequest, AppendResult, EventStore, EventStoreExt, ExpectedVersion, NewEvent, StreamId,
};
use multi_stream::{
    concurrent_multi_stream, multi_stream_all_or_nothing, multi_stream_appends, outbox_parking,
};

/// Runs every store check against fresh stores from `factory` and returns what was checked.
///
/// Panics, naming the check, on the first violation. A store with a [`GlobalFeed`] also runs
/// [`feed_conformance`].
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use eventflow_core::InMemoryEventStore;
/// use eventflow_core::testkit::{feed_conformance, store_conformance};
///
/// let report = store_conformance("in-memory", || async { InMemoryEventStore::new() }).await;
/// assert!(report.unsupported.is_empty());
/// feed_conformance("in-memory", || async { InMemoryEventStore::new() }).await;
/// # });
/// ```
pub async fn store_conformance<S, F, Fut>(backend: &str, factory: F) -> ConformanceReport
where
    S: EventStore + Outbox + ParkedEntries + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut report = ConformanceReport::new(backend);
    append_and_read(&factory().await).await;
    report.pass("append_and_read");
    missing_stream_reads_empty(&factory().await).await;
    report.pass("missing_stream_reads_empty");
    expected_versions(&factory().await).await;
    report.pass("expected_versions");
    conflict_writes_nothing(&factory().await).await;
    report.pass("conflict_writes_nothing");
    paged_reads(&factory().await).await;
    report.pass("paged_reads");
    visited_reads(&factory().await).await;
    report.pass("visited_reads");
    concurrent_writers(Arc::new(factory().await)).await;
    report.pass("concurrent_writers");
    idempotency_keys(&factory().await).await;
    report.pass("idempotency_keys");
    concurrent_idempotency(Arc::new(factory().await)).await;
    report.pass("concurrent_idempotency");
    outbox(&factory().await).await;
    report.pass("outbox");
    outbox_parking(&factory().await).await;
    report.pass("outbox_parking");
    invalid_stream_id(&factory().await).await;
    report.pass("invalid_stream_id");
    multi_stream_appends(&factory().await).await;
    report.pass("multi_stream_appends");
    multi_stream_all_or_nothing(&factory().await).await;
    report.pass("multi_stream_all_or_nothing");
    concurrent_multi_stream(Arc::new(factory().await)).await;
    report.pass("concurrent_multi_stream");
    report
}

/// Runs the checks of the [`GlobalFeed`] capability: the feed holds every append in commit order,
/// including multi-stream ones, and reports its head.
pub async fn feed_conformance<S, F, Fut>(backend: &str, factory: F) -> ConformanceReport
where
    S: GlobalFeed + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut report = ConformanceReport::new(backend);
    global_feed(&factory().await).await;
    report.pass("global_feed");
    report
}

fn stream(name: &str) -> StreamId {
    StreamId::new(format!("conformance-{name}-{}", uuid::Uuid::new_v4()))
}

fn event(n: u64) -> NewEvent {
    let payload =
        serde_json::to_vec(&serde_json::json!({ "n": n, "text": "é ✓" })).unwrap_or_default();
    NewEvent::new("Tested", 1, Bytes::from(payload), Metadata::new())
}

fn events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(event).collect()
}

async fn append<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendResult, Error> {
    store
        .append(AppendRequest::new(stream.clone(), expected, events))
        .await
}

async fn version_of<S: EventStore + ?Sized>(store: &S, stream: &StreamId) -> u64 {
    let events = store
        .read_stream_to_end(stream, 1)
        .await
        .or_fail("read_stream failed");
    events.last().map_or(0, |e| e.version)
}

/// Fails the check, naming it, when a call that must succeed returns an error.
trait OrFail<T> {
    fn or_fail(self, check: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    #[track_caller]
    fn or_fail(self, check: &str) -> T {
        self.unwrap_or_else(|e| panic!("{check}: {e}"))
    }
}

#[track_caller]
fn expect_conflict(result: Result<AppendResult, Error>, expected: ExpectedVersion, actual: u64) {
    match result {
        Err(Error::Conflict {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(e, expected, "conflict reports the expected version");
            assert_eq!(a, actual, "conflict reports the actual version");
        }
        other => {
            panic!("expected a conflict (expected {expected}, actual {actual}), got {other:?}")
        }
    }
}

async fn append_and_read<S: EventStore>(store: &S) {
    let s = stream("append");
    let metadata = Metadata::new()
        .with_correlation_id("corr-1")
        .with_causation_id("cause-1")
        .with_actor("user-7")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_header("tenant", "acme");
    let mut sent = events(1, 3);
    for e in &mut sent {
        e.metadata = std::sync::Arc::new(metadata.clone());
    }
    sent[2].schema_version = 3;
    let result = append(store, &s, ExpectedVersion::NoStream, sent.clone())
        .await
        .or_fail("append_and_read: append failed");
    assert_eq!(
        (result.first_version, result.last_version, result.count()),
        (1, 3, 3),
        "append_and_read: result versions"
    );
    assert_eq!(result.stream, s, "append_and_read: result stream");
    let read = store
        .read_stream(&s, 1, 100)
        .await
        .or_fail("append_and_read: read failed");
    assert_eq!(read.len(), 3, "append_and_read: all events read back");
    for (i, (r, n)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(
            r.version,
            i as u64 + 1,
            "append_and_read: versions are 1-based"
        );
        assert_eq!(r.event_id, n.event_id, "append_and_read: event id kept");
        assert_eq!(r.event_type, n.event_type, "append_and_read: type kept");
        assert_eq!(
            r.schema_version, n.schema_version,
            "append_and_read: schema version kept"
        );
        assert_eq!(r.metadata, n.metadata, "append_and_read: metadata kept");
        assert_eq!(r.stream_id, s, "append_and_read: stream id kept");
        let payload: serde_json::Value =
            serde_json::from_slice(&r.payload).or_fail("append_and_read: payload is not JSON");
        let original: serde_json::Value = serde_json::from_slice(&n.payload).unwrap_or_default();
        assert_eq!(payload, original, "append_and_read: payload kept");
    }
}

async fn missing_stream_reads_empty<S: EventStore>(store: &S) {
    let read = store
        .read_stream(&stream("missing"), 1, 10)
        .await
        .or_fail("missing_stream_reads_empty");
    assert!(read.is_empty(), "missing_stream_reads_empty");
}

async fn expected_versions<S: EventStore>(store: &S) {
    let s = stream("expected");
    let check = |r: Result<AppendResult, Error>, what: &str| {
        r.or_fail(&format!("expected_versions: {what}"))
    };
    check(
        append(store, &s, ExpectedVersion::Exact(0), events(1, 1)).await,
        "Exact(0) on a new stream",
    );
    expect_conflict(
        append(store, &s, ExpectedVersion::NoStream, events(2, 1)).await,
        ExpectedVersion::NoStream,
        1,
    );
    check(
        append(store, &s, ExpectedVersion::Exact(1), events(2, 2)).await,
        "Exact(1)",
    );
    expect_conflict(
        append(store, &s, ExpectedVersion::Exact(2), events(4, 1)).await,
        ExpectedVersion::Exact(2),
        3,
    );
    expect_conflict(
        append(store, &s, ExpectedVersion::Exact(9), events(4, 1)).await,
        ExpectedVersion::Exact(9),
        3,
    );
    let any = check(
        append(store, &s, ExpectedVersion::Any, events(4, 2)).await,
        "Any",
    );
    assert_eq!(
        (any.first_version, any.last_version),
        (4, 5),
        "expected_versions: Any appends at the end"
    );
    let fresh = stream("expected-any");
    let any = check(
        append(store, &fresh, ExpectedVersion::Any, events(1, 1)).await,
        "Any on a new stream",
    );
    assert_eq!(
        any.last_version, 1,
        "expected_versions: Any on a new stream"
    );
    observed_versions(store, &s, &fresh).await;
    assert_eq!(
        version_of(store, &s).await,
        6,
        "expected_versions: final version"
    );
}

/// [`ExpectedVersion::Observed`]: a version read from the stream (`s` at 5, `fresh` at 1).
async fn observed_versions<S: EventStore>(store: &S, s: &StreamId, fresh: &StreamId) {
    let check = |r: Result<AppendResult, Error>, what: &str| {
        r.or_fail(&format!("expected_versions: {what}"))
    };
    // A version read from the stream: appends at its head, conflicts once the stream moved on.
    // (An `Observed` version beyond the head is the caller's mistake, which a backend need not
    // detect: not checked here. A caller's `Exact` beyond the head is refused above.)
    let read = check(
        append(store, s, ExpectedVersion::Observed(5), events(6, 1)).await,
        "Observed(5) at the head",
    );
    assert_eq!(
        read.last_version, 6,
        "expected_versions: Observed appends at its version"
    );
    expect_conflict(
        append(store, s, ExpectedVersion::Observed(5), events(7, 1)).await,
        ExpectedVersion::Observed(5),
        6,
    );
    check(
        append(store, fresh, ExpectedVersion::Observed(1), events(2, 1)).await,
        "Observed(1)",
    );
    let new = stream("expected-observed");
    check(
        append(store, &new, ExpectedVersion::Observed(0), events(1, 1)).await,
        "Observed(0) on a new stream",
    );
    expect_conflict(
        append(store, &new, ExpectedVersion::Observed(0), events(2, 1)).await,
        ExpectedVersion::Observed(0),
        1,
    );
}

async fn conflict_writes_nothing<S: EventStore + Outbox>(store: &S) {
    let s = stream("atomic");
    append(store, &s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .or_fail("conflict_writes_nothing: setup");
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(1), events(3, 5))
        .with_idempotency_key(format!("atomic-{s}"))
        .with_outbox(true);
    expect_conflict(store.append(request).await, ExpectedVersion::Exact(1), 2);
    assert_eq!(
        version_of(store, &s).await,
        2,
        "conflict_writes_nothing: no event written"
    );
    let key = store
        .find_idempotency_key(&format!("atomic-{s}"))
        .await
        .or_fail("conflict_writes_nothing");
    assert!(
        key.is_none(),
        "conflict_writes_nothing: no idempotency key recorded"
    );
    let pending = store.pending(100).await.or_fail("conflict_writes_nothing");
    assert!(
        pending.is_empty(),
        "conflict_writes_nothing: no outbox entry written"
    );
}

async fn paged_reads<S: EventStore>(store: &S) {
    let s = stream("paged");
    for batch in 0..5 {
        append(
            store,
            &s,
            ExpectedVersion::Exact(batch * 11),
            events(batch * 11 + 1, 11),
        )
        .await
        .or_fail("paged_reads: append");
    }
    let mut versions = Vec::new();
    let mut next = 1;
    let mut pages = 0;
    loop {
        let page = store
            .read_stream(&s, next, 10)
            .await
            .or_fail("paged_reads: read");
        assert!(
            page.len() <= 10,
            "paged_reads: a page holds at most max_count events"
        );
        pages += 1;
        let Some(last) = page.last() else { break };
        next = last.version + 1;
        versions.extend(page.iter().map(|e| e.version));
    }
    assert_eq!(
        versions,
        (1..=55).collect::<Vec<_>>(),
        "paged_reads: every version once, in order"
    );
    assert!(pages >= 6, "paged_reads: read past several pages");
    let middle = store.read_stream(&s, 20, 3).await.or_fail("paged_reads");
    let middle: Vec<u64> = middle.iter().map(|e| e.version).collect();
    assert_eq!(
        middle,
        vec![20, 21, 22],
        "paged_reads: read from the middle"
    );
    let past_end = store.read_stream(&s, 56, 10).await.or_fail("paged_reads");
    assert!(
        past_end.is_empty(),
        "paged_reads: reading past the end is empty"
    );
}

/// `visit_stream` hands over exactly what `read_stream` returns, and stops at the visitor's error.
async fn visited_reads<S: EventStore>(store: &S) {
    let s = stream("visited");
    append(store, &s, ExpectedVersion::NoStream, events(1, 12))
        .await
        .or_fail("visited_reads: append");
    for (from, max) in [(1, 100), (1, 5), (4, 3), (12, 10), (13, 10), (0, 2)] {
        let read = store
            .read_stream(&s, from, max)
            .await
            .or_fail("visited_reads: read");
        let mut visited = Vec::new();
        let count = store
            .visit_stream(&s, from, max, &mut |event| {
                visited.push(event.clone());
                Ok(())
            })
            .await
            .or_fail("visited_reads: visit");
        assert_eq!(
            count,
            read.len(),
            "visited_reads: count from {from}, max {max}"
        );
        assert_eq!(
            visited, read,
            "visited_reads: events from {from}, max {max}"
        );
    }
    let missing = store
        .visit_stream(&stream("visited-missing"), 1, 10, &mut |_| {
            panic!("visited_reads: a missing stream has nothing to visit")
        })
        .await
        .or_fail("visited_reads: visit a missing stream");
    assert_eq!(missing, 0, "visited_reads: a missing stream visits nothing");
    let mut seen = 0;
    let stopped = store
        .visit_stream(&s, 1, 100, &mut |_| {
            seen += 1;
            if seen == 2 {
                Err(Error::InvalidRequest("visitor stops".into()))
            } else {
                Ok(())
            }
        })
        .await;
    assert!(
        matches!(stopped, Err(Error::InvalidRequest(ref m)) if m == "visitor stops"),
        "visited_reads: the visitor's error is returned, got {stopped:?}"
    );
    assert_eq!(seen, 2, "visited_reads: nothing is visited after the error");
}

async fn concurrent_writers<S: EventStore + 'static>(store: Arc<S>) {
    const WRITERS: u64 = 16;
    const APPENDS_EACH: u64 = 4;
    let s = stream("concurrent");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            let mut done = 0;
            while done < APPENDS_EACH {
                let version = version_of(&*store, &s).await;
                let e = event(writer * 1000 + done);
                match append(&*store, &s, ExpectedVersion::Exact(version), vec![e]).await {
                    Ok(_) => done += 1,
                    Err(Error::Conflict { actual, .. }) => {
                        assert!(
                            actual > version,
                            "concurrent_writers: a conflict reports a newer version"
                        );
                        conflicts += 1;
                    }
                    Err(other) => panic!("concurrent_writers: unexpected error {other}"),
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.or_fail("concurrent_writers: writer panicked");
    }
    let all = store
        .read_stream_to_end(&s, 1)
        .await
        .or_fail("concurrent_writers");
    let versions: Vec<u64> = all.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=WRITERS * APPENDS_EACH).collect::<Vec<_>>(),
        "concurrent_writers: every version exactly once, no gap"
    );
    let ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids.len() as u64,
        WRITERS * APPENDS_EACH,
        "concurrent_writers: no event lost or duplicated"
    );
}

async fn idempotency_keys<S: EventStore>(store: &S) {
    let s = stream("idem");
    let key = format!("key-{s}");
    let first = store
        .append(
            AppendRequest::new(s.clone(), ExpectedVersion::NoStream, events(1, 2))
                .with_idempotency_key(&key),
        )
        .await
        .or_fail("idempotency_keys: first append");
    let found = store
        .find_idempotency_key(&key)
        .await
        .or_fail("idempotency_keys");
    assert_eq!(
        found.as_ref(),
        Some(&first),
        "idempotency_keys: the key finds the first result"
    );
    let other = stream("idem-other");
    for (target, expected) in [
        (&s, ExpectedVersion::Exact(2)),
        (&other, ExpectedVersion::Any),
    ] {
        let again = store
            .append(
                AppendRequest::new(target.clone(), expected, events(3, 1))
                    .with_idempotency_key(&key),
            )
            .await;
        match again {
            Err(Error::DuplicateIdempotencyKey { key: k, original }) => {
                assert_eq!(k, key, "idempotency_keys: the error names the key");
                assert_eq!(
                    *original, first,
                    "idempotency_keys: the error carries the first result"
                );
            }
            other => panic!("idempotency_keys: expected DuplicateIdempotencyKey, got {other:?}"),
        }
    }
    assert_eq!(
        version_of(store, &s).await,
        2,
        "idempotency_keys: nothing appended twice"
    );
    assert_eq!(
        version_of(store, &other).await,
        0,
        "idempotency_keys: nothing appended elsewhere"
    );
    let unknown = store
        .find_idempotency_key("no-such-key")
        .await
        .or_fail("idempotency_keys");
    assert!(
        unknown.is_none(),
        "idempotency_keys: an unknown key finds nothing"
    );
    empty_append_records_its_key(store, &s).await;
}

/// An append of no event with a key records the key (at stream `s`, version 2).
async fn empty_append_records_its_key<S: EventStore>(store: &S, s: &StreamId) {
    let empty_key = format!("empty-{s}");
    let recorded = store
        .append(
            AppendRequest::new(s.clone(), ExpectedVersion::Exact(2), Vec::new())
                .with_idempotency_key(&empty_key),
        )
        .await
        .or_fail("idempotency_keys: an empty append with a key");
    assert_eq!(
        recorded.count(),
        0,
        "idempotency_keys: an empty append writes no event"
    );
    let found = store
        .find_idempotency_key(&empty_key)
        .await
        .or_fail("idempotency_keys");
    assert_eq!(
        found,
        Some(recorded),
        "idempotency_keys: an empty append still records its key"
    );
}

async fn concurrent_idempotency<S: EventStore + 'static>(store: Arc<S>) {
    let s = stream("idem-race");
    let key = format!("race-{s}");
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            let request = AppendRequest::new(s.clone(), ExpectedVersion::Any, events(n * 10, 2))
                .with_idempotency_key(&key);
            tokio::spawn(async move { store.append(request).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut originals = Vec::new();
    for task in tasks {
        match task.await.or_fail("concurrent_idempotency") {
            Ok(result) => winners.push(result),
            Err(Error::DuplicateIdempotencyKey { original, .. }) => originals.push(*original),
            Err(other) => panic!("concurrent_idempotency: unexpected error {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "concurrent_idempotency: exactly one append wins"
    );
    assert!(
        originals.iter().all(|o| *o == winners[0]),
        "concurrent_idempotency: every loser sees the winner's result"
    );
    assert_eq!(
        version_of(&*store, &s).await,
        2,
        "concurrent_idempotency: one append's events only"
    );
}

async fn outbox<S: EventStore + Outbox>(store: &S) {
    let (a, b, quiet) = (
        stream("outbox-a"),
        stream("outbox-b"),
        stream("outbox-quiet"),
    );
    let with_outbox = |s: &StreamId, expected, events| {
        AppendRequest::new(s.clone(), expected, events).with_outbox(true)
    };
    store
        .append(with_outbox(&a, ExpectedVersion::NoStream, events(1, 2)))
        .await
        .or_fail("outbox");
    store
        .append(with_outbox(&b, ExpectedVersion::NoStream, events(1, 2)))
        .await
        .or_fail("outbox");
    append(store, &quiet, ExpectedVersion::NoStream, events(1, 3))
        .await
        .or_fail("outbox");
    store
        .append(with_outbox(&a, ExpectedVersion::Exact(2), events(3, 1)))
        .await
        .or_fail("outbox");
    let pending = store.pending(100).await.or_fail("outbox");
    assert_eq!(
        pending.len(),
        5,
        "outbox: one entry per event appended with the outbox"
    );
    assert!(
        pending.iter().all(|e| e.stream_id != quiet),
        "outbox: no entry without the outbox flag"
    );
    for s in [&a, &b] {
        let versions: Vec<u64> = pending
            .iter()
            .filter(|e| &e.stream_id == s)
            .map(|e| e.version)
            .collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(
            versions, sorted,
            "outbox: entries of a stream come in version order"
        );
    }
    let first_two = &pending[..2];
    store.mark_published(first_two).await.or_fail("outbox");
    store.mark_published(first_two).await.or_fail("outbox");
    let rest = store.pending(100).await.or_fail("outbox");
    assert_eq!(
        rest.len(),
        3,
        "outbox: marked entries are gone, marking twice is harmless"
    );
    let published: HashSet<_> = first_two.iter().map(|e| e.event_id).collect();
    assert!(
        rest.iter().all(|e| !published.contains(&e.event_id)),
        "outbox: the right entries were marked"
    );
    let limited = store.pending(2).await.or_fail("outbox");
    assert_eq!(limited.len(), 2, "outbox: pending honours max");
    store.mark_published(&rest).await.or_fail("outbox");
    assert!(
        store.pending(100).await.or_fail("outbox").is_empty(),
        "outbox: empty after marking all"
    );
}

async fn invalid_stream_id<S: EventStore>(store: &S) {
    let result = append(
        store,
        &StreamId::new(""),
        ExpectedVersion::Any,
        events(1, 1),
    )
    .await;
    assert!(
        matches!(result, Err(Error::InvalidRequest(_))),
        "invalid_stream_id: an empty stream id is refused with InvalidRequest, got {result:?}"
    );
}

async fn global_feed<S: GlobalFeed>(store: &S) {
    assert_eq!(
        store.head_position().await.or_fail("global_feed: head"),
        0,
        "global_feed: an empty store's head is 0"
    );
    let (a, b) = (stream("feed-a"), stream("feed-b"));
    let mut order = Vec::new();
    for (s, expected) in [(&a, 0), (&b, 0), (&a, 2), (&b, 2), (&a, 4)] {
        let batch = events(expected + 1, 2);
        order.extend(batch.iter().map(|e| e.event_id));
        append(store, s, ExpectedVersion::Exact(expected), batch)
            .await
            .or_fail("global_feed: append");
    }
    let mut feed = Vec::new();
    let mut next = 1;
    loop {
        let page = store
            .read_all(next, 3)
            .await
            .or_fail("global_feed: read_all");
        let Some(last) = page.last() else { break };
        next = last
            .position
            .unwrap_or_else(|| panic!("global_feed: events carry a position"))
            + 1;
        feed.extend(page);
    }
    let ids: Vec<_> = feed.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, order, "global_feed: the feed is in append order");
    let positions: Vec<u64> = feed.iter().filter_map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "global_feed: positions strictly increase"
    );
    let from = positions[4];
    let suffix = store.read_all(from, 100).await.or_fail("global_feed");
    assert_eq!(
        suffix.first().map(|e| e.event_id),
        Some(order[4]),
        "global_feed: reading from a position"
    );
    assert_eq!(
        suffix.len(),
        order.len() - 4,
        "global_feed: reading from a position reads the rest"
    );
    let head = store.head_position().await.or_fail("global_feed: head");
    assert_eq!(
        Some(head),
        positions.last().copied(),
        "global_feed: the head is the last event's position"
    );
    let (c, d) = (stream("feed-c"), stream("feed-d"));
    let both = AppendRequest::new(c.clone(), ExpectedVersion::NoStream, events(1, 1)).with_stream(
        d.clone(),
        ExpectedVersion::NoStream,
        events(1, 1),
    );
    store
        .append(both)
        .await
        .or_fail("global_feed: multi-stream append");
    let tail = store.read_all(head + 1, 10).await.or_fail("global_feed");
    let streams: Vec<_> = tail.iter().map(|e| e.stream_id.clone()).collect();
    assert_eq!(
        streams,
        vec![c, d],
        "global_feed: a multi-stream append is in the feed, in request order"
    );
}
