//! `eventflow-bus` adapters against the raw SDK calls on the same emulators, in the same run.
//!
//! - `bus_publish_10/*`: one `publish` of 10 messages (the conformance suite's batch size). The
//!   `raw_sdk` lines send the same 10 events with one hand-built `PutEvents` (EventBridge, moto) or
//!   one `Publish` of prebuilt messages (Pub/Sub emulator): the floor for each adapter. The in-memory
//!   bus has one subscription, so its figure includes handing the messages to delivery tasks.
//! - `bus_latency/*`: publish one message and wait until a handler has it. The `raw_sdk` lines
//!   publish with the raw call and consume with the raw SDK: an SQS long-poll loop that parses the
//!   EventBridge event and deletes the message, or `gcloud-pubsub`'s own streaming subscriber that
//!   acknowledges. The adapters do more per message (envelope decoding, filter, spans, concurrency
//!   limit, ordering-key bookkeeping, lease tracking).
//! - `*_paired`: the same comparisons as alternating pairs (adapter, raw, raw, adapter, ...),
//!   printed as medians and ratios: the emulators have pauses and this machine is shared, so
//!   sequential criterion groups drift; pairs do not. The ratio to read is the paired one.
//!
//! Emulators start on free ports and are killed by PID when the bench exits (or
//! `EVENTFLOW_MOTO_ENDPOINT` / `PUBSUB_EMULATOR_HOST` are used); without them those benches print
//! SKIPPED.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_bus::eventbridge::EventBridgeBus;
use eventflow_bus::pubsub::PubSubBus;
use eventflow_bus::testkit;
use eventflow_core::InMemoryBus;
use eventflow_core::bus::{Delivery, EventBus, HandlerError, Message, Subscription, handler_fn};
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use tokio::sync::mpsc;

/// Messages per publish in the throughput benches.
const BATCH: usize = 10;
/// Alternating rounds in the paired comparisons.
const PAIRED_ROUNDS: usize = 40;
/// How long a latency sample waits for its message before the bench fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn message(n: usize) -> Message {
    Message::new(
        "BenchEvent",
        "eventflow.bench",
        serde_json::json!({ "n": n, "orderId": "o-1", "total": 42.5 }),
    )
    .with_correlation_id("bench-correlation")
}

fn batch() -> Vec<Message> {
    (0..BATCH).map(message).collect()
}

/// What a raw publisher sends for `message`: the same detail the adapter sends.
fn raw_entry(bus_name: &str, message: &Message) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus_name)
        .source(&message.source)
        .detail_type(&message.message_type)
        .detail(serde_json::to_string(message).expect("json"))
        .build()
}

/// What a raw publisher sends for `message`: the same data and attributes the adapter sends (the
/// envelope, type, source and id, and the message's attributes), so the floor carries the same
/// bytes.
fn raw_pubsub(message: &Message) -> PubsubMessage {
    let mut attributes: std::collections::HashMap<String, String> = message
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.insert("eventflow_type".to_owned(), message.message_type.clone());
    attributes.insert("eventflow_source".to_owned(), message.source.clone());
    attributes.insert("eventflow_id".to_owned(), message.id.clone());
    PubsubMessage {
        data: serde_json::to_vec(message).expect("json"),
        attributes,
        ..PubsubMessage::default()
    }
}

/// A handler that sends each delivered message id to `tx`.
fn forwarding(tx: mpsc::UnboundedSender<String>) -> Arc<dyn eventflow_core::MessageHandler> {
    handler_fn(move |delivery: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(delivery.message.id);
            Ok::<(), HandlerError>(())
        }
    })
}

/// Waits until `id` comes out of `rx`.
async fn arrival(rx: &mut mpsc::UnboundedReceiver<String>, id: &str) {
    let wait = async {
        while let Some(got) = rx.recv().await {
            if got == id {
                return;
            }
        }
        panic!("the consumer stopped");
    };
    tokio::time::timeout(ARRIVAL_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("message {id} did not arrive within {ARRIVAL_TIMEOUT:?}"));
}

/// One side of a comparison: an async action measured as a whole.
type Action<'a> =
    Box<dyn FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> + 'a>;

/// Runs `a` and `b` alternately (a, b, b, a, ...) and prints the medians and their ratio.
async fn paired(name: &str, mut a: Action<'_>, mut b: Action<'_>) {
    let mut times_a = Vec::with_capacity(PAIRED_ROUNDS);
    let mut times_b = Vec::with_capacity(PAIRED_ROUNDS);
    for round in 0..PAIRED_ROUNDS {
        for first in [round % 2 == 0, round % 2 != 0] {
            let start = Instant::now();
            if first {
                a().await;
                times_a.push(start.elapsed());
            } else {
                b().await;
                times_b.push(start.elapsed());
            }
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (ma, mb) = (median(&mut times_a), median(&mut times_b));
    eprintln!(
        "{name}: adapter median {ma:?}, raw_sdk median {mb:?}, ratio {:.2} ({PAIRED_ROUNDS} pairs)",
        ma.as_secs_f64() / mb.as_secs_f64()
    );
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("bus_publish_10");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));

    // In memory, with one subscription.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let memory = InMemoryBus::new();
    let handle = rt
        .block_on(memory.subscribe(Subscription::new("bench"), forwarding(tx)))
        .expect("subscribe");
    let drain = rt.spawn(async move { while rx.recv().await.is_some() {} });
    group.bench_function("in_memory/adapter", |b| {
        b.to_async(&rt)
            .iter(|| async { memory.publish(batch()).await.expect("publish") })
    });
    rt.block_on(handle.unsubscribe());
    drain.abort();

    if let Some(bus) = rt.block_on(testkit::fresh_eventbridge_bus()) {
        let endpoint = testkit::moto_endpoint().expect("moto");
        let raw = testkit::eventbridge_client(endpoint);
        let name = bus.config().bus_name.clone();
        group.bench_function("eventbridge/adapter", |b| {
            b.to_async(&rt)
                .iter(|| async { bus.publish(batch()).await.expect("publish") })
        });
        group.bench_function("eventbridge/raw_sdk", |b| {
            b.to_async(&rt).iter(|| async {
                let entries = batch().iter().map(|m| raw_entry(&name, m)).collect();
                let out = raw
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("put events");
                assert_eq!(out.failed_entry_count(), 0);
            })
        });
        rt.block_on(paired(
            "bus_publish_10_paired/eventbridge",
            Box::new(|| Box::pin(async { bus.publish(batch()).await.expect("publish") })),
            Box::new(|| {
                Box::pin(async {
                    let entries = batch().iter().map(|m| raw_entry(&name, m)).collect();
                    raw.put_events()
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .expect("put events");
                })
            }),
        ));
    } else {
        eprintln!("SKIPPED bus_publish_10/eventbridge: no moto_server");
    }

    if let Some(bus) = rt.block_on(testkit::fresh_pubsub_bus()) {
        // A subscription, so the emulator keeps what is published, as in production.
        let sink = testkit::unique_name("ef-bench-sink");
        rt.block_on(bus.provision_subscription(&Subscription::new(&sink)))
            .expect("subscription");
        // The publisher spawns its workers on the current runtime.
        let publisher = {
            let _runtime = rt.enter();
            bus.client().topic(&bus.config().topic).new_publisher(None)
        };
        group.bench_function("pubsub/adapter", |b| {
            b.to_async(&rt)
                .iter(|| async { bus.publish(batch()).await.expect("publish") })
        });
        group.bench_function("pubsub/raw_sdk", |b| {
            b.to_async(&rt).iter(|| async {
                let messages = batch().iter().map(raw_pubsub).collect();
                publisher
                    .publish_immediately(messages, None)
                    .await
                    .expect("publish");
            })
        });
        rt.block_on(paired(
            "bus_publish_10_paired/pubsub",
            Box::new(|| Box::pin(async { bus.publish(batch()).await.expect("publish") })),
            Box::new(|| {
                Box::pin(async {
                    let messages = batch().iter().map(raw_pubsub).collect();
                    publisher
                        .publish_immediately(messages, None)
                        .await
                        .expect("publish");
                })
            }),
        ));
        rt.block_on(bus.delete_subscription(&sink))
            .expect("cleanup");
    } else {
        eprintln!("SKIPPED bus_publish_10/pubsub: no Pub/Sub emulator");
    }
    group.finish();
}

/// A raw SQS consumer of `queue_url`: long polls, parses the EventBridge event, sends the detail's
/// id to `tx`, deletes the message.
async fn raw_sqs_consumer(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    tx: mpsc::UnboundedSender<String>,
) {
    loop {
        let Ok(out) = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(20)
            .send()
            .await
        else {
            continue;
        };
        for m in out.messages() {
            let event: serde_json::Value =
                serde_json::from_str(m.body().unwrap_or_default()).expect("event");
            if let Some(id) = event["detail"]["id"].as_str() {
                let _ = tx.send(id.to_owned());
            }
            let _ = sqs
                .delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await;
        }
    }
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("bus_latency");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));

    let (tx, rx) = mpsc::unbounded_channel();
    let memory = InMemoryBus::new();
    let handle = rt
        .block_on(memory.subscribe(Subscription::new("bench"), forwarding(tx)))
        .expect("subscribe");
    let rx = tokio::sync::Mutex::new(rx);
    group.bench_function("in_memory/adapter", |b| {
        b.to_async(&rt).iter(|| async {
            let m = message(0);
            let id = m.id.clone();
            memory.publish(vec![m]).await.expect("publish");
            arrival(&mut *rx.lock().await, &id).await;
        })
    });
    rt.block_on(handle.unsubscribe());

    if let Some(bus) = rt.block_on(testkit::fresh_eventbridge_bus_with(
        testkit::unique_eventbridge_config().with_wait_time(Duration::from_secs(20)),
    )) {
        eventbridge_latency(&rt, &mut group, &bus);
    } else {
        eprintln!("SKIPPED bus_latency/eventbridge: no moto_server");
    }
    if let Some(bus) = rt.block_on(testkit::fresh_pubsub_bus()) {
        pubsub_latency(&rt, &mut group, &bus);
    } else {
        eprintln!("SKIPPED bus_latency/pubsub: no Pub/Sub emulator");
    }
    group.finish();
}

fn eventbridge_latency(
    rt: &tokio::runtime::Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bus: &EventBridgeBus,
) {
    let endpoint = testkit::moto_endpoint().expect("moto");
    let raw = testkit::eventbridge_client(endpoint);
    let name = bus.config().bus_name.clone();
    // Two subscriptions with disjoint filters: one consumed by the adapter, one by raw SQS calls.
    let (tx, rx) = mpsc::unbounded_channel();
    let adapter_sub = Subscription::new("latency-adapter")
        .with_filter(eventflow_core::bus::Filter::all().message_type("BenchAdapter"));
    let handle = rt
        .block_on(bus.subscribe(adapter_sub, forwarding(tx)))
        .expect("subscribe");
    let raw_sub = Subscription::new("latency-raw")
        .with_filter(eventflow_core::bus::Filter::all().message_type("BenchRaw"));
    let queue = rt
        .block_on(bus.provision_subscription(&raw_sub))
        .expect("raw subscription");
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let consumer = rt.spawn(raw_sqs_consumer(
        testkit::sqs_client(endpoint),
        queue.url().to_owned(),
        raw_tx,
    ));
    let rx = tokio::sync::Mutex::new(rx);
    let raw_rx = tokio::sync::Mutex::new(raw_rx);
    let adapter_once = || async {
        let mut m = message(0);
        m.message_type = "BenchAdapter".into();
        let id = m.id.clone();
        bus.publish(vec![m]).await.expect("publish");
        arrival(&mut *rx.lock().await, &id).await;
    };
    let raw_once = || async {
        let mut m = message(0);
        m.message_type = "BenchRaw".into();
        let id = m.id.clone();
        raw.put_events()
            .entries(raw_entry(&name, &m))
            .send()
            .await
            .expect("put events");
        arrival(&mut *raw_rx.lock().await, &id).await;
    };
    group.bench_function("eventbridge/adapter", |b| b.to_async(rt).iter(adapter_once));
    group.bench_function("eventbridge/raw_sdk", |b| b.to_async(rt).iter(raw_once));
    rt.block_on(paired(
        "bus_latency_paired/eventbridge",
        Box::new(|| Box::pin(adapter_once())),
        Box::new(|| Box::pin(raw_once())),
    ));
    consumer.abort();
    rt.block_on(handle.unsubscribe());
}

fn pubsub_latency(
    rt: &tokio::runtime::Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bus: &PubSubBus,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let adapter_name = testkit::unique_name("ef-bench-adapter");
    let adapter_sub = Subscription::new(&adapter_name)
        .with_filter(eventflow_core::bus::Filter::all().message_type("BenchAdapter"));
    let handle = rt
        .block_on(bus.subscribe(adapter_sub, forwarding(tx)))
        .expect("subscribe");
    // The raw side: its own subscription, consumed by gcloud-pubsub's streaming subscriber.
    let raw_name = testkit::unique_name("ef-bench-raw");
    rt.block_on(
        bus.provision_subscription(
            &Subscription::new(&raw_name)
                .with_filter(eventflow_core::bus::Filter::all().message_type("BenchRaw")),
        ),
    )
    .expect("raw subscription");
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let raw_subscription = bus.client().subscription(&raw_name);
    let consumer = rt.spawn(async move {
        use futures::StreamExt;
        let mut stream = raw_subscription.subscribe(None).await.expect("stream");
        while let Some(received) = stream.next().await {
            let _ = received.ack().await;
            if let Some(id) = received.message.attributes.get("bench_id") {
                let _ = raw_tx.send(id.clone());
            }
        }
    });
    let publisher = {
        let _runtime = rt.enter();
        bus.client().topic(&bus.config().topic).new_publisher(None)
    };
    let rx = tokio::sync::Mutex::new(rx);
    let raw_rx = tokio::sync::Mutex::new(raw_rx);
    let adapter_once = || async {
        let mut m = message(0);
        m.message_type = "BenchAdapter".into();
        let id = m.id.clone();
        bus.publish(vec![m]).await.expect("publish");
        arrival(&mut *rx.lock().await, &id).await;
    };
    let raw_once = || async {
        let mut m = message(0);
        m.message_type = "BenchRaw".into();
        let id = m.id.clone();
        let mut raw = raw_pubsub(&m);
        raw.attributes.insert("bench_id".into(), id.clone());
        publisher
            .publish_immediately(vec![raw], None)
            .await
            .expect("publish");
        arrival(&mut *raw_rx.lock().await, &id).await;
    };
    // The emulator does not filter: the adapter's subscription also gets the raw messages and
    // acknowledges them unhandled, and the raw consumer gets the adapter's; both sides pay alike.
    group.bench_function("pubsub/adapter", |b| b.to_async(rt).iter(adapter_once));
    group.bench_function("pubsub/raw_sdk", |b| b.to_async(rt).iter(raw_once));
    rt.block_on(paired(
        "bus_latency_paired/pubsub",
        Box::new(|| Box::pin(adapter_once())),
        Box::new(|| Box::pin(raw_once())),
    ));
    consumer.abort();
    rt.block_on(handle.unsubscribe());
}

criterion_group!(benches, publish, latency);
criterion_main!(benches);
