//! One command on ONE aggregate that already holds `N` events, for `N` in 100, 1,000, 10,000:
//! eventflow plain (full replay), with snapshots every 100 events (no cache), with the aggregate
//! cache (no snapshots), and cqrs-es 0.5.0 `CqrsFramework` + `MemStore` (full replay), all in
//! the same run, with the raw loop (serialise the event, push it into a `Mutex<Vec<_>>`).
//!
//! The aggregate grows while the bench runs, so it is re-seeded at `N` events (untimed) every
//! `K` commands:
//! - plain and cqrs-es replay the whole stream, so `K = max(N / 10, 10)`: the stream stays
//!   within 10% of `N`;
//! - cache and snapshot variants do not depend on the stream length by design, so `K = 1,000`
//!   (ten full snapshot periods: commands see 0..=99 events after the latest snapshot in equal
//!   measure, and pay for the snapshot taken every 100th command). The cache is warmed by one
//!   untimed command after each re-seed.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{
    Account, CqrsAccount, DEPOSIT, Quiet, cqrs_envelopes, new_events, raw_loop, runtime,
    seeded_mem_store, seeded_snapshots, seeded_store,
};
use cqrs_es::{CqrsFramework, EventEnvelope};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use eventflow_core::{CommandContext, NewEvent, Repository, SnapshotPolicy};

const ID: &str = "hot";
const SIZES: [usize; 3] = [100, 1_000, 10_000];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Cache,
    Snapshots,
}

impl Variant {
    fn reseed_every(self, n: usize) -> u64 {
        match self {
            Variant::Plain => (n as u64 / 10).max(10),
            Variant::Cache | Variant::Snapshots => 1_000,
        }
    }

    async fn repository(self, seed: &[NewEvent]) -> Repository<Account> {
        let store = seeded_store(ID, seed).await;
        let repository = Repository::new(store);
        match self {
            Variant::Plain => repository,
            Variant::Cache => {
                let repository = repository.with_cache(16_384);
                // Warm the cache: the first command after a restart replays the stream.
                repository
                    .execute(ID, &DEPOSIT, CommandContext::new())
                    .await
                    .expect("warm-up command");
                repository
            }
            Variant::Snapshots => {
                let snapshots = seeded_snapshots(ID, seed.len() as u64).await;
                repository.with_snapshots(snapshots, SnapshotPolicy::every(100))
            }
        }
    }
}

async fn eventflow_hot(variant: Variant, seed: &[NewEvent], iters: u64) -> Duration {
    let every = variant.reseed_every(seed.len());
    let mut repository = variant.repository(seed).await;
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % every == 0 {
            elapsed += start.elapsed();
            repository = variant.repository(seed).await;
            start = Instant::now();
        }
        let executed = repository
            .execute(ID, black_box(&DEPOSIT), CommandContext::new())
            .await
            .expect("command");
        black_box(executed);
    }
    elapsed + start.elapsed()
}

async fn cqrs_hot(seed: &[EventEnvelope<CqrsAccount>], iters: u64) -> Duration {
    let _quiet = Quiet::stdout();
    let every = (seed.len() as u64 / 10).max(10);
    let framework = || CqrsFramework::new(seeded_mem_store(ID, seed), vec![], ());
    let mut cqrs = framework();
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % every == 0 {
            elapsed += start.elapsed();
            cqrs = framework();
            start = Instant::now();
        }
        cqrs.execute(ID, black_box(DEPOSIT)).await.expect("command");
    }
    elapsed + start.elapsed()
}

fn hot_aggregate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("hot_aggregate");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("raw_mutex_vec", |b| b.iter_custom(raw_loop));
    for n in SIZES {
        let seed = new_events(n);
        let cqrs_seed = cqrs_envelopes(ID, n);
        for (name, variant) in [
            ("eventflow_cache", Variant::Cache),
            ("eventflow_snapshot_every_100", Variant::Snapshots),
            ("eventflow_plain", Variant::Plain),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &seed, |b, seed| {
                b.to_async(&rt)
                    .iter_custom(|iters| eventflow_hot(variant, seed, iters));
            });
        }
        group.bench_with_input(BenchmarkId::new("cqrs_es", n), &cqrs_seed, |b, seed| {
            b.to_async(&rt).iter_custom(|iters| cqrs_hot(seed, iters));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = hot_aggregate
}
criterion_main!(benches);
