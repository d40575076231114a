//! `eventflow-store-dynamodb` against the raw AWS SDK, in the same run.
//!
//! - `dynamodb_append/*` (moto): one event appended to a new stream (`NoStream`: one conditional
//!   `PutItem`), and one event appended to an existing stream (`Exact(n)`: a condition check on
//!   event `n` plus the put, in a `TransactWriteItems`). The `raw_sdk` lines send the very same
//!   request (same items, attributes and conditions) built by hand: the floor for this backend.
//! - `dynamodb_append_stub/*`: the same, against a stub HTTP server that answers `200 {}` at once, so
//!   what is measured is the client side alone (the store's work plus the SDK's), without moto.
//! - `*_paired`: the same comparisons as alternating pairs (store, raw, raw, store, ...), printed as
//!   medians, trimmed means and ratios. moto has rare pauses of 100 ms and more and this machine is
//!   shared, so sequential criterion groups drift; pairs do not. The ratio to read is the paired one.
//! - `dynamodb_command_paired` (moto): a command through `Repository::execute` (uncached: a
//!   consistent `Query` of the stream, decide, append one event with the version it read, which is
//!   a one-item transaction) against what dynamo-es writes by hand: the same `Query`, then one
//!   `PutItem` conditioned on `attribute_not_exists`. Each side's stream grows by one event per
//!   command, [`RESET_EVERY`] commands per table lifetime.
//! - `dynamodb_load_1000/*` (moto): reading a 1,000-event stream: the store's `read_stream` (a
//!   consistent `Query` following `LastEvaluatedKey`, decoded into `RecordedEvent`s),
//!   `read_stream_to_end` (the core's paging convenience, which asks once more after a full page),
//!   and the raw SDK paging the same `Query` without decoding; then paired.
//!
//! moto slows down as a table grows (each transaction item copies the table), so appends on moto get
//! fresh tables every [`RESET_EVERY`] appends (created and deleted untimed), and both sides meet the
//! same table sizes. moto is started on a free port and killed by PID when the bench exits, or
//! `EVENTFLOW_MOTO_ENDPOINT` is used; without either the moto benches print SKIPPED.
#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::{
    AppendRequest, CommandContext, EventStore, EventStoreExt, ExpectedVersion, Metadata, NewEvent,
    Repository, StreamId,
};
use eventflow_store_dynamodb::testkit;
use eventflow_store_dynamodb::{DynamoDbConfig, DynamoDbEventStore};

/// The payload every append writes (a small JSON event, as in the other benches).
const PAYLOAD: &[u8] = br#"{"Deposited":{"amount":1}}"#;
/// Events in the stream the load bench reads.
const LOAD_EVENTS: u64 = 1_000;
/// Appends between table resets in the append benches.
const RESET_EVERY: u64 = 100;
/// Table lifetimes (of [`RESET_EVERY`] pairs each) in the paired comparison.
const PAIRED_ROUNDS: u64 = 20;
/// Alternating loads in the paired load comparison.
const PAIRED_LOADS: u64 = 40;
/// Rounds (of [`RESET_EVERY`] pairs) in the paired comparison on the stub.
const STUB_PAIRED_ROUNDS: u64 = 100;

/// moto_server on a free port, killed by PID when the bench exits (or `EVENTFLOW_MOTO_ENDPOINT`).
/// The benches write from one task, so they talk to moto directly, without the proxy that makes
/// concurrent tests linearizable.
fn emulator() -> Option<&'static str> {
    let endpoint = testkit::shared_direct_endpoint();
    if endpoint.is_none() {
        eprintln!("SKIPPED dynamodb benches: no moto_server and no endpoint");
    }
    endpoint
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A store on fresh tables.
async fn fresh_store(endpoint: &str) -> DynamoDbEventStore {
    let store = DynamoDbEventStore::new(testkit::local_client(endpoint), testkit::unique_config());
    store.create_tables().await.expect("create tables");
    store
}

fn new_event() -> NewEvent {
    NewEvent::new("Deposited", 1, Bytes::from_static(PAYLOAD), Metadata::new())
}

fn stream(i: u64) -> StreamId {
    StreamId::for_aggregate("account", &i.to_string())
}

/// The event item exactly as the store writes it, built with the raw SDK types.
fn raw_event_item(stream: &StreamId, version: u64) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let recorded_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    HashMap::from([
        ("stream_id".to_owned(), s(stream.as_str())),
        ("version".to_owned(), n(version)),
        ("event_id".to_owned(), s(&uuid::Uuid::now_v7().to_string())),
        ("event_type".to_owned(), s("Deposited")),
        ("schema_version".to_owned(), n(1)),
        (
            "payload".to_owned(),
            s(std::str::from_utf8(PAYLOAD).expect("utf-8")),
        ),
        ("recorded_at".to_owned(), AttributeValue::S(recorded_at)),
    ])
}

/// The same write the store sends for one event at `version` after `Exact(version - 1)`: a
/// conditional `PutItem` on a new stream, a `TransactWriteItems` with the condition check on
/// `version - 1` when the stream exists.
async fn raw_append(client: &Client, table: &str, stream: &StreamId, version: u64) {
    if version == 1 {
        put_event(client, table, stream, version).await;
        return;
    }
    let names = HashMap::from([("#pk".to_owned(), "stream_id".to_owned())]);
    let mut items = Vec::with_capacity(2);
    if version > 1 {
        let key = HashMap::from([
            (
                "stream_id".to_owned(),
                AttributeValue::S(stream.as_str().to_owned()),
            ),
            (
                "version".to_owned(),
                AttributeValue::N((version - 1).to_string()),
            ),
        ]);
        let check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key))
            .condition_expression("attribute_exists(#pk)")
            .set_expression_attribute_names(Some(names.clone()))
            .build()
            .expect("condition check");
        items.push(TransactWriteItem::builder().condition_check(check).build());
    }
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(raw_event_item(stream, version)))
        .condition_expression("attribute_not_exists(#pk)")
        .set_expression_attribute_names(Some(names))
        .build()
        .expect("put");
    items.push(TransactWriteItem::builder().put(put).build());
    client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
        .expect("raw TransactWriteItems");
}

/// Appends one event to `s` at `version` (1: a new stream), through the store or the raw SDK.
async fn one_append(store: &DynamoDbEventStore, raw: bool, s: StreamId, version: u64) {
    if raw {
        raw_append(store.client(), store.config().events_table(), &s, version).await;
    } else {
        let expected = match version {
            1 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        let request = AppendRequest::new(s, expected, vec![new_event()]);
        black_box(store.append(request).await.expect("append"));
    }
}

/// Stream and version of append `i` since the last table reset.
fn target(i: u64, existing: bool) -> (StreamId, u64) {
    if existing {
        (stream(u64::MAX), i + 1)
    } else {
        (stream(i), 1)
    }
}

/// Times `iters` appends. The tables are replaced (untimed) every [`RESET_EVERY`] appends, so that
/// whatever `iters` criterion picks, appends meet the same table sizes (0 .. RESET_EVERY items).
/// `existing`: one stream, `Exact(n)`; otherwise one event to a new stream each time (`NoStream`).
async fn timed_appends(endpoint: &str, iters: u64, existing: bool, raw: bool) -> Duration {
    let mut store = fresh_store(endpoint).await;
    let mut elapsed = Duration::ZERO;
    for i in 0..iters {
        if i > 0 && i % RESET_EVERY == 0 {
            store.delete_tables().await.expect("delete tables");
            store = fresh_store(endpoint).await;
        }
        let (s, version) = target(i % RESET_EVERY, existing);
        let start = Instant::now();
        one_append(&store, raw, s, version).await;
        elapsed += start.elapsed();
    }
    store.delete_tables().await.expect("delete tables");
    elapsed
}

/// Alternates store and raw appends (ABAB on the same tables, which first alternating too) and
/// prints their latencies and ratios: a paired comparison that drift (moto's, or other work on the
/// machine) cannot bias, on moto and on the stub.
fn paired(c: &mut Criterion) {
    let _ = c;
    let rt = runtime();
    let stub = testkit::local_client(&stub_endpoint());
    let moto = emulator();
    for existing in [false, true] {
        let name = if existing {
            "existing_stream"
        } else {
            "new_stream"
        };
        let (store_times, raw_times) =
            rt.block_on(paired_appends(None, &stub, existing, STUB_PAIRED_ROUNDS));
        report(
            &format!("dynamodb_append_stub_paired/{name}"),
            store_times,
            raw_times,
        );
        if let Some(endpoint) = moto
            && existing
        {
            let (store_times, raw_times, checked_times) =
                rt.block_on(paired_commands(endpoint, PAIRED_ROUNDS));
            report(
                "dynamodb_command_paired/existing_stream",
                store_times,
                raw_times.clone(),
            );
            // What a command cost before `Observed`: a condition check on the version read, plus
            // the put, in one transaction.
            report(
                "dynamodb_command_paired/query_check_put_vs_query_put",
                checked_times,
                raw_times,
            );
        }
        if let Some(endpoint) = moto {
            let client = testkit::local_client(endpoint);
            let (store_times, raw_times) = rt.block_on(paired_appends(
                Some(endpoint),
                &client,
                existing,
                PAIRED_ROUNDS,
            ));
            report(
                &format!("dynamodb_append_paired/{name}"),
                store_times,
                raw_times,
            );
        }
    }
}

/// `rounds` rounds of [`RESET_EVERY`] triples of commands, each round on fresh tables: the
/// repository's (load + one-item transaction), a raw `Query` + conditional `PutItem`, and a raw
/// `Query` + the two-item transaction (existence check + put) a command sent before `Observed`.
async fn paired_commands(
    endpoint: &str,
    rounds: u64,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let (mut store_times, mut raw_times, mut checked_times) = (Vec::new(), Vec::new(), Vec::new());
    let raw_stream = StreamId::new("account-raw");
    let checked_stream = StreamId::new("account-checked");
    for round in 0..rounds {
        let store = std::sync::Arc::new(fresh_store(endpoint).await);
        let repository = Repository::<common::Account>::new(store.clone());
        for i in 0..RESET_EVERY {
            let order = if (round + i) % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for raw in order {
                let start = Instant::now();
                if raw {
                    let table = store.config().events_table();
                    raw_command(store.client(), table, &raw_stream).await;
                    raw_times.push(start.elapsed());
                    let start = Instant::now();
                    let version = stream_length(store.client(), table, &checked_stream).await;
                    raw_append(store.client(), table, &checked_stream, version + 1).await;
                    checked_times.push(start.elapsed());
                } else {
                    let executed = repository
                        .execute("hot", &common::DEPOSIT, CommandContext::new())
                        .await
                        .expect("command");
                    black_box(executed);
                    store_times.push(start.elapsed());
                }
            }
        }
        store.delete_tables().await.expect("delete tables");
    }
    (store_times, raw_times, checked_times)
}

/// The length of `stream`: a consistent `Query` of all its items (one page: streams stay short).
async fn stream_length(client: &Client, table: &str, stream: &StreamId) -> u64 {
    let events = client
        .query()
        .table_name(table)
        .consistent_read(true)
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "stream_id")
        .expression_attribute_values(":s", AttributeValue::S(stream.as_str().to_owned()))
        .send()
        .await
        .expect("raw Query");
    events.items().len() as u64
}

/// A command as dynamo-es writes it: a consistent `Query` of the stream, then one `PutItem` of the
/// next version conditioned on `attribute_not_exists`.
async fn raw_command(client: &Client, table: &str, stream: &StreamId) {
    let version = stream_length(client, table, stream).await;
    put_event(client, table, stream, version + 1).await;
}

/// One event item at `version`, put on the condition that it is not there yet.
async fn put_event(client: &Client, table: &str, stream: &StreamId, version: u64) {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(raw_event_item(stream, version)))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", "stream_id")
        .send()
        .await
        .expect("raw PutItem");
}

/// `rounds` rounds of [`RESET_EVERY`] pairs; on moto (`endpoint`) each round has fresh tables.
async fn paired_appends(
    endpoint: Option<&str>,
    client: &Client,
    existing: bool,
    rounds: u64,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut store_times, mut raw_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let store = match endpoint {
            Some(endpoint) => fresh_store(endpoint).await,
            None => DynamoDbEventStore::new(client.clone(), DynamoDbConfig::default()),
        };
        for i in 0..RESET_EVERY {
            let order = if (round + i) % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for raw in order {
                // The raw side writes its own streams (and its own hot stream).
                let (s, version) = target(i, existing);
                let s = if raw {
                    StreamId::new(format!("raw-{s}"))
                } else {
                    s
                };
                let start = Instant::now();
                one_append(&store, raw, s, version).await;
                let took = start.elapsed();
                if raw {
                    raw_times.push(took)
                } else {
                    store_times.push(took)
                }
            }
        }
        if endpoint.is_some() {
            store.delete_tables().await.expect("delete tables");
        }
    }
    (store_times, raw_times)
}

fn report(name: &str, mut store_times: Vec<Duration>, mut raw_times: Vec<Duration>) {
    let store_stats = Stats::of(&mut store_times);
    let raw_stats = Stats::of(&mut raw_times);
    eprintln!("{name}: {} pairs", store_times.len());
    eprintln!("  eventflow {store_stats}");
    eprintln!("  raw_sdk   {raw_stats}");
    eprintln!(
        "  ratio eventflow/raw_sdk: median {:.3}, trimmed mean {:.3}, mean {:.3}",
        store_stats.median.as_secs_f64() / raw_stats.median.as_secs_f64(),
        store_stats.trimmed.as_secs_f64() / raw_stats.trimmed.as_secs_f64(),
        store_stats.mean.as_secs_f64() / raw_stats.mean.as_secs_f64(),
    );
}

/// Summary of latencies. moto has rare pauses of 100 ms and more (Python), which land on either side
/// at random and dominate a plain mean; the median and the mean without the slowest 5% do not move.
struct Stats {
    mean: Duration,
    trimmed: Duration,
    median: Duration,
    p90: Duration,
    max: Duration,
}

impl Stats {
    fn of(times: &mut [Duration]) -> Stats {
        times.sort_unstable();
        let mean = |t: &[Duration]| t.iter().sum::<Duration>() / t.len().max(1) as u32;
        let len = times.len();
        Stats {
            mean: mean(times),
            trimmed: mean(&times[..len - len / 20]),
            median: times[len / 2],
            p90: times[len * 9 / 10],
            max: times[len - 1],
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:?}, trimmed mean (95%) {:?}, mean {:?}, p90 {:?}, max {:?}",
            self.median, self.trimmed, self.mean, self.p90, self.max
        )
    }
}

/// A stand-in for DynamoDB that answers every request at once with `200 {}` (keep-alive): what is
/// left of an append is the client side, the store's work and the SDK's, with moto's noise gone.
fn stub_endpoint() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let address = listener.local_addr().expect("stub address");
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = connection.set_nodelay(true);
                let mut reader = BufReader::new(connection.try_clone().expect("clone"));
                let mut writer = connection;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                                    content-length: 2\r\n\r\n{}";
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

/// `iters` appends against the stub (no tables, nothing stored: each answer is "committed").
async fn stub_appends(client: &Client, iters: u64, existing: bool, raw: bool) -> Duration {
    let store = DynamoDbEventStore::new(client.clone(), DynamoDbConfig::default());
    let start = Instant::now();
    for i in 0..iters {
        let (s, version) = target(i % RESET_EVERY, existing);
        one_append(&store, raw, s, version).await;
    }
    start.elapsed()
}

fn stub(c: &mut Criterion) {
    let rt = runtime();
    let endpoint = stub_endpoint();
    let client = testkit::local_client(&endpoint);
    let mut group = c.benchmark_group("dynamodb_append_stub");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    for (name, existing) in [("new_stream", false), ("existing_stream", true)] {
        for (side, raw) in [("eventflow", false), ("raw_sdk", true)] {
            group.bench_function(format!("{side}/{name}"), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| stub_appends(&client, iters, existing, raw));
            });
        }
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    let Some(endpoint) = emulator() else { return };
    let rt = runtime();
    let mut group = c.benchmark_group("dynamodb_append");
    group.throughput(Throughput::Elements(1));
    for (name, existing) in [("new_stream", false), ("existing_stream", true)] {
        for (side, raw) in [("eventflow", false), ("raw_sdk", true)] {
            group.bench_function(format!("{side}/{name}"), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| timed_appends(endpoint, iters, existing, raw));
            });
        }
    }
    group.finish();
}

/// A store whose table holds one stream of [`LOAD_EVENTS`] events.
async fn loaded_store(endpoint: &str) -> (DynamoDbEventStore, StreamId) {
    let store = DynamoDbEventStore::new(
        testkit::local_client(endpoint),
        DynamoDbConfig::new(
            format!(
                "eventflow-bench-load-{}-events",
                uuid::Uuid::new_v4().simple()
            ),
            format!(
                "eventflow-bench-load-{}-meta",
                uuid::Uuid::new_v4().simple()
            ),
        ),
    );
    store.create_tables().await.expect("create tables");
    let s = stream(42);
    // 50 events per append: 100 with the condition check on the previous version would be 101 items.
    for batch in 0..LOAD_EVENTS / 50 {
        let events = (0..50).map(|_| new_event()).collect();
        let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(batch * 50), events);
        store.append(request).await.expect("seed");
    }
    (store, s)
}

/// The floor: the same consistent `Query`, paged through `LastEvaluatedKey`, items not decoded.
async fn raw_load(client: &Client, table: &str, stream: &StreamId) -> usize {
    let mut start = None;
    let mut count = 0;
    loop {
        let output = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("#s = :s AND #v BETWEEN :from AND :to")
            .expression_attribute_names("#s", "stream_id")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":s", AttributeValue::S(stream.as_str().to_owned()))
            .expression_attribute_values(":from", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":to", AttributeValue::N(LOAD_EVENTS.to_string()))
            .limit(LOAD_EVENTS as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("raw Query");
        count += black_box(output.items()).len();
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return count,
        }
    }
}

fn load(c: &mut Criterion) {
    let Some(endpoint) = emulator() else { return };
    let rt = runtime();
    let (store, s) = rt.block_on(loaded_store(endpoint));
    let table = store.config().events_table().to_owned();
    let mut group = c.benchmark_group("dynamodb_load_1000");
    group.throughput(Throughput::Elements(LOAD_EVENTS));
    group.bench_function("eventflow/read_stream", |b| {
        b.to_async(&rt).iter(|| async {
            let events = store.read_stream(&s, 1, LOAD_EVENTS as usize).await;
            assert_eq!(events.expect("load").len() as u64, LOAD_EVENTS);
        });
    });
    group.bench_function("eventflow/read_stream_to_end", |b| {
        b.to_async(&rt).iter(|| async {
            let events = store.read_stream_to_end(&s, 1).await;
            assert_eq!(events.expect("load").len() as u64, LOAD_EVENTS);
        });
    });
    group.bench_function("raw_sdk/query", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(
                raw_load(store.client(), &table, &s).await as u64,
                LOAD_EVENTS
            );
        });
    });
    group.finish();

    // Paired: alternate the store's read and the raw Query, as for appends.
    let (mut store_times, mut raw_times) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..PAIRED_LOADS {
            for raw in if i % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                let start = Instant::now();
                let count = if raw {
                    raw_load(store.client(), &table, &s).await
                } else {
                    store
                        .read_stream(&s, 1, LOAD_EVENTS as usize)
                        .await
                        .expect("load")
                        .len()
                };
                assert_eq!(count as u64, LOAD_EVENTS);
                let took = start.elapsed();
                if raw {
                    raw_times.push(took)
                } else {
                    store_times.push(took)
                }
            }
        }
    });
    report("dynamodb_load_1000_paired", store_times, raw_times);
    rt.block_on(store.delete_tables()).expect("delete tables");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15));
    targets = stub, append, paired, load
}
criterion_main!(benches);
