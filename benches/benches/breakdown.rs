//! Micro-benches that explain where an eventflow append or command spends its time: the pieces
//! of `Repository::execute` and `InMemoryEventStore::append`, each measured alone, plus the cost
//! of the `println!` cqrs-es's `MemStore` does twice per command (meaningful when stdout is
//! `/dev/null`, as in the documented run).
//!
//! `pipeline/*` rebuilds a command by hand from eventflow-core's public pieces, to show what the
//! repository adds on top of them.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Account, DEPOSIT, DEPOSITED, SPREAD, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use eventflow_core::{
    Aggregate as _, AppendRequest, CommandContext, Envelope, EventStore, Executed, ExpectedVersion,
    InMemoryEventStore, Metadata, NewEvent, RecordedEvent, Repository, StreamId, Upcasters,
};
use uuid::Uuid;

/// Events appended before a store is replaced (untimed), as in the append bench.
const RESET_EVERY: u64 = 100_000;

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// wyrand: what a thread-local user-space generator (uuid's `fast-rng`, `fastrand`) costs.
fn wyrand() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0xA076_1D64_78BD_642F);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xE703_7ED1_A0B4_28DB);
        (t as u64) ^ ((t >> 64) as u64)
    })
}

/// A v7 id from the wall clock and a user-space generator: no syscall.
fn v7_user_space_rng() -> Uuid {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let r = wyrand().to_le_bytes();
    let s = wyrand().to_le_bytes();
    let bytes = [r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], s[0], s[1]];
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

fn streams() -> Vec<StreamId> {
    (0..SPREAD)
        .map(|i| StreamId::for_aggregate("account", &i.to_string()))
        .collect()
}

/// Appends of pre-encoded events (encoding untimed), round robin over `streams`, through `call`.
async fn store_appends<F, Fut>(streams: &[StreamId], iters: u64, call: F) -> Duration
where
    F: Fn(Arc<InMemoryEventStore>, AppendRequest) -> Fut,
    Fut: Future<Output = u64>,
{
    let template = NewEvent::encode(&DEPOSITED, Metadata::new()).expect("encode");
    let mut store = Arc::new(InMemoryEventStore::new());
    let mut versions = vec![0_u64; streams.len()];
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = (iters - done).min(10_000);
        if done > 0 && done % RESET_EVERY == 0 {
            store = Arc::new(InMemoryEventStore::new());
            versions.iter_mut().for_each(|v| *v = 0);
        }
        let mut requests = Vec::with_capacity(chunk as usize);
        for i in done..done + chunk {
            let s = (i % streams.len() as u64) as usize;
            // Cheaper than encoding (no v7 id), so a profile of this bench shows the store.
            let event = template
                .clone()
                .with_event_id(Uuid::from_u128(u128::from(i)));
            versions[s] += 1;
            requests.push(AppendRequest::new(
                streams[s].clone(),
                ExpectedVersion::Exact(versions[s] - 1),
                vec![event],
            ));
        }
        let start = Instant::now();
        for request in requests {
            black_box(call(store.clone(), request).await);
        }
        elapsed += start.elapsed();
        done += chunk;
    }
    elapsed
}

/// One command rebuilt from the public pieces: read the tail, decode, handle, encode, append
/// through `&dyn EventStore`, apply. No tracing span, no cache bookkeeping, no envelopes.
async fn manual_command(
    store: &dyn EventStore,
    upcasters: &Upcasters,
    states: &mut [(u64, Account)],
    streams: &[StreamId],
    i: usize,
) {
    let (version, state) = &mut states[i];
    let tail = store
        .read_stream(&streams[i], *version + 1, 1_000)
        .await
        .expect("read");
    for recorded in &tail {
        state.apply(&upcasters.decode(recorded).expect("decode"));
        *version = recorded.version;
    }
    let events = state.handle(&DEPOSIT).expect("handle");
    let new_events = events
        .iter()
        .map(|e| NewEvent::encode(e, Metadata::new()))
        .collect::<Result<Vec<_>, _>>()
        .expect("encode");
    let result = store
        .append(AppendRequest::new(
            streams[i].clone(),
            ExpectedVersion::Exact(*version),
            new_events,
        ))
        .await
        .expect("append");
    for event in &events {
        state.apply(event);
    }
    *version = result.last_version;
}

fn breakdown(c: &mut Criterion) {
    eprintln!(
        "size_of: RecordedEvent {} B, NewEvent {} B, AppendRequest {} B, Metadata {} B, \
         Envelope<AccountEvent> {} B, Executed<AccountEvent> {} B",
        size_of::<RecordedEvent>(),
        size_of::<NewEvent>(),
        size_of::<AppendRequest>(),
        size_of::<Metadata>(),
        size_of::<Envelope<common::AccountEvent>>(),
        size_of::<Executed<common::AccountEvent>>(),
    );
    let rt = runtime();
    let spread = streams();
    let mut group = c.benchmark_group("breakdown");

    group.bench_function("uuid_now_v7", |b| b.iter(Uuid::now_v7));
    group.bench_function("uuid_v7_user_space_rng", |b| b.iter(v7_user_space_rng));
    group.bench_function("system_time_now", |b| b.iter(SystemTime::now));
    group.bench_function("serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&DEPOSITED)).expect("serialise"));
    });
    group.bench_function("new_event_encode", |b| {
        b.iter(|| NewEvent::encode(black_box(&DEPOSITED), Metadata::new()).expect("encode"));
    });
    group.bench_function("stream_id_for_aggregate", |b| {
        b.iter(|| StreamId::for_aggregate("account", black_box("1234")));
    });
    let hasher = RandomState::new();
    let stream = StreamId::for_aggregate("account", "1234");
    group.bench_function("siphash_stream_id", |b| {
        b.iter(|| hasher.hash_one(black_box(&stream)));
    });
    let recorded = rt.block_on(async {
        let store = InMemoryEventStore::new();
        let event = NewEvent::encode(&DEPOSITED, Metadata::new()).expect("encode");
        store
            .append(AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .expect("append");
        store
            .read_stream(&stream, 1, 1)
            .await
            .expect("read")
            .remove(0)
    });
    group.bench_function("recorded_event_clone", |b| {
        b.iter(|| black_box(&recorded).clone());
    });
    group.bench_function("serde_json_from_slice", |b| {
        b.iter(|| {
            serde_json::from_slice::<common::AccountEvent>(black_box(&recorded.payload))
                .expect("decode")
        });
    });
    let upcasters = Upcasters::new();
    group.bench_function("upcasters_decode_empty_registry", |b| {
        b.iter(|| {
            upcasters
                .decode::<common::AccountEvent>(black_box(&recorded))
                .expect("decode")
        });
    });
    group.bench_function("stdout_println_cqrs_es_line", |b| {
        // The line cqrs-es's MemStore prints on every load (and a similar one on every commit).
        b.iter(|| {
            writeln!(
                std::io::stdout(),
                "loading: {} events for aggregate ID '{}'",
                black_box(5),
                black_box("1234")
            )
            .expect("stdout")
        });
    });

    // The store alone, events encoded beforehand.
    group.bench_function("store_append_pre_encoded/via_arc_dyn", |b| {
        // How Repository calls it: `Arc<dyn EventStore>::append` goes through the blanket
        // `impl EventStore for Arc<S>`, boxing a second future.
        b.to_async(&rt).iter_custom(|iters| {
            store_appends(&spread, iters, |store, request| async move {
                let store: Arc<dyn EventStore> = store;
                store.append(request).await.expect("append").last_version
            })
        });
    });
    group.bench_function("store_append_pre_encoded/via_dyn_ref", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            store_appends(&spread, iters, |store, request| async move {
                let store: Arc<dyn EventStore> = store;
                (*store).append(request).await.expect("append").last_version
            })
        });
    });

    // Reading the (empty) tail after a cached version, and a 5-event stream.
    let reads = rt.block_on(async {
        let store = InMemoryEventStore::new();
        for s in &spread {
            let events = (0..5)
                .map(|_| NewEvent::encode(&DEPOSITED, Metadata::new()).expect("encode"))
                .collect();
            store
                .append(AppendRequest::new(
                    s.clone(),
                    ExpectedVersion::NoStream,
                    events,
                ))
                .await
                .expect("append");
        }
        store
    });
    let mut k = 0_usize;
    group.bench_function("store_read_stream/empty_tail", |b| {
        b.to_async(&rt).iter(|| {
            k = (k + 1) % SPREAD;
            reads.read_stream(&spread[k], 6, 1_000)
        });
    });
    group.bench_function("store_read_stream/5_events", |b| {
        b.to_async(&rt).iter(|| {
            k = (k + 1) % SPREAD;
            reads.read_stream(&spread[k], 1, 1_000)
        });
    });

    // A whole command, by hand vs through the repository with its cache, same spread.
    group.bench_function("pipeline/manual_command_spread_10k", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let spread = &spread;
            async move {
                let upcasters = Upcasters::new();
                let mut store = InMemoryEventStore::new();
                let mut states = vec![(0_u64, Account::default()); SPREAD];
                let mut elapsed = Duration::ZERO;
                let mut start = Instant::now();
                for i in 0..iters {
                    if i > 0 && i % RESET_EVERY == 0 {
                        elapsed += start.elapsed();
                        store = InMemoryEventStore::new();
                        states.iter_mut().for_each(|s| *s = (0, Account::default()));
                        start = Instant::now();
                    }
                    let s = (i % SPREAD as u64) as usize;
                    manual_command(&store, &upcasters, &mut states, spread, s).await;
                }
                elapsed + start.elapsed()
            }
        });
    });
    let ids = common::ids(SPREAD);
    group.bench_function("pipeline/repository_cache_spread_10k", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let ids = &ids;
            async move {
                let new = || {
                    Repository::<Account>::new(Arc::new(InMemoryEventStore::new()))
                        .with_cache(16_384)
                };
                let mut repository = new();
                let mut elapsed = Duration::ZERO;
                let mut start = Instant::now();
                for i in 0..iters {
                    if i > 0 && i % RESET_EVERY == 0 {
                        elapsed += start.elapsed();
                        repository = new();
                        start = Instant::now();
                    }
                    let id = &ids[(i % SPREAD as u64) as usize];
                    black_box(
                        repository
                            .execute(id, &DEPOSIT, CommandContext::new())
                            .await
                            .expect("command"),
                    );
                }
                elapsed + start.elapsed()
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = breakdown
}
criterion_main!(benches);
