//! Command handling through the repository, round robin over 10,000 aggregates, against cqrs-es
//! 0.5.0 (`CqrsFramework` + `MemStore`, same aggregate) and the raw loop, all in the same run.
//!
//! A command is: load the aggregate, `handle`, append what it decided. The stores are replaced
//! (untimed) after every aggregate has had [`ROUNDS`] commands, so an aggregate holds 0 to 9
//! events (4.5 on average) when a command reaches it, for every framework alike.
//!
//! cqrs-es's `MemStore` prints two lines to stdout per command (`loading: ...`, `storing: ...`);
//! the bench sends them to `/dev/null` itself while it times cqrs-es (`common::Quiet`).
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Account, CqrsAccount, DEPOSIT, Quiet, SPREAD, ids, raw_loop, runtime};
use cqrs_es::CqrsFramework;
use cqrs_es::mem_store::MemStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::{CommandContext, InMemoryEventStore, Repository};

/// Commands per aggregate before the store is replaced.
const ROUNDS: u64 = 10;
const RESET_EVERY: u64 = ROUNDS * SPREAD as u64;

fn eventflow_repository(cache: bool) -> Repository<Account> {
    let repository = Repository::new(Arc::new(InMemoryEventStore::new()));
    if cache {
        repository.with_cache(16_384)
    } else {
        repository
    }
}

async fn eventflow_commands(ids: &[String], cache: bool, iters: u64) -> Duration {
    let mut repository = eventflow_repository(cache);
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % RESET_EVERY == 0 {
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

async fn cqrs_commands(ids: &[String], iters: u64) -> Duration {
    let _quiet = Quiet::stdout();
    let framework = || CqrsFramework::new(MemStore::<CqrsAccount>::default(), vec![], ());
    let mut cqrs = framework();
    let mut elapsed = Duration::ZERO;
    let mut start = Instant::now();
    for i in 0..iters {
        if i > 0 && i % RESET_EVERY == 0 {
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
    group.bench_function("cqrs_es/mem_store_spread_10k", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| cqrs_commands(&ids, iters));
    });
    group.bench_function("eventflow/no_cache_spread_10k", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_commands(&ids, false, iters));
    });
    group.bench_function("eventflow/cache_16384_spread_10k", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| eventflow_commands(&ids, true, iters));
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
