//! The in-memory store against the store conformance suite, and its concurrency guarantees at scale.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "testkit")]

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use eventflow_core::testkit::{feed_conformance, store_conformance};
use eventflow_core::{
    AppendRequest, Error, EventStore, EventStoreExt, ExpectedVersion, GlobalFeed,
    InMemoryEventStore, Metadata, NewEvent, StoreLimits, StreamId,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_passes_the_conformance_suite() {
    let report = store_conformance("in-memory", || async { InMemoryEventStore::new() }).await;
    eprintln!("{report}");
    assert!(
        report.unsupported.is_empty(),
        "the in-memory store supports everything"
    );
    feed_conformance("in-memory", || async { InMemoryEventStore::new() }).await;
}

/// What DynamoDB would refuse, the in-memory store refuses too (by default), before writing.
#[tokio::test]
async fn in_memory_store_enforces_dynamodb_limits_by_default() {
    let store = InMemoryEventStore::new();
    let big = NewEvent::new(
        "Big",
        1,
        Bytes::from(
            vec![b'"'; 2]
                .into_iter()
                .chain(vec![b'x'; 410 * 1024])
                .collect::<Vec<_>>(),
        ),
        Metadata::new(),
    );
    let request = AppendRequest::new(
        StreamId::new("big-1"),
        ExpectedVersion::Any,
        vec![big.clone()],
    );
    let refused = store.append(request).await;
    assert!(
        matches!(refused, Err(Error::LimitExceeded { .. })),
        "a 410 KB event is refused: {refused:?}"
    );
    let many: Vec<_> = (0..101)
        .map(|_| NewEvent::new("E", 1, Bytes::from_static(b"{}"), Metadata::new()))
        .collect();
    let refused = store
        .append(AppendRequest::new(
            StreamId::new("many-1"),
            ExpectedVersion::Any,
            many.clone(),
        ))
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::LimitExceeded {
                actual: 101,
                max: 100,
                ..
            })
        ),
        "101 events in one append are refused: {refused:?}"
    );
    assert!(store.is_empty(), "nothing of a refused append is written");
    let unlimited = InMemoryEventStore::new().with_limits(StoreLimits::unlimited());
    unlimited
        .append(AppendRequest::new(
            StreamId::new("big-1"),
            ExpectedVersion::Any,
            vec![big],
        ))
        .await
        .unwrap();
    unlimited
        .append(AppendRequest::new(
            StreamId::new("many-1"),
            ExpectedVersion::Any,
            many,
        ))
        .await
        .unwrap();
    assert_eq!(unlimited.len(), 102);
}

/// 64 tasks race on one stream with `Exact` versions: every version 1..N exactly once, every loser
/// gets the typed conflict, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_on_one_stream() {
    const WRITERS: usize = 64;
    const APPENDS_EACH: usize = 10;
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("hot");
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, stream, barrier) = (store.clone(), stream.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let (mut written, mut conflicts) = (Vec::new(), 0);
                while written.len() < APPENDS_EACH {
                    let current = store.read_stream_to_end(&stream, 1).await.unwrap().len() as u64;
                    let event = NewEvent::new(
                        "Written",
                        1,
                        Bytes::from(format!("{{\"writer\":{writer}}}")),
                        Metadata::new(),
                    );
                    let id = event.event_id;
                    let request = AppendRequest::new(
                        stream.clone(),
                        ExpectedVersion::Exact(current),
                        vec![event],
                    );
                    match store.append(request).await {
                        Ok(result) => {
                            assert_eq!(result.first_version, current + 1);
                            written.push(id);
                        }
                        Err(Error::Conflict {
                            expected, actual, ..
                        }) => {
                            assert_eq!(expected, ExpectedVersion::Exact(current));
                            assert!(actual > current);
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                    tokio::task::yield_now().await;
                }
                (written, conflicts)
            })
        })
        .collect();
    let mut written = HashSet::new();
    let mut conflicts = 0;
    for task in tasks {
        let (ids, c) = task.await.unwrap();
        written.extend(ids);
        conflicts += c;
    }
    let events = store.read_stream_to_end(&stream, 1).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=(WRITERS * APPENDS_EACH) as u64).collect::<Vec<_>>()
    );
    let stored: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        stored, written,
        "exactly the acknowledged events are stored"
    );
    eprintln!(
        "{} appends, {conflicts} typed conflicts",
        WRITERS * APPENDS_EACH
    );
}

#[tokio::test]
async fn read_all_pages_through_the_global_feed() {
    let store = InMemoryEventStore::new();
    for i in 0..25u64 {
        let stream = StreamId::new(format!("s-{}", i % 3));
        let event = NewEvent::new("E", 1, Bytes::from_static(b"{}"), Metadata::new());
        store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .unwrap();
    }
    let page = store.read_all(11, 10).await.unwrap();
    let positions: Vec<u64> = page.iter().filter_map(|e| e.position).collect();
    assert_eq!(positions, (11..=20).collect::<Vec<_>>());
    assert_eq!(store.len(), 25);
    assert_eq!(store.head_position().await.unwrap(), 25);
}
