//! A fixed workload for `valgrind --tool=callgrind`, whose instruction counts repeat run after run
//! where this machine's timings do not. Run a workload with `N` operations and with `0`: the
//! difference divided by `N` is the cost of one operation, set-up excluded.
//!
//! ```sh
//! cargo build --release -p eventflow-benches --example instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions command-cached 100000
//! ```
//!
//! Workloads:
//! - `append`: one-event appends round robin over 10,000 streams; `append-batch`: the same with 10
//!   events per append;
//! - `command-fresh`: one command per aggregate, every stream new; `command-fresh-cached`: the same
//!   through a cache (which can only miss); `command-cached`: cached commands round robin over
//!   10,000 aggregates, after one untimed round;
//! - `replay`: `N` loads of a 1,000-event stream; `raw-decode`: the rehydrate bench's raw loop (`N`
//!   times, decode and apply 1,000 payloads);
//! - `cqrs-batch`: cqrs-es's `MemStore` logic without its printing, commits of 10 events round
//!   robin over 10,000 aggregates.
#![allow(missing_docs)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use common::{Account, DEPOSIT, DEPOSITED, SPREAD, ids, new_events, runtime, seeded_store};
use eventflow_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, InMemoryEventStore, Repository,
    StreamId,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let rt = runtime();
    rt.block_on(async {
        match workload.as_str() {
            "append" => append(n, 1).await,
            "append-batch" => append(n, 10).await,
            "command-fresh" => commands(n, Shape::Fresh).await,
            "command-fresh-cached" => commands(n, Shape::FreshCached).await,
            "command-cached" => commands(n, Shape::Cached).await,
            "replay" => replay(n).await,
            "raw-decode" => raw_decode(n),
            "cqrs-batch" => cqrs_batch(n).await,
            other => eprintln!(
                "unknown workload {other:?}: append, append-batch, command-fresh, command-fresh-cached, command-cached, replay, raw-decode, cqrs-batch"
            ),
        }
    });
}

async fn append(n: u64, batch: usize) {
    let store = InMemoryEventStore::new();
    let streams: Vec<StreamId> = (0..SPREAD)
        .map(|i| StreamId::for_aggregate("account", &i.to_string()))
        .collect();
    let mut versions = vec![0_u64; SPREAD];
    for i in 0..n {
        let s = (i % SPREAD as u64) as usize;
        let events = new_events(batch);
        let request = AppendRequest::new(
            streams[s].clone(),
            ExpectedVersion::Exact(versions[s]),
            events,
        );
        versions[s] = store.append(request).await.expect("append").last_version;
    }
}

/// Which commands the `command-*` workloads run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A new aggregate every time, no cache.
    Fresh,
    /// A new aggregate every time, with a cache (which can only miss, and grows).
    FreshCached,
    /// Round robin over 10,000 aggregates warmed into the cache.
    Cached,
}

async fn commands(n: u64, shape: Shape) {
    let ids = ids(SPREAD);
    let repository = Repository::<Account>::new(Arc::new(InMemoryEventStore::new()));
    let repository = if shape == Shape::Fresh {
        repository
    } else {
        repository.with_cache(16_384)
    };
    let warm = shape == Shape::Cached;
    if warm {
        for id in &ids {
            repository
                .execute(id, &DEPOSIT, CommandContext::new())
                .await
                .expect("command");
        }
    }
    for i in 0..n {
        let id = if warm {
            ids[(i % SPREAD as u64) as usize].clone()
        } else {
            format!("fresh-{i}")
        };
        let executed = repository
            .execute(&id, black_box(&DEPOSIT), CommandContext::new())
            .await
            .expect("command");
        black_box(executed);
    }
}

async fn replay(n: u64) {
    let store = seeded_store("big", &new_events(1_000)).await;
    let repository = Repository::<Account>::new(store);
    for _ in 0..n {
        black_box(repository.load("big").await.expect("load"));
    }
}

fn raw_decode(n: u64) {
    let log: Vec<Vec<u8>> = (0..1_000)
        .map(|_| serde_json::to_vec(&DEPOSITED).expect("serialise"))
        .collect();
    for _ in 0..n {
        let mut state = Account::default();
        for bytes in &log {
            let event = serde_json::from_slice(bytes).expect("decode");
            eventflow_core::Aggregate::apply(&mut state, &event);
        }
        black_box(state);
    }
}

async fn cqrs_batch(n: u64) {
    use cqrs_es::EventStore as _;
    let store = common::SilentMemStore::default();
    let ids = ids(SPREAD);
    let mut sequences = vec![0_usize; SPREAD];
    for i in 0..n {
        let s = (i % SPREAD as u64) as usize;
        let context = cqrs_es::mem_store::MemStoreAggregateContext {
            aggregate_id: ids[s].clone(),
            aggregate: common::CqrsAccount::default(),
            current_sequence: sequences[s],
        };
        let committed = store
            .commit(vec![black_box(DEPOSITED); 10], context, Default::default())
            .await
            .expect("commit");
        sequences[s] += committed.len();
    }
}
