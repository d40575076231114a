//! Multi-stream appends: atomic, all or nothing, concurrent; outbox parking.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::Error;
use crate::outbox::{Outbox, ParkedEntries};
use crate::store::{AppendRequest, EventStore, EventStoreExt, ExpectedVersion};

use super::{OrFail, append, event, events, expect_conflict, stream, version_of};

pub(super) async fn multi_stream_appends<S: EventStore>(store: &S) {
    let (a, b, c) = (stream("multi-a"), stream("multi-b"), stream("multi-c"));
    append(store, &a, ExpectedVersion::NoStream, events(1, 2))
        .await
        .or_fail("multi_stream_appends: setup");
    let request = AppendRequest::new(a.clone(), ExpectedVersion::Exact(2), events(3, 1))
        .with_stream(b.clone(), ExpectedVersion::NoStream, events(1, 2))
        .with_stream(c.clone(), ExpectedVersion::Any, events(1, 1));
    let result = store
        .append(request)
        .await
        .or_fail("multi_stream_appends: append");
    assert_eq!(
        (&result.stream, result.first_version, result.last_version),
        (&a, 3, 3),
        "multi_stream_appends: the result describes the primary stream"
    );
    let others: Vec<_> = result
        .other_streams
        .iter()
        .map(|r| (r.stream.clone(), r.first_version, r.last_version))
        .collect();
    assert_eq!(
        others,
        vec![(b.clone(), 1, 2), (c.clone(), 1, 1)],
        "multi_stream_appends: one result per other stream, in request order"
    );
    for (s, version) in [(&a, 3), (&b, 2), (&c, 1)] {
        assert_eq!(
            version_of(store, s).await,
            version,
            "multi_stream_appends: every stream written"
        );
    }
    let check_only = AppendRequest::new(a.clone(), ExpectedVersion::Exact(3), events(4, 1))
        .with_stream(b.clone(), ExpectedVersion::Exact(2), Vec::new());
    store
        .append(check_only)
        .await
        .or_fail("multi_stream_appends: a stream with no events is only checked");
    assert_eq!(
        version_of(store, &b).await,
        2,
        "multi_stream_appends: a checked stream gets no event"
    );
    let key = format!("multi-{a}");
    let keyed = AppendRequest::new(a.clone(), ExpectedVersion::Exact(4), events(5, 1))
        .with_stream(c.clone(), ExpectedVersion::Exact(1), events(2, 2))
        .with_idempotency_key(&key);
    store
        .append(keyed)
        .await
        .or_fail("multi_stream_appends: a keyed multi-stream append");
    let recorded = store
        .find_idempotency_key(&key)
        .await
        .or_fail("multi_stream_appends: the key is found");
    let streams: Option<Vec<_>> = recorded.map(|r| {
        std::iter::once(&r)
            .chain(&r.other_streams)
            .map(|r| (r.stream.clone(), r.first_version, r.last_version))
            .collect()
    });
    assert_eq!(
        streams,
        Some(vec![(a.clone(), 5, 5), (c.clone(), 2, 3)]),
        "multi_stream_appends: the key records what every stream got"
    );
    let twice = AppendRequest::new(a.clone(), ExpectedVersion::Any, events(9, 1)).with_stream(
        a.clone(),
        ExpectedVersion::Any,
        events(10, 1),
    );
    let refused = store.append(twice).await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "multi_stream_appends: a stream named twice is refused, got {refused:?}"
    );
}

pub(super) async fn multi_stream_all_or_nothing<S: EventStore + Outbox>(store: &S) {
    let (a, b, c) = (stream("all-a"), stream("all-b"), stream("all-c"));
    append(store, &a, ExpectedVersion::NoStream, events(1, 1))
        .await
        .or_fail("multi_stream_all_or_nothing: setup");
    append(store, &b, ExpectedVersion::NoStream, events(1, 2))
        .await
        .or_fail("multi_stream_all_or_nothing: setup");
    let key = format!("all-{a}");
    // The second stream is behind what the writer believes; the first and third are fine.
    let request = AppendRequest::new(a.clone(), ExpectedVersion::Exact(1), events(2, 2))
        .with_stream(b.clone(), ExpectedVersion::Exact(1), events(3, 1))
        .with_stream(c.clone(), ExpectedVersion::NoStream, events(1, 1))
        .with_idempotency_key(&key)
        .with_outbox(true);
    match store.append(request).await {
        Err(Error::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(
                stream, b,
                "multi_stream_all_or_nothing: the conflict names the stream"
            );
            assert_eq!(
                (expected, actual),
                (ExpectedVersion::Exact(1), 2),
                "multi_stream_all_or_nothing: the conflict carries that stream's versions"
            );
        }
        other => panic!("multi_stream_all_or_nothing: expected a conflict on {b}, got {other:?}"),
    }
    nothing_written(store, &[(&a, 1), (&b, 2), (&c, 0)], &key).await;
    // A stream only checked (no events) fails the append just the same.
    let checked = AppendRequest::new(a.clone(), ExpectedVersion::Exact(1), events(2, 1))
        .with_stream(b.clone(), ExpectedVersion::Exact(5), Vec::new());
    expect_conflict(store.append(checked).await, ExpectedVersion::Exact(5), 2);
    assert_eq!(
        version_of(store, &a).await,
        1,
        "multi_stream_all_or_nothing: a failed check writes nothing"
    );
    let ok = AppendRequest::new(a.clone(), ExpectedVersion::Exact(1), events(2, 1))
        .with_stream(c.clone(), ExpectedVersion::NoStream, events(1, 2))
        .with_idempotency_key(&key)
        .with_outbox(true);
    let result = store
        .append(ok)
        .await
        .or_fail("multi_stream_all_or_nothing: the corrected append");
    let pending = store
        .pending(100)
        .await
        .or_fail("multi_stream_all_or_nothing");
    assert_eq!(
        pending.len(),
        3,
        "multi_stream_all_or_nothing: outbox entries for every stream's events"
    );
    let original = store
        .find_idempotency_key(&key)
        .await
        .or_fail("multi_stream_all_or_nothing");
    assert_eq!(
        original.map(|o| (o.stream, o.first_version, o.last_version)),
        Some((a.clone(), result.first_version, result.last_version)),
        "multi_stream_all_or_nothing: the key records the primary stream's result"
    );
}

/// After a refused multi-stream append: every stream at the version it had, no idempotency key
/// and no outbox entry.
async fn nothing_written<S: EventStore + Outbox>(
    store: &S,
    versions: &[(&crate::store::StreamId, u64)],
    key: &str,
) {
    for (s, version) in versions {
        assert_eq!(
            version_of(store, s).await,
            *version,
            "multi_stream_all_or_nothing: no stream written"
        );
    }
    let recorded = store
        .find_idempotency_key(key)
        .await
        .or_fail("multi_stream_all_or_nothing");
    assert!(
        recorded.is_none(),
        "multi_stream_all_or_nothing: no idempotency key recorded"
    );
    let pending = store
        .pending(100)
        .await
        .or_fail("multi_stream_all_or_nothing");
    assert!(
        pending.is_empty(),
        "multi_stream_all_or_nothing: no outbox entry written"
    );
}

/// Writers that each append to their own stream and to one shared stream in the same append:
/// exactly one wins each version of the shared stream, and every own-stream event has its partner.
pub(super) async fn concurrent_multi_stream<S: EventStore + 'static>(store: Arc<S>) {
    const WRITERS: u64 = 8;
    const APPENDS_EACH: u64 = 3;
    let shared = stream("multi-shared");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let shared = shared.clone();
        let own = stream(&format!("multi-own-{writer}"));
        tasks.push(tokio::spawn(async move {
            write_both(&*store, &own, &shared, writer, APPENDS_EACH).await;
            own
        }));
    }
    let mut owns = Vec::new();
    for task in tasks {
        owns.push(
            task.await
                .or_fail("concurrent_multi_stream: writer panicked"),
        );
    }
    let all = store
        .read_stream_to_end(&shared, 1)
        .await
        .or_fail("concurrent_multi_stream");
    let versions: Vec<u64> = all.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=WRITERS * APPENDS_EACH).collect::<Vec<_>>(),
        "concurrent_multi_stream: every shared version exactly once, no gap"
    );
    let shared_payloads: HashSet<_> = all.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(
        shared_payloads.len() as u64,
        WRITERS * APPENDS_EACH,
        "concurrent_multi_stream: no shared event duplicated"
    );
    for own in owns {
        let events = store
            .read_stream_to_end(&own, 1)
            .await
            .or_fail("concurrent_multi_stream");
        assert_eq!(
            events.len() as u64,
            APPENDS_EACH,
            "concurrent_multi_stream: every own stream complete"
        );
        assert!(
            events.iter().all(|e| shared_payloads.contains(&e.payload)),
            "concurrent_multi_stream: every own-stream event has its partner in the shared stream"
        );
    }
}

/// One writer of [`concurrent_multi_stream`]: `appends` appends, each of one event to `own` and
/// one to `shared`, catching up with `shared` after every lost race.
async fn write_both<S: EventStore + ?Sized>(
    store: &S,
    own: &crate::store::StreamId,
    shared: &crate::store::StreamId,
    writer: u64,
    appends: u64,
) {
    let mut done = 0;
    while done < appends {
        let version = version_of(store, shared).await;
        let n = writer * 1000 + done;
        let request = AppendRequest::new(own.clone(), ExpectedVersion::Exact(done), vec![event(n)])
            .with_stream(
                shared.clone(),
                ExpectedVersion::Exact(version),
                vec![event(n)],
            );
        match store.append(request).await {
            Ok(_) => done += 1,
            Err(Error::Conflict { stream, actual, .. }) => {
                assert_eq!(
                    stream, *shared,
                    "concurrent_multi_stream: only the shared stream conflicts"
                );
                assert!(
                    actual > version,
                    "concurrent_multi_stream: a conflict reports a newer version"
                );
                assert_eq!(
                    version_of(store, own).await,
                    done,
                    "concurrent_multi_stream: a lost append wrote nothing to the own stream"
                );
            }
            Err(other) => panic!("concurrent_multi_stream: unexpected error {other}"),
        }
    }
}

pub(super) async fn outbox_parking<S: EventStore + Outbox + ParkedEntries>(store: &S) {
    let (a, b) = (stream("park-a"), stream("park-b"));
    for s in [&a, &b] {
        store
            .append(
                AppendRequest::new(s.clone(), ExpectedVersion::NoStream, events(1, 2))
                    .with_outbox(true),
            )
            .await
            .or_fail("outbox_parking: append");
    }
    let pending = store.pending(100).await.or_fail("outbox_parking");
    let first_of_a = pending
        .iter()
        .find(|e| e.stream_id == a && e.version == 1)
        .cloned()
        .unwrap_or_else(|| panic!("outbox_parking: a's first entry is pending"));
    store
        .park(&first_of_a, "too large for the bus")
        .await
        .or_fail("outbox_parking: park");
    let pending = store.pending(100).await.or_fail("outbox_parking");
    assert!(
        pending.iter().all(|e| e.stream_id != a),
        "outbox_parking: a parked entry holds back the rest of its stream"
    );
    assert_eq!(
        pending.iter().filter(|e| e.stream_id == b).count(),
        2,
        "outbox_parking: other streams are not held back"
    );
    let parked = store.parked(10).await.or_fail("outbox_parking: parked");
    assert_eq!(parked.len(), 1, "outbox_parking: one parked entry");
    assert_eq!(
        (
            &parked[0].event.stream_id,
            parked[0].event.version,
            parked[0].event.event_id
        ),
        (&a, 1, first_of_a.event_id),
        "outbox_parking: the parked entry is the event"
    );
    assert_eq!(
        parked[0].reason, "too large for the bus",
        "outbox_parking: the reason"
    );
    store
        .park(&first_of_a, "again")
        .await
        .or_fail("outbox_parking: parking what is not pending is harmless");
    assert!(
        store
            .redrive(&a, 1)
            .await
            .or_fail("outbox_parking: redrive"),
        "outbox_parking: redrive finds the entry"
    );
    assert!(
        !store
            .redrive(&a, 1)
            .await
            .or_fail("outbox_parking: redrive"),
        "outbox_parking: a second redrive finds nothing"
    );
    assert!(store.parked(10).await.or_fail("outbox_parking").is_empty());
    let versions: Vec<u64> = store
        .pending(100)
        .await
        .or_fail("outbox_parking")
        .iter()
        .filter(|e| e.stream_id == a)
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![1, 2], "outbox_parking: redriven, in order");
}
