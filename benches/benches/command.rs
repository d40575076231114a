//! Command handling through the repository, round robin over 10,000 aggregates, against cqrs-es
//! 0.5.0 (`CqrsFramework` + `MemStore`, same aggregate) and the raw loop, all in the same run.
//!
//! A command is: load the aggregate, `handle`, append what it decided. Two shapes of stream, both
//! measured for every contender, because each flatters someone:
//! - **fresh** (the peer's shape): the stores are replaced (untimed) after every aggregate has had
//!   one command, so every command starts its aggregate's stream, one event long afterwards. A
//!   cache never hits here: the cached and uncached rows measure the same path.
//! - **growing**: the stores are replaced after ten commands per aggregate, so an aggregate holds 0
//!   to 9 events (4.5 on average) when a command reaches it. cqrs-es's `MemStore` clones the longer
//!   streams; eventflow's cache never reads them. Here eventflow also runs without a cache (the
//!   cold path: read and decode the stream every time) and with a cache of 1,000 states for the
//!   10,000 aggregates (mostly misses, and an eviction on every command).
//!
//! cqrs-es's `MemStore` prints two lines to stdout per command (`loading: ...`, `storing: ...`);
//! the bench sends them to `/dev/null` itself while it times cqrs-es (`common::Quiet`). The rows
//! `cqrs_es/without_printing/*` run the same `MemStore` logic with the printing removed
//! (`common::SilentMemStore`), the peer at its best.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Account, CqrsAccount, DEPOSIT, Quiet, SPREAD, SilentMemStore, ids, raw_loop, runtime,
};
use cqrs_es::CqrsFramework;
use cqrs_es::mem_store::MemStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::{CommandContext, InMemoryEventStore, Repository};

/// How long the streams are when a command reaches them.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// One command per aggregate between store resets: every command starts a stream.
    Fresh,
    /// Ten commands per aggregate between store resets: streams of 0 to 9 events.
    Growing,
}

impl Shape {
    /// Commands between two (untimed) store resets.
    fn reset_every(self) -> u64 {
        let rounds = match self {
            Shape::Fresh => 1,
            Shape::Growing => 10,
        };
        rounds * SPREAD as u64
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Fresh => "fresh_streams_10k",
            Shape::Growing => "growing_streams_10k",
        }
    }
}

fn eventflow_repository(cache: Option<usize>) -> Repository<Account> {
    let repository = Repository::new(Arc::new(InMemoryEventStore::new()));
    match cache {
        Some(capacity) => repository.with_cache(capacity),
        None => repository,
    }
}

async fn eventflow_commands(
    ids: &[String],
    cache: Option<usize>,
    shape: Shape,
    iters: u64,
) -> Duration {
    let mut repository = eventflow_repository(cache);
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % shape.reset_every() == 0 {
            elapsed += start.elapsed();
            repository = eventflow_repository(cache);
            start = Instant::now();
        }
        let id = &ids[(i % ids.len() as u64) as usize];
        let executed = repository
            .execute(id, black_box(&DEPOSIT), CommandContext::new())
            .await
            .expect("command");
        black_box(executed);
    }
    elapsed + start.elapsed()
}

async fn cqrs_commands<S: cqrs_es::EventStore<CqrsAccount>>(
    store: impl Fn() -> S,
    ids: &[String],
    shape: Shape,
    iters: u64,
) -> Duration {
    let _quiet = Quiet::stdout();
    let framework = || CqrsFramework::new(store(), vec![], ());
    let mut cqrs = framework();
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % shape.reset_every() == 0 {
            elapsed += start.elapsed();
            cqrs = framework();
            start = Instant::now();
        }
        let id = &ids[(i % ids.len() as u64) as usize];
        cqrs.execute(id, black_box(DEPOSIT)).await.expect("command");
    }
    elapsed + start.elapsed()
}

fn command(c: &mut Criterion) {
    let rt = runtime();
    let ids = ids(SPREAD);
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_mutex_vec", |b| b.iter_custom(raw_loop));
    for shape in [Shape::Fresh, Shape::Growing] {
        let name = shape.name();
        group.bench_function(format!("cqrs_es/mem_store/{name}"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                cqrs_commands(MemStore::<CqrsAccount>::default, &ids, shape, iters)
            });
        });
        group.bench_function(format!("cqrs_es/without_printing/{name}"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| cqrs_commands(SilentMemStore::default, &ids, shape, iters));
        });
        group.bench_function(format!("eventflow/no_cache/{name}"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| eventflow_commands(&ids, None, shape, iters));
        });
        group.bench_function(format!("eventflow/cache_16384/{name}"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| eventflow_commands(&ids, Some(16_384), shape, iters));
        });
    }
    group.bench_function("eventflow/cache_1000/growing_streams_10k", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_commands(&ids, Some(1_000), Shape::Growing, iters));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = command
}
criterion_main!(benches);
