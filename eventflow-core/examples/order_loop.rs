//! The whole loop on in-memory backends: a command decides, its events and their outbox entries are
//! appended atomically, the relay publishes them to the bus, a projection subscribed on the bus
//! builds a read model, and a query reads it.
//!
//! Run: `cargo run -p eventflow-core --example order_loop`
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventflow_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Order {
    placed: bool,
    shipped: bool,
}

enum OrderCommand {
    Place { customer: String, total_cents: u64 },
    Ship,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed { customer: String, total_cents: u64 },
    Shipped,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "OrderPlaced",
            OrderEvent::Shipped => "OrderShipped",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("order already placed")]
    AlreadyPlaced,
    #[error("order not placed yet, or already shipped")]
    CannotShip,
}

impl Aggregate for Order {
    const STREAM_TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place { .. } if self.placed => Err(OrderError::AlreadyPlaced),
            OrderCommand::Place {
                customer,
                total_cents,
            } => Ok(vec![OrderEvent::Placed {
                customer: customer.clone(),
                total_cents: *total_cents,
            }]),
            OrderCommand::Ship if !self.placed || self.shipped => Err(OrderError::CannotShip),
            OrderCommand::Ship => Ok(vec![OrderEvent::Shipped]),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed { .. } => self.placed = true,
            OrderEvent::Shipped => self.shipped = true,
        }
    }
}

/// One row of the read model.
#[derive(Debug, Default)]
struct OrderSummary {
    customer: String,
    total_cents: u64,
    status: &'static str,
}

/// The query side: order summaries keyed by order id.
#[derive(Default)]
struct OrderSummaries {
    rows: Mutex<BTreeMap<String, OrderSummary>>,
}

impl Projection for OrderSummaries {
    type Event = OrderEvent;
    const STREAMS: &'static [&'static str] = &[Order::STREAM_TYPE];

    fn name(&self) -> &str {
        "order-summaries"
    }

    // The framework decodes (and upcasts), skips redeliveries and keeps each stream in order:
    // this is only the read model's own logic.
    async fn apply(
        &self,
        order_id: &str,
        event: &Envelope<OrderEvent>,
    ) -> eventflow_core::Result<()> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let row = rows.entry(order_id.to_owned()).or_default();
        match &event.event {
            OrderEvent::Placed {
                customer,
                total_cents,
            } => {
                row.customer.clone_from(customer);
                row.total_cents = *total_cents;
                row.status = "placed";
            }
            OrderEvent::Shipped => row.status = "shipped",
        }
        Ok(())
    }

    async fn reset(&self) -> eventflow_core::Result<()> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let bus = Arc::new(InMemoryBus::new());
    let orders = Repository::<Order>::new(store.clone()).with_outbox(true);

    // Query side: a projection fed by a bus subscription (progress kept in memory here).
    let summaries = Arc::new(OrderSummaries::default());
    let projector = Arc::new(Projector::new(
        summaries.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    ));
    bus.subscribe(Subscription::new("order-summaries"), projector.clone())
        .await?;
    // Another context reacting to one event type, with the correlation id of the original request.
    bus.subscribe(
        Subscription::new("notify-shipping")
            .with_filter(Filter::all().message_type("OrderShipped")),
        handler_fn(|delivery| async move {
            println!(
                "notification: order {} shipped (correlation id {})",
                delivery.message.ordering_key.as_deref().unwrap_or("?"),
                delivery.message.correlation_id().unwrap_or("-"),
            );
            Ok::<(), HandlerError>(())
        }),
    )
    .await?;

    // Command side: each append writes the events and their outbox entries atomically.
    let ctx = || CommandContext::new().with_correlation_id("req-7f3a");
    let place = |customer: &str, total_cents| OrderCommand::Place {
        customer: customer.into(),
        total_cents,
    };
    orders.execute("1001", &place("ada", 4_250), ctx()).await?;
    let second = orders.execute("1002", &place("brian", 990), ctx()).await?;
    let shipped = orders.execute("1001", &OrderCommand::Ship, ctx()).await?;
    if let Err(refused) = orders.execute("1002", &place("brian", 1), ctx()).await {
        println!("refused as expected: {refused}");
    }

    // The relay publishes the outbox to the bus (in a service it runs in the background).
    let relay = OutboxRelay::new(store.clone(), bus.clone(), "ordering");
    println!("relayed {} events", relay.relay_pending().await?);

    // Delivery is asynchronous: read your own write by waiting for the projection to reach the
    // version the command returned.
    for (stream, version) in [
        (&shipped.stream_id, shipped.version),
        (&second.stream_id, second.version),
    ] {
        let caught_up = projector
            .wait_for(stream, version, Duration::from_secs(5))
            .await?;
        assert!(caught_up, "the projection received every event");
    }
    let rows = summaries.rows.lock().unwrap_or_else(|e| e.into_inner());
    for (order_id, row) in rows.iter() {
        println!(
            "order {order_id}: {} {} cents, {}",
            row.customer, row.total_cents, row.status
        );
    }
    Ok(())
}
