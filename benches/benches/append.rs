//! Append throughput of `InMemoryEventStore`, against the raw loop (serialise the event, push the
//! bytes into a `Mutex<Vec<_>>`) measured in the same run.
//!
//! Every eventflow figure includes encoding the event (`NewEvent::encode`: serde_json, a v7 id),
//! the append's metadata (one, shared by its events, as the repository writes them), building the
//! `AppendRequest` and awaiting the store's `append`, just as the raw loop includes
//! `serde_json::to_vec`. Stores (and the raw `Vec`) are replaced, untimed, every
//! [`RESET_EVERY`] events so memory stays flat; a spread stream holds at most 10 events.
//!
//! The peer, cqrs-es 0.5.0, appends through `EventStore::commit` of its `MemStore` (spread and
//! batches only: its commit copies the whole stream, so a hot stream is O(n) per append; see the
//! `hot_aggregate` bench). Its `MemStore` prints a line per commit, which the bench sends to
//! `/dev/null` itself while it times cqrs-es (`common::Quiet`).
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{CqrsAccount, DEPOSITED, Quiet, RawLog, SPREAD, ids, new_events, runtime};
use cqrs_es::EventStore as _;
use cqrs_es::mem_store::{MemStore, MemStoreAggregateContext};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::{AppendRequest, EventStore, ExpectedVersion, InMemoryEventStore, StreamId};

/// Events written before the store is replaced (untimed).
const RESET_EVERY: u64 = 100_000;

fn streams() -> Vec<StreamId> {
    (0..SPREAD)
        .map(|i| StreamId::for_aggregate("account", &i.to_string()))
        .collect()
}

/// `iters` appends of `batch` events, round robin over `streams`, `Exact` the known version.
async fn eventflow_appends(streams: &[StreamId], batch: usize, iters: u64) -> Duration {
    let mut store = InMemoryEventStore::new();
    let mut versions = vec![0_u64; streams.len()];
    let mut written = 0_u64;
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if written >= RESET_EVERY {
            elapsed += start.elapsed();
            drop(std::mem::take(&mut store));
            versions.iter_mut().for_each(|v| *v = 0);
            written = 0;
            start = Instant::now();
        }
        let s = (i % streams.len() as u64) as usize;
        let events = new_events(batch);
        let request = AppendRequest::new(
            streams[s].clone(),
            ExpectedVersion::Exact(versions[s]),
            events,
        );
        let result = store.append(request).await.expect("append");
        versions[s] = result.last_version;
        written += batch as u64;
    }
    elapsed + start.elapsed()
}

/// cqrs-es: `iters` commits of `batch` events, round robin over `ids`, at the known sequence.
async fn cqrs_appends(ids: &[String], batch: usize, iters: u64) -> Duration {
    let _quiet = Quiet::stdout();
    let mut store = MemStore::<CqrsAccount>::default();
    let mut sequences = vec![0_usize; ids.len()];
    let mut written = 0_u64;
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if written >= RESET_EVERY {
            elapsed += start.elapsed();
            store = MemStore::default();
            sequences.iter_mut().for_each(|v| *v = 0);
            written = 0;
            start = Instant::now();
        }
        let s = (i % ids.len() as u64) as usize;
        let context = MemStoreAggregateContext {
            aggregate_id: ids[s].clone(),
            aggregate: CqrsAccount::default(),
            current_sequence: sequences[s],
        };
        let events = vec![black_box(DEPOSITED); batch];
        let committed = store
            .commit(events, context, Default::default())
            .await
            .expect("commit");
        sequences[s] += committed.len();
        written += batch as u64;
    }
    elapsed + start.elapsed()
}

fn raw_appends(batch: usize, iters: u64) -> Duration {
    let mut log = RawLog::default();
    let events = vec![DEPOSITED; batch];
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for _ in 0..iters {
        if log.len() as u64 >= RESET_EVERY {
            elapsed += start.elapsed();
            drop(std::mem::take(&mut log));
            start = Instant::now();
        }
        if batch == 1 {
            log.push(&DEPOSITED);
        } else {
            log.push_batch(&events);
        }
    }
    elapsed + start.elapsed()
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let spread = streams();
    let cqrs_ids = ids(SPREAD);
    let hot = vec![StreamId::for_aggregate("account", "hot")];
    let mut group = c.benchmark_group("append");

    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_mutex_vec/1", |b| {
        b.iter_custom(|iters| raw_appends(1, iters));
    });
    group.bench_function("eventflow/spread_10k_streams", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_appends(&spread, 1, iters));
    });
    group.bench_function("cqrs_es/commit_spread_10k_streams", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| cqrs_appends(&cqrs_ids, 1, iters));
    });
    group.bench_function("eventflow/hot_stream", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_appends(&hot, 1, iters));
    });

    group.throughput(Throughput::Elements(10));
    group.bench_function("raw_mutex_vec/10", |b| {
        b.iter_custom(|iters| raw_appends(10, iters));
    });
    group.bench_function("eventflow/batch_10_spread_10k_streams", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_appends(&spread, 10, iters));
    });
    group.bench_function("cqrs_es/commit_batch_10_spread_10k_streams", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| cqrs_appends(&cqrs_ids, 10, iters));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = append
}
criterion_main!(benches);
