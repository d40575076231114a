//! Rehydrating (loading) one aggregate whose stream holds 10,000 events, in the same run:
//! - `eventflow/no_snapshot`: `Repository::load`, replaying all 10,000 events;
//! - `eventflow/snapshot_at_9900`: `Repository::load` from a snapshot at version 9,900, then the
//!   100 later events;
//! - `cqrs_es/mem_store`: cqrs-es 0.5.0 `MemStore::load_aggregate` of the same aggregate (it keeps
//!   typed events, so it clones rather than deserialises);
//! - `raw_decode_loop`: the physical limit of a JSON store in memory: lock a `Mutex<Vec<Vec<u8>>>`
//!   and `serde_json::from_slice` + apply each of the 10,000 payloads.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    Account, CqrsAccount, DEPOSITED, Quiet, cqrs_envelopes, new_events, runtime, seeded_mem_store,
    seeded_snapshots, seeded_store,
};
use cqrs_es::EventStore as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::{Aggregate as _, Repository, SnapshotPolicy};

const ID: &str = "big";
const EVENTS: usize = 10_000;
const SNAPSHOT_AT: u64 = 9_900;

fn rehydrate(c: &mut Criterion) {
    let rt = runtime();
    let seed = new_events(EVENTS);
    let (plain, snapshotted) = rt.block_on(async {
        let store = seeded_store(ID, &seed).await;
        let plain = Repository::<Account>::new(store.clone());
        let snapshots = seeded_snapshots(ID, SNAPSHOT_AT).await;
        let snapshotted =
            Repository::<Account>::new(store).with_snapshots(snapshots, SnapshotPolicy::every(100));
        (plain, snapshotted)
    });
    let mem_store = seeded_mem_store(ID, &cqrs_envelopes(ID, EVENTS));
    let raw: Mutex<Vec<Vec<u8>>> = Mutex::new(
        (0..EVENTS)
            .map(|_| serde_json::to_vec(&DEPOSITED).expect("serialise"))
            .collect(),
    );

    // The figures must describe the same state.
    rt.block_on(async {
        let a = plain.load(ID).await.expect("load");
        let b = snapshotted.load(ID).await.expect("load");
        assert_eq!((a.version, &a.state), (b.version, &b.state));
        assert_eq!(a.state.deposits, EVENTS as u64);
    });

    let mut group = c.benchmark_group("rehydrate");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("raw_decode_loop", |b| {
        b.iter(|| {
            let log = raw.lock().unwrap_or_else(|e| e.into_inner());
            let mut state = Account::default();
            for bytes in log.iter() {
                let event = serde_json::from_slice(bytes).expect("decode");
                state.apply(&event);
            }
            black_box(state)
        });
    });
    group.bench_function("cqrs_es/mem_store", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mem_store = &mem_store;
            async move {
                let _quiet = Quiet::stdout();
                let start = Instant::now();
                for _ in 0..iters {
                    let context = mem_store.load_aggregate(black_box(ID)).await.expect("load");
                    black_box::<CqrsAccount>(context.aggregate);
                }
                start.elapsed()
            }
        });
    });
    group.bench_function("eventflow/no_snapshot", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(plain.load(black_box(ID)).await.expect("load")) });
    });
    group.bench_function("eventflow/snapshot_at_9900", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(snapshotted.load(black_box(ID)).await.expect("load")) });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = rehydrate
}
criterion_main!(benches);
