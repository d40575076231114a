//! DynamoDB-specific guarantees, on moto_server (or `EVENTFLOW_MOTO_ENDPOINT`): concurrency,
//! limits refused before any call, streams over DynamoDB's 1 MB page, the outbox across a crash,
//! snapshots, and error mapping.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use bytes::Bytes;
use eventflow_core::bus::{BusCapabilities, Message};
use eventflow_core::documents::{Collection, DocumentStore, ExpectedDocument};
use eventflow_core::outbox::message_to_event;
use eventflow_core::{
    AppendRequest, CheckpointStore, Error, EventBus, EventStore, EventStoreExt, ExpectedVersion,
    MessageHandler, Metadata, NewEvent, Outbox, OutboxRelay, Snapshot, SnapshotStore, StreamId,
    Subscription, SubscriptionHandle,
};
use eventflow_store_dynamodb::limits::{self, names};
use eventflow_store_dynamodb::{DynamoDbConfig, DynamoDbError, DynamoDbEventStore, testkit};

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "Tested",
        1,
        Bytes::from(format!("{{\"n\":{n}}}")),
        Metadata::new().with_correlation_id(format!("c-{n}")),
    )
}

fn events(count: u64) -> Vec<NewEvent> {
    (0..count).map(event).collect()
}

/// An event whose JSON payload is about `bytes` long.
fn big_event(n: u64, bytes: usize) -> NewEvent {
    let filler = "x".repeat(bytes);
    NewEvent::new(
        "Big",
        1,
        Bytes::from(format!("{{\"n\":{n},\"filler\":\"{filler}\"}}")),
        Metadata::new(),
    )
}

fn stream(name: &str) -> StreamId {
    StreamId::new(format!("{name}-{}", uuid::Uuid::new_v4().simple()))
}

/// Counts the SDK operations a client starts.
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A fresh store whose client counts its calls.
async fn counted_store(config: DynamoDbConfig) -> Option<(DynamoDbEventStore, CallCounter)> {
    let store = testkit::fresh_store_with(config).await?;
    let counter = CallCounter::default();
    let sdk = store
        .client()
        .config()
        .to_builder()
        .interceptor(counter.clone())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(sdk);
    Some((
        DynamoDbEventStore::new(client, store.config().clone()),
        counter,
    ))
}

fn limit_of(result: eventflow_core::Result<impl std::fmt::Debug>) -> (&'static str, u64, u64) {
    match result {
        Err(Error::LimitExceeded { limit, actual, max }) => (limit, actual, max),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

/// 32 writers race on one stream with `Exact` versions: every version exactly once, no gap, every
/// loser gets the typed conflict with a newer actual version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_writers_on_one_stream() {
    const WRITERS: u64 = 32;
    const APPENDS_EACH: u64 = 3;
    let Some(store) = testkit::fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let s = stream("hot");
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let (mut written, mut conflicts) = (Vec::new(), 0u64);
                while (written.len() as u64) < APPENDS_EACH {
                    let current = store.stream_version(&s).await.unwrap();
                    let e = event(writer * 100 + written.len() as u64);
                    let id = e.event_id;
                    let request =
                        AppendRequest::new(s.clone(), ExpectedVersion::Exact(current), vec![e]);
                    match store.append(request).await {
                        Ok(result) => {
                            assert_eq!(result.first_version, current + 1);
                            written.push(id);
                        }
                        Err(Error::Conflict {
                            stream,
                            expected,
                            actual,
                        }) => {
                            assert_eq!(stream, s);
                            assert_eq!(expected, ExpectedVersion::Exact(current));
                            assert!(actual > current, "actual {actual} <= {current}");
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error: {other:?}"),
                    }
                }
                (written, conflicts)
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    let mut conflicts = 0;
    for task in tasks {
        let (ids, c) = task.await.unwrap();
        acknowledged.extend(ids);
        conflicts += c;
    }
    let stored = store.read_stream_to_end(&s, 1).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=WRITERS * APPENDS_EACH).collect::<Vec<_>>());
    let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len() as u64, WRITERS * APPENDS_EACH, "no duplicate");
    assert_eq!(
        ids, acknowledged,
        "exactly the acknowledged events are stored"
    );
    assert!(conflicts > 0, "32 racing writers must have conflicted");
    eprintln!(
        "{} appends by {WRITERS} writers, {conflicts} typed conflicts",
        WRITERS * APPENDS_EACH
    );
}

/// `Any` appends never fail with a conflict while retries remain: each lost race means another
/// writer took a version, so 32 attempts cover 32 appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_any_appends_all_succeed() {
    let config = testkit::unique_config().with_any_attempts(32);
    let Some(store) = testkit::fresh_store_with(config).await else {
        return;
    };
    let store = Arc::new(store);
    let s = stream("any");
    let tasks: Vec<_> = (0..8)
        .map(|writer| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move {
                for i in 0..4 {
                    let request = AppendRequest::new(
                        s.clone(),
                        ExpectedVersion::Any,
                        vec![event(writer * 10 + i)],
                    );
                    store.append(request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let versions: Vec<u64> = store
        .read_stream_to_end(&s, 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=32).collect::<Vec<_>>());
}

/// 100 items in one transaction succeed; 101 are refused with the typed error before any call,
/// whatever makes up the count (events, condition check, outbox entries, idempotency key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_items_succeed_and_a_hundred_and_one_fail_before_any_call() {
    let Some((store, counter)) = counted_store(testkit::unique_config()).await else {
        return;
    };
    let s = stream("limits");

    // 100 events, no condition check: 100 items, one TransactWriteItems.
    let before = counter.calls();
    let result = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            events(100),
        ))
        .await
        .unwrap();
    assert_eq!((result.first_version, result.last_version), (1, 100));
    assert_eq!(counter.calls() - before, 1, "one call for one append");

    let refused: [(AppendRequest, u64); 4] = [
        (
            AppendRequest::new(s.clone(), ExpectedVersion::NoStream, events(101)),
            101,
        ),
        // 100 events + the check that version 100 exists.
        (
            AppendRequest::new(s.clone(), ExpectedVersion::Exact(100), events(100)),
            101,
        ),
        // 50 events + 50 outbox entries + the key: 101, also with Any (no head read first).
        (
            AppendRequest::new(s.clone(), ExpectedVersion::Any, events(50))
                .with_outbox(true)
                .with_idempotency_key("k"),
            101,
        ),
        (
            AppendRequest::new(s.clone(), ExpectedVersion::Any, events(101)),
            101,
        ),
    ];
    for (request, items) in refused {
        let before = counter.calls();
        let (limit, actual, max) = limit_of(store.append(request).await);
        assert_eq!(limit, names::TRANSACTION_ITEMS);
        assert_eq!((actual, max), (items, limits::MAX_TRANSACTION_ITEMS));
        assert_eq!(counter.calls(), before, "refused before any call");
    }

    // 99 events + the check of version 100: exactly 100 items.
    store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(100),
            events(99),
        ))
        .await
        .unwrap();
    // 49 events + 49 outbox entries + key + check: 100 items.
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(199), events(49))
        .with_outbox(true)
        .with_idempotency_key(format!("key-{s}"));
    let result = store.append(request).await.unwrap();
    assert_eq!(result.last_version, 248);
    assert_eq!(store.pending(1000).await.unwrap().len(), 49);
    let all = store.read_stream_to_end(&s, 1).await.unwrap();
    assert_eq!(all.len(), 248);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64 + 1)
    );
}

/// An item over 400 KB, or a transaction over 4 MB, is refused with the typed error before any
/// call; an item just under the limit is stored and read back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_items_and_transactions_are_refused_before_any_call() {
    let Some((store, counter)) = counted_store(testkit::unique_config()).await else {
        return;
    };
    let s = stream("big");
    let before = counter.calls();
    let too_big = AppendRequest::new(
        s.clone(),
        ExpectedVersion::NoStream,
        vec![big_event(1, 400 * 1024)],
    );
    let (limit, actual, max) = limit_of(store.append(too_big).await);
    assert_eq!(limit, names::ITEM_BYTES);
    assert!(actual > max);
    assert_eq!(max, limits::MAX_ITEM_BYTES);
    let twelve = (0..12).map(|n| big_event(n, 350 * 1024)).collect();
    let (limit, _, max) = limit_of(
        store
            .append(AppendRequest::new(
                s.clone(),
                ExpectedVersion::NoStream,
                twelve,
            ))
            .await,
    );
    assert_eq!(
        (limit, max),
        (names::TRANSACTION_BYTES, limits::MAX_TRANSACTION_BYTES)
    );
    assert_eq!(counter.calls(), before, "refused before any call");
    assert_eq!(
        store.stream_version(&s).await.unwrap(),
        0,
        "nothing written"
    );

    // moto refuses items over 405,000 bytes (AWS: 409,600), so "near" means near moto's limit.
    let near_limit = big_event(1, 405_000 - 300);
    let payload = near_limit.payload.clone();
    store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![near_limit],
        ))
        .await
        .unwrap();
    let read = store.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, payload);
}

/// A stream of ~8 MB is read whole: the reader follows `LastEvaluatedKey` past DynamoDB's 1 MB
/// page, and the next append at the real end version succeeds (the bug that makes dynamo-es
/// report every later append as a conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_stream_much_larger_than_one_megabyte() {
    const PER_APPEND: u64 = 8;
    const APPENDS: u64 = 3;
    const BYTES: usize = 350 * 1024;
    // Outbox entries of 350 KB events: a bus that carries them (Pub/Sub) is assumed.
    let config = testkit::unique_config().with_max_outbox_payload_bytes(None);
    let Some((store, counter)) = counted_store(config).await else {
        return;
    };
    let s = stream("large");
    for append in 0..APPENDS {
        let batch = (0..PER_APPEND)
            .map(|i| big_event(append * PER_APPEND + i, BYTES))
            .collect();
        let expected = ExpectedVersion::Exact(append * PER_APPEND);
        store
            .append(AppendRequest::new(s.clone(), expected, batch).with_outbox(true))
            .await
            .unwrap();
    }
    let total = PER_APPEND * APPENDS;
    let before = counter.calls();
    let read = store.read_stream(&s, 1, 1_000).await.unwrap();
    let pages = counter.calls() - before;
    assert_eq!(read.len() as u64, total, "every event read");
    assert!(
        read.iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64 + 1)
    );
    let size: usize = read.iter().map(|e| e.payload.len()).sum();
    assert!(size > 8 * 1024 * 1024, "stream is {size} bytes");
    assert!(pages >= 8, "read {size} bytes in {pages} Query pages");
    eprintln!("read {total} events, {size} bytes, in {pages} Query pages");
    for (i, e) in read.iter().enumerate() {
        let json: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(json["n"], i as u64);
    }
    store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(total),
            events(1),
        ))
        .await
        .unwrap();
    // The outbox relays big events too (BatchGetItem pages through its own size limit).
    let pending = store.pending(100).await.unwrap();
    assert_eq!(pending.len() as u64, total);
    assert!(pending.windows(2).all(|w| w[0].version < w[1].version));
}

/// A bus that records what is published.
#[derive(Default)]
struct RecordingBus {
    published: Mutex<Vec<Message>>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, messages: Vec<Message>) -> eventflow_core::Result<()> {
        self.published.lock().unwrap().extend(messages);
        Ok(())
    }

    async fn subscribe(
        &self,
        _subscription: Subscription,
        _handler: Arc<dyn MessageHandler>,
    ) -> eventflow_core::Result<SubscriptionHandle> {
        Err(Error::Unsupported {
            backend: "recording bus",
            operation: "subscribe",
        })
    }

    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::new(true, false)
    }
}

/// A crash after the append and before the relay, and a crash after publishing and before marking,
/// lose no outbox entry: a new process relays everything, in per-stream order, at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_append_and_relay_loses_no_outbox_entry() {
    let config = testkit::unique_config().with_outbox_shards(4);
    let Some(writer) = testkit::fresh_store_with(config.clone()).await else {
        return;
    };
    let streams: Vec<StreamId> = (0..6).map(|i| stream(&format!("crash-{i}"))).collect();
    let mut appended = BTreeMap::new();
    for round in 0..4u64 {
        for s in &streams {
            let request =
                AppendRequest::new(s.clone(), ExpectedVersion::Exact(round * 2), events(2))
                    .with_outbox(true);
            let result = writer.append(request).await.unwrap();
            appended.insert((s.clone(), result.last_version), ());
        }
    }
    let total = streams.len() * 8;
    // Crash 1: the process that appended dies before relaying anything.
    drop(writer);

    // Crash 2: a relay publishes a batch and dies before marking it published.
    let endpoint = testkit::shared_endpoint().unwrap();
    let relay_store = DynamoDbEventStore::new(testkit::local_client(endpoint), config.clone());
    let first_batch = relay_store.pending(5).await.unwrap();
    assert_eq!(first_batch.len(), 5);
    let lost_bus = RecordingBus::default();
    lost_bus
        .publish(
            first_batch
                .iter()
                .map(|e| eventflow_core::outbox::event_to_message(e, "orders").unwrap())
                .collect(),
        )
        .await
        .unwrap();
    drop(relay_store);

    // A new process relays everything that is pending.
    let store = Arc::new(DynamoDbEventStore::new(
        testkit::local_client(endpoint),
        config,
    ));
    let bus = Arc::new(RecordingBus::default());
    let relay = OutboxRelay::new(store.clone(), bus.clone(), "orders").with_batch_size(7);
    let relayed = relay.relay_pending().await.unwrap();
    assert_eq!(
        relayed, total,
        "every entry relayed, the unmarked batch again"
    );
    assert!(
        store.pending(100).await.unwrap().is_empty(),
        "outbox drained"
    );

    let published = bus.published.lock().unwrap().clone();
    let mut per_stream: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    for message in &published {
        let event = message_to_event(message).unwrap();
        per_stream
            .entry(event.stream_id)
            .or_default()
            .push(event.version);
    }
    assert_eq!(per_stream.len(), streams.len());
    for (s, versions) in &per_stream {
        assert_eq!(
            versions,
            &(1..=8).collect::<Vec<_>>(),
            "stream {s} in order, complete"
        );
    }
    let ids: HashSet<_> = published.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), total, "one message per event (ids = event ids)");
    assert!(
        first_batch
            .iter()
            .all(|e| ids.contains(&e.event_id.to_string())),
        "the batch published before the crash is published again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_never_move_backwards() {
    let Some(store) = testkit::fresh_store().await else {
        return;
    };
    let snapshots = store.snapshot_store();
    let s = stream("snap");
    assert!(snapshots.load(&s).await.unwrap().is_none());
    let state = |v: u64| Bytes::from(format!("{{\"total\":{v}}}"));
    let five = Snapshot::new(s.clone(), 5, 1, state(5));
    snapshots.save(five.clone()).await.unwrap();
    assert_eq!(snapshots.load(&s).await.unwrap(), Some(five.clone()));
    snapshots
        .save(Snapshot::new(s.clone(), 3, 1, state(3)))
        .await
        .unwrap();
    assert_eq!(
        snapshots.load(&s).await.unwrap(),
        Some(five),
        "an older snapshot is ignored"
    );
    let eight = Snapshot::new(s.clone(), 8, 2, state(8));
    snapshots.save(eight.clone()).await.unwrap();
    assert_eq!(snapshots.load(&s).await.unwrap(), Some(eight));
    let huge = Snapshot::new(s.clone(), 9, 1, Bytes::from(vec![b'1'; 401 * 1024]));
    let (limit, _, _) = limit_of(snapshots.save(huge).await);
    assert_eq!(limit, names::ITEM_BYTES);
}

/// Checkpoints: saved per projection and key, never moved backwards by a slower instance,
/// forgotten by `reset` for that projection only, and an empty name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_move_forward_and_reset_per_projection() {
    let Some(store) = testkit::fresh_store().await else {
        return;
    };
    let checkpoints = store.checkpoint_store();
    assert_eq!(checkpoints.load("views", "order-1").await.unwrap(), None);
    checkpoints.save("views", "order-1", 3).await.unwrap();
    checkpoints.save("views", "order-1", 2).await.unwrap();
    assert_eq!(
        checkpoints.load("views", "order-1").await.unwrap(),
        Some(3),
        "an older checkpoint is ignored"
    );
    checkpoints.save("views", "order-1", 5).await.unwrap();
    checkpoints.save("views", "order-2", 1).await.unwrap();
    checkpoints.save("prices", "order-1", 7).await.unwrap();
    assert_eq!(checkpoints.load("views", "order-1").await.unwrap(), Some(5));
    checkpoints.reset("views").await.unwrap();
    assert_eq!(checkpoints.load("views", "order-1").await.unwrap(), None);
    assert_eq!(checkpoints.load("views", "order-2").await.unwrap(), None);
    assert_eq!(
        checkpoints.load("prices", "order-1").await.unwrap(),
        Some(7),
        "another projection keeps its progress"
    );
    assert!(matches!(
        checkpoints.save("", "order-1", 1).await,
        Err(Error::InvalidRequest(_))
    ));
}

/// Documents (beyond the conformance suite): an oversized one is refused with DynamoDB's item
/// limit before any call, and instances of a projection racing on one document through
/// `Collection::update` (conditional writes on its version) lose none of each other's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_refuse_oversized_items_and_keep_racing_updates() {
    let Some((store, counter)) = counted_store(testkit::unique_config()).await else {
        return;
    };
    let documents = store.documents();
    let before = counter.calls();
    let huge = format!("\"{}\"", "x".repeat(401 * 1024));
    let refused = documents
        .put("prices", "p-2", huge, ExpectedDocument::Any)
        .await;
    let (limit, _, max) = limit_of(refused);
    assert_eq!((limit, max), (names::ITEM_BYTES, limits::MAX_ITEM_BYTES));
    assert_eq!(counter.calls(), before, "refused before any call");

    let store: Arc<dyn DocumentStore> = Arc::new(documents);
    let counters: Collection<u32> = Collection::new(store, "counters");
    counters.put("c", 0u32).await.unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    counters.update("c", |n| *n += 1).await.unwrap();
                }
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    assert_eq!(counters.get_versioned("c").await.unwrap(), Some((20, 21)));
}

/// Missing tables are backend errors whose source names the operation and keeps the SDK error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_a_backend_error_with_its_source() {
    let Some(endpoint) = testkit::shared_endpoint() else {
        return;
    };
    let store = DynamoDbEventStore::new(testkit::local_client(endpoint), testkit::unique_config());
    let error = store.read_stream(&stream("none"), 1, 10).await.unwrap_err();
    let Error::Backend { backend, source } = &error else {
        panic!("expected a backend error, got {error:?}");
    };
    assert_eq!(*backend, "dynamodb");
    let dynamo = source.downcast_ref::<DynamoDbError>().unwrap();
    assert_eq!(dynamo.operation(), "Query");
    assert!(dynamo.to_string().contains("ResourceNotFound"), "{dynamo}");
}

/// An endpoint that does not answer is transient (after the SDK's own retries).
#[tokio::test]
async fn unreachable_endpoint_is_transient() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let store = DynamoDbEventStore::new(
        testkit::local_client("http://127.0.0.1:1"),
        testkit::unique_config(),
    );
    let error = store.read_stream(&stream("x"), 1, 1).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transient {
                backend: "dynamodb",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let error = store
        .append(AppendRequest::new(
            stream("x"),
            ExpectedVersion::NoStream,
            events(1),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transient { .. }), "{error:?}");
}

#[tokio::test]
async fn empty_stream_ids_are_refused_before_any_call() {
    let store = DynamoDbEventStore::new(
        testkit::local_client("http://127.0.0.1:1"),
        testkit::unique_config(),
    );
    let error = store
        .append(AppendRequest::new(
            StreamId::new(""),
            ExpectedVersion::Any,
            events(1),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    let error = store
        .append(AppendRequest::new(
            stream("max"),
            ExpectedVersion::Exact(u64::MAX),
            events(1),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
}

/// An outbox entry whose event item is gone, or does not decode, is parked with the reason
/// instead of stalling `pending` (which would return nothing, or fail, every round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_entries_whose_event_cannot_be_read_are_parked_not_stalling() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use eventflow_core::ParkedEntries;
    let Some(store) = testkit::fresh_store().await else {
        return;
    };
    let (gone, garbled, fine) = (stream("gone"), stream("garbled"), stream("fine"));
    for s in [&gone, &garbled, &fine] {
        let request =
            AppendRequest::new(s.clone(), ExpectedVersion::NoStream, events(1)).with_outbox(true);
        store.append(request).await.unwrap();
    }
    let table = store.config().events_table().to_owned();
    let key = |s: &StreamId| {
        std::collections::HashMap::from([
            (
                "stream_id".to_owned(),
                AttributeValue::S(s.as_str().to_owned()),
            ),
            ("version".to_owned(), AttributeValue::N("1".to_owned())),
        ])
    };
    store
        .client()
        .delete_item()
        .table_name(&table)
        .set_key(Some(key(&gone)))
        .send()
        .await
        .unwrap();
    store
        .client()
        .update_item()
        .table_name(&table)
        .set_key(Some(key(&garbled)))
        .update_expression("SET event_id = :n")
        .expression_attribute_values(":n", AttributeValue::N("7".to_owned()))
        .send()
        .await
        .unwrap();

    let pending = store.pending(10).await.expect("pending does not fail");
    assert_eq!(
        pending
            .iter()
            .map(|e| e.stream_id.clone())
            .collect::<Vec<_>>(),
        vec![fine.clone()]
    );
    let parked = store.parked(10).await.unwrap();
    let mut reasons: Vec<(StreamId, String)> = parked
        .iter()
        .map(|p| (p.event.stream_id.clone(), p.reason.clone()))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, garbled);
    assert!(reasons[0].1.contains("does not decode"), "{reasons:?}");
    assert_eq!(reasons[1].0, gone);
    assert!(reasons[1].1.contains("does not exist"), "{reasons:?}");
    // The next round sees only what can go.
    let again = store.pending(10).await.unwrap();
    assert_eq!(again.len(), 1);
}
