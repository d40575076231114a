//! Sagas completed per second in one process: eventflow-saga's orchestrator on the in-memory store
//! and bus, PlaceOrder-shaped (4 steps), with trivial participants that answer at once.
//!
//! - `saga/completed`: every step succeeds (8 bus messages, 7 appends per saga).
//! - `saga/compensated_at_step_3`: CreateShipment fails, so CancelPayment, ReleaseInventory and
//!   CancelOrder run (12 bus messages per saga).
//! - baselines, same run: `relay/*` sends the same commands and replies over the same bus with a
//!   stateless relay (no store, no state machine), so the ratio is the cost of durable sagas.
//!
//! Each measurement starts `iters` sagas on a fresh store, bus and orchestrator and waits until
//! every one has ended; throughput is in sagas per second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventflow_core::bus::{Delivery, HandlerError, handler_fn};
use eventflow_core::{
    EventBus, Filter, InMemoryBus, InMemoryEventStore, Message, Metadata, Subscription,
};
use eventflow_saga::testkit::place_order;
use eventflow_saga::{
    Backoff, CommandKind, DEFAULT_TIMEOUT, Orchestrator, SagaCommand, SagaDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    quantity: u32,
    amount_cents: u64,
    address: String,
}

/// The seed's PlaceOrder saga (eventflow-saga's fixture).
fn definition() -> SagaDefinition {
    place_order(DEFAULT_TIMEOUT, Backoff::default())
}

/// Every command the saga sends (steps, compensations, the final one) with its success reply.
fn success_replies() -> HashMap<String, String> {
    let definition = definition();
    definition
        .steps
        .iter()
        .flat_map(|step| std::iter::once(&step.action).chain(&step.compensation))
        .chain(&definition.on_compensated)
        .map(|command| (command.command.clone(), command.success[0].clone()))
        .collect()
}

fn order(i: u64) -> Order {
    Order {
        order_id: format!("order-{i}"),
        sku: "sku-1".into(),
        quantity: 1,
        amount_cents: 42_00,
        address: "1 Main St".into(),
    }
}

/// Participants that answer at once: success, except CreateShipment when `fail_shipment`.
async fn subscribe_participants(bus: &Arc<InMemoryBus>, fail_shipment: bool) {
    let replies = Arc::clone(bus);
    let success = Arc::new(success_replies());
    let filter = success.keys().fold(Filter::all(), |f, c| f.message_type(c));
    let handler = handler_fn(move |delivery: Delivery| {
        let bus = Arc::clone(&replies);
        let success = Arc::clone(&success);
        async move {
            let command = SagaCommand::from_message(&delivery.message)?;
            let reply = if fail_shipment
                && command.kind == CommandKind::Action
                && command.command_type == "CreateShipment"
            {
                command.failure_reply("ShipmentFailed", "shipping", "no courier")
            } else {
                command.success_reply(
                    &success[&command.command_type],
                    "participants",
                    json!({ "ok": true }),
                )
            };
            bus.publish(vec![reply]).await?;
            Ok::<(), HandlerError>(())
        }
    });
    bus.subscribe(
        Subscription::new("participants")
            .with_filter(filter)
            .with_max_in_flight(64),
        handler,
    )
    .await
    .expect("subscribe participants");
}

async fn run_sagas(n: u64, fail_shipment: bool) -> Duration {
    let store = Arc::new(InMemoryEventStore::new());
    let bus = Arc::new(InMemoryBus::new());
    subscribe_participants(&bus, fail_shipment).await;
    let orchestrator = Orchestrator::<Order>::builder(definition(), store, bus.clone())
        .build()
        .expect("orchestrator");
    let subscription = bus
        .subscribe(
            orchestrator.subscription().with_max_in_flight(64),
            Arc::new(orchestrator.clone()),
        )
        .await
        .expect("subscribe orchestrator");
    let started = Instant::now();
    for i in 0..n {
        let order = order(i);
        orchestrator
            .start(&order.order_id, &order, Metadata::new())
            .await
            .expect("start");
    }
    orchestrator.wait_finished(n).await;
    let elapsed = started.elapsed();
    let stats = orchestrator.stats();
    let expected = if fail_shipment {
        stats.compensated
    } else {
        stats.completed
    };
    assert_eq!(expected, n, "{stats:?}");
    subscription.unsubscribe().await;
    elapsed
}

/// The baseline: the same commands and replies over the same bus, relayed by a stateless handler
/// (no store, no state machine, no timers).
async fn run_relay(n: u64, fail_shipment: bool) -> Duration {
    let bus = Arc::new(InMemoryBus::new());
    subscribe_participants(&bus, fail_shipment).await;
    let done = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let (relay_bus, relay_done, relay_notify) = (bus.clone(), done.clone(), notify.clone());
    let relay = handler_fn(move |delivery: Delivery| {
        let (bus, done, notify) = (relay_bus.clone(), relay_done.clone(), relay_notify.clone());
        async move {
            let reply = &delivery.message;
            let saga_id = reply.attribute("saga-id").unwrap_or_default().to_owned();
            let next: Option<(&str, &str, CommandKind)> = match reply.message_type.as_str() {
                "InventoryReserved" => {
                    Some(("AuthorizePayment", "AuthorizePayment", CommandKind::Action))
                }
                "PaymentAuthorized" => {
                    Some(("CreateShipment", "CreateShipment", CommandKind::Action))
                }
                "ShipmentCreated" => Some(("CompleteOrder", "CompleteOrder", CommandKind::Action)),
                "ShipmentFailed" => Some((
                    "CancelPayment",
                    "AuthorizePayment",
                    CommandKind::Compensation,
                )),
                "PaymentCancelled" => Some((
                    "ReleaseInventory",
                    "ReserveInventory",
                    CommandKind::Compensation,
                )),
                "InventoryReleased" => Some(("CancelOrder", "CancelOrder", CommandKind::Final)),
                _ => None,
            };
            match next {
                Some((command, step, kind)) => {
                    bus.publish(vec![command_message(&saga_id, command, step, kind)])
                        .await?;
                }
                None => {
                    done.fetch_add(1, Ordering::Relaxed);
                    notify.notify_waiters();
                }
            }
            Ok::<(), HandlerError>(())
        }
    });
    let replies = [
        "InventoryReserved",
        "PaymentAuthorized",
        "ShipmentCreated",
        "OrderCompletionRecorded",
        "ShipmentFailed",
        "PaymentCancelled",
        "InventoryReleased",
        "OrderCancellationRecorded",
    ]
    .into_iter()
    .fold(Filter::all(), Filter::message_type);
    let subscription = bus
        .subscribe(
            Subscription::new("relay")
                .with_filter(replies)
                .with_max_in_flight(64),
            relay,
        )
        .await
        .expect("subscribe relay");
    let started = Instant::now();
    for i in 0..n {
        let message = command_message(
            &format!("order-{i}"),
            "ReserveInventory",
            "ReserveInventory",
            CommandKind::Action,
        );
        bus.publish(vec![message]).await.expect("publish");
    }
    loop {
        let notified = notify.notified();
        if done.load(Ordering::Relaxed) >= n {
            break;
        }
        notified.await;
    }
    let elapsed = started.elapsed();
    subscription.unsubscribe().await;
    elapsed
}

/// A command shaped like the orchestrator's (same payload and attributes).
fn command_message(saga_id: &str, command: &str, step: &str, kind: CommandKind) -> Message {
    let i: u64 = saga_id.trim_start_matches("order-").parse().unwrap_or(0);
    let key = eventflow_saga::idempotency_key("PlaceOrder", saga_id, step, kind);
    Message::new(
        command,
        "relay",
        json!({
            "sagaId": saga_id, "sagaType": "PlaceOrder", "step": step, "kind": kind,
            "attempt": 1, "idempotencyKey": key, "data": order(i),
        }),
    )
    .with_id(format!("{key}#1"))
    .with_attribute("saga-id", saga_id)
    .with_attribute("saga-type", "PlaceOrder")
    .with_attribute("saga-step", step)
    .with_attribute("saga-kind", kind.as_str())
    .with_attribute("saga-attempt", "1")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("saga");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("completed", |b| {
        b.to_async(&runtime).iter_custom(|n| run_sagas(n, false));
    });
    group.bench_function("compensated_at_step_3", |b| {
        b.to_async(&runtime).iter_custom(|n| run_sagas(n, true));
    });
    group.finish();

    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("completed", |b| {
        b.to_async(&runtime).iter_custom(|n| run_relay(n, false));
    });
    group.bench_function("compensated_at_step_3", |b| {
        b.to_async(&runtime).iter_custom(|n| run_relay(n, true));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
