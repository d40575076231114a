//! The saga index scales: resuming reads in proportion to the unfinished sagas, not to every saga
//! ever run, and concurrent starts never conflict on a shared stream.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use eventflow_core::{
    AppendRequest, AppendResult, EventBus, EventStore, InMemoryBus, InMemoryEventStore,
    InMemorySnapshotStore, Metadata, RecordedEvent, SnapshotStore, StreamId,
};
use eventflow_saga::{
    Backoff, COMPACT_EVERY, INDEX_SHARDS, Orchestrator, SagaIndex, SagaOutcome, shard_of,
};
use support::{PlaceOrder, place_order};

/// A store that counts what goes through it.
#[derive(Default)]
struct CountingStore {
    inner: InMemoryEventStore,
    reads: AtomicU64,
    events_read: AtomicU64,
    conflicts: AtomicU64,
}

#[async_trait]
impl EventStore for CountingStore {
    async fn append(&self, request: AppendRequest) -> eventflow_core::Result<AppendResult> {
        let result = self.inner.append(request).await;
        if matches!(result, Err(eventflow_core::Error::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> eventflow_core::Result<Vec<RecordedEvent>> {
        let events = self
            .inner
            .read_stream(stream, from_version, max_count)
            .await?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.events_read
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(events)
    }

    async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> eventflow_core::Result<Option<AppendResult>> {
        self.inner.find_idempotency_key(key).await
    }
}

impl CountingStore {
    fn reset_counts(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.events_read.store(0, Ordering::SeqCst);
    }
}

fn orchestrator(
    store: &Arc<CountingStore>,
    bus: &Arc<InMemoryBus>,
    snapshots: &Arc<InMemorySnapshotStore>,
) -> Orchestrator<PlaceOrder> {
    let definition = place_order(
        Duration::from_secs(3600),
        Backoff::new(3, Duration::from_millis(10), Duration::from_millis(100)),
    );
    Orchestrator::builder(
        definition,
        Arc::clone(store) as Arc<dyn EventStore>,
        Arc::clone(bus) as Arc<dyn EventBus>,
    )
    .index_snapshots(Arc::clone(snapshots) as Arc<dyn SnapshotStore>)
    .build()
    .expect("orchestrator")
}

/// 100,000 sagas that ran and ended, 10 still running: a new orchestrator's `resume` finds the 10
/// and reads a bounded number of events to do it (each shard's snapshot and its tail, and the 10
/// sagas' own streams), not 200,000 index entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reads_in_proportion_to_the_unfinished_sagas() {
    const FINISHED: u64 = 100_000;
    const RUNNING: u64 = 10;
    let store = Arc::new(CountingStore::default());
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let index = SagaIndex::new(
        Arc::clone(&store) as Arc<dyn EventStore>,
        "PlaceOrder",
        Arc::clone(&snapshots) as Arc<dyn SnapshotStore>,
    );
    for n in 0..FINISHED {
        let saga_id = format!("done-{n}");
        index.register(&saga_id).await.expect("register");
        index
            .settle(&saga_id, SagaOutcome::Completed, None)
            .await
            .expect("settle");
    }
    let bus = Arc::new(InMemoryBus::new());
    let first = orchestrator(&store, &bus, &snapshots);
    for n in 0..RUNNING {
        let order = PlaceOrder::new(&format!("running-{n}"), 1, 100);
        first
            .start(&order.order_id.clone(), &order, Metadata::new())
            .await
            .expect("start");
    }

    // A new process: same store and snapshot store, nothing in memory.
    let second = orchestrator(&store, &bus, &snapshots);
    store.reset_counts();
    let report = second.resume().await.expect("resume");
    assert_eq!(report.resumed as u64, RUNNING);
    let events_read = store.events_read.load(Ordering::SeqCst);
    let reads = store.reads.load(Ordering::SeqCst);
    // Per shard: the events after its last snapshot (fewer than COMPACT_EVERY, plus the running
    // sagas' registrations); per running saga: its two events.
    let bound = u64::from(INDEX_SHARDS) * COMPACT_EVERY + RUNNING * 3;
    eprintln!("resume read {events_read} events in {reads} reads (bound {bound})");
    assert!(
        events_read <= bound,
        "resume read {events_read} events, more than {bound}: it reads the index whole"
    );
    assert!(
        reads <= u64::from(INDEX_SHARDS) + RUNNING * 2,
        "{reads} reads"
    );
    let unfinished: BTreeSet<String> = second
        .query()
        .unfinished()
        .await
        .expect("unfinished")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = (0..RUNNING).map(|n| format!("running-{n}")).collect();
    assert_eq!(unfinished, expected);
}

/// Many sagas started at once: no append conflicts (the index is sharded and appended with
/// `Any`; each saga writes its own stream), every saga is registered, and the shards share the
/// load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_do_not_conflict() {
    const SAGAS: usize = 400;
    let store = Arc::new(CountingStore::default());
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let bus = Arc::new(InMemoryBus::new());
    let orchestrator = Arc::new(orchestrator(&store, &bus, &snapshots));
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (orchestrator, barrier) = (Arc::clone(&orchestrator), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                for n in (task..SAGAS).step_by(8) {
                    let order = PlaceOrder::new(&format!("order-{n}"), 1, 100);
                    orchestrator
                        .start(&order.order_id.clone(), &order, Metadata::new())
                        .await
                        .expect("start");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("starter");
    }
    assert_eq!(
        store.conflicts.load(Ordering::SeqCst),
        0,
        "no start conflicted on a shared stream"
    );
    let unfinished = orchestrator.query().unfinished().await.expect("unfinished");
    assert_eq!(unfinished.len(), SAGAS);
    let shards: BTreeSet<u32> = unfinished.iter().map(|id| shard_of(id)).collect();
    assert_eq!(shards.len() as u32, INDEX_SHARDS, "every shard took starts");
}
