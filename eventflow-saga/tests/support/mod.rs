//! Shared test support: the PlaceOrder saga, four participant aggregates (inventory, payment,
//! shipping, ordering) wrapped by the real `Participant` helper, and fault hooks.

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod moto;

use std::collections::BTreeMap;
use std::sync::Arc;

#[allow(unused_imports)] // Not every test binary waits.
pub use eventflow_core::testkit::wait_until;
use eventflow_core::{
    Aggregate, DomainEvent, EventBus, EventStore, MessageHandler, Repository, Subscription,
};
use eventflow_saga::{Participant, Refusal, SagaCommand};
use serde::{Deserialize, Serialize};

/// The saga data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrder {
    pub order_id: String,
    pub items: Vec<Item>,
    pub amount_cents: i64,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
}

impl PlaceOrder {
    pub fn new(order_id: &str, quantity: i64, amount_cents: i64) -> Self {
        PlaceOrder {
            order_id: order_id.to_owned(),
            items: vec![Item {
                sku: "sku-1".into(),
                quantity,
            }],
            amount_cents,
            address: "1 Main St".into(),
        }
    }
}

pub use eventflow_saga::testkit::{PLACE_ORDER_STEPS, place_order};

// ---------------------------------------------------------------------------------------------
// Aggregates. Deliberately naive: nothing in them guards against a command applied twice, so any
// double effect would show. Idempotency comes from the Participant wrapper.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One warehouse holding every SKU (stream `warehouse-main`).
#[derive(Debug, Default, Clone)]
pub struct Warehouse {
    pub stock: BTreeMap<String, i64>,
    pub reservations: BTreeMap<String, Vec<Item>>,
}

pub enum WarehouseCommand {
    Restock(Vec<Item>),
    Reserve { order_id: String, items: Vec<Item> },
    Release { order_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WarehouseEvent {
    Restocked { items: Vec<Item> },
    Reserved { order_id: String, items: Vec<Item> },
    Released { order_id: String, items: Vec<Item> },
}

impl DomainEvent for WarehouseEvent {
    fn event_type(&self) -> &'static str {
        match self {
            WarehouseEvent::Restocked { .. } => "Restocked",
            WarehouseEvent::Reserved { .. } => "StockReserved",
            WarehouseEvent::Released { .. } => "StockReleased",
        }
    }
}

impl Aggregate for Warehouse {
    const STREAM_TYPE: &'static str = "warehouse";
    type Command = WarehouseCommand;
    type Event = WarehouseEvent;
    type Error = Refused;

    fn handle(&self, command: &WarehouseCommand) -> Result<Vec<WarehouseEvent>, Refused> {
        match command {
            WarehouseCommand::Restock(items) => Ok(vec![WarehouseEvent::Restocked {
                items: items.clone(),
            }]),
            WarehouseCommand::Reserve { order_id, items } => {
                for item in items {
                    let available = self.stock.get(&item.sku).copied().unwrap_or(0);
                    if available < item.quantity {
                        return Err(Refused(format!(
                            "only {available} of {} in stock",
                            item.sku
                        )));
                    }
                }
                Ok(vec![WarehouseEvent::Reserved {
                    order_id: order_id.clone(),
                    items: items.clone(),
                }])
            }
            WarehouseCommand::Release { order_id } => match self.reservations.get(order_id) {
                Some(items) => Ok(vec![WarehouseEvent::Released {
                    order_id: order_id.clone(),
                    items: items.clone(),
                }]),
                None => Ok(vec![]),
            },
        }
    }

    fn apply(&mut self, event: &WarehouseEvent) {
        match event {
            WarehouseEvent::Restocked { items } => {
                for i in items {
                    *self.stock.entry(i.sku.clone()).or_default() += i.quantity;
                }
            }
            WarehouseEvent::Reserved { order_id, items } => {
                for i in items {
                    *self.stock.entry(i.sku.clone()).or_default() -= i.quantity;
                }
                self.reservations.insert(order_id.clone(), items.clone());
            }
            WarehouseEvent::Released { order_id, items } => {
                for i in items {
                    *self.stock.entry(i.sku.clone()).or_default() += i.quantity;
                }
                self.reservations.remove(order_id);
            }
        }
    }
}

/// A payment per order (stream `payment-{order}`). Captured once the order completes (a reaction
/// outside the saga, as the commerce app's payment context does); a captured payment cannot be
/// cancelled.
#[derive(Debug, Default, Clone)]
pub struct Payment {
    pub authorized: i64,
    pub captured: i64,
}

pub enum PaymentCommand {
    Authorize { amount: i64, limit: i64 },
    Cancel,
    Capture,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    Authorized { amount: i64 },
    Cancelled { amount: i64 },
    Captured { amount: i64 },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::Authorized { .. } => "PaymentAuthorized",
            PaymentEvent::Cancelled { .. } => "PaymentCancelled",
            PaymentEvent::Captured { .. } => "PaymentCaptured",
        }
    }
}

impl Aggregate for Payment {
    const STREAM_TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = Refused;

    fn handle(&self, command: &PaymentCommand) -> Result<Vec<PaymentEvent>, Refused> {
        match command {
            PaymentCommand::Authorize { amount, limit } if amount > limit => {
                Err(Refused(format!("card declined: {amount} > limit {limit}")))
            }
            PaymentCommand::Authorize { amount, .. } => {
                Ok(vec![PaymentEvent::Authorized { amount: *amount }])
            }
            PaymentCommand::Cancel if self.captured > 0 => Err(Refused(format!(
                "{} cents were captured: a captured payment cannot be cancelled",
                self.captured
            ))),
            PaymentCommand::Cancel if self.authorized > 0 => Ok(vec![PaymentEvent::Cancelled {
                amount: self.authorized,
            }]),
            PaymentCommand::Cancel => Ok(vec![]),
            PaymentCommand::Capture if self.authorized > 0 && self.captured == 0 => {
                Ok(vec![PaymentEvent::Captured {
                    amount: self.authorized,
                }])
            }
            PaymentCommand::Capture => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::Authorized { amount } => self.authorized += amount,
            PaymentEvent::Cancelled { amount } => self.authorized -= amount,
            PaymentEvent::Captured { amount } => self.captured += amount,
        }
    }
}

/// The payment context's reaction to an order's completion, outside the saga: it captures the
/// authorized amount (once: the capture is idempotent per order). Subscribed to ordering's
/// `OrderCompletionRecorded`, the pivot's success (the commerce app reacts to the `OrderCompleted`
/// event the same step records; this fixture has no outbox).
pub struct CaptureOnCompletion {
    pub payments: Repository<Payment>,
}

impl CaptureOnCompletion {
    pub fn subscription() -> Subscription {
        Subscription::new("capture-on-completion")
            .with_filter(eventflow_core::Filter::all().message_type("OrderCompletionRecorded"))
    }
}

#[async_trait::async_trait]
impl MessageHandler for CaptureOnCompletion {
    async fn handle(
        &self,
        delivery: eventflow_core::Delivery,
    ) -> Result<(), eventflow_core::bus::HandlerError> {
        let Some(order) = delivery
            .message
            .attribute(eventflow_saga::message::attributes::SAGA_ID)
        else {
            return Ok(());
        };
        let context =
            eventflow_core::CommandContext::new().with_idempotency_key(format!("capture/{order}"));
        match self
            .payments
            .execute(order, &PaymentCommand::Capture, context)
            .await
        {
            Ok(_) => Ok(()),
            Err(eventflow_core::CommandError::Rejected(_)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// A shipment per order (stream `shipment-{order}`).
#[derive(Debug, Default, Clone)]
pub struct Shipment {
    pub active: i64,
}

pub enum ShipmentCommand {
    Create { address: String },
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShipmentEvent {
    Created { address: String },
    Cancelled,
}

impl DomainEvent for ShipmentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ShipmentEvent::Created { .. } => "ShipmentCreated",
            ShipmentEvent::Cancelled => "ShipmentCancelled",
        }
    }
}

impl Aggregate for Shipment {
    const STREAM_TYPE: &'static str = "shipment";
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type Error = Refused;

    fn handle(&self, command: &ShipmentCommand) -> Result<Vec<ShipmentEvent>, Refused> {
        match command {
            ShipmentCommand::Create { address } if address.is_empty() => {
                Err(Refused("no address".into()))
            }
            ShipmentCommand::Create { address } => Ok(vec![ShipmentEvent::Created {
                address: address.clone(),
            }]),
            ShipmentCommand::Cancel if self.active > 0 => Ok(vec![ShipmentEvent::Cancelled]),
            ShipmentCommand::Cancel => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &ShipmentEvent) {
        match event {
            ShipmentEvent::Created { .. } => self.active += 1,
            ShipmentEvent::Cancelled => self.active -= 1,
        }
    }
}

/// The order's own fate (stream `order-{order}`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Order {
    pub completed: bool,
    pub cancelled: bool,
}

pub enum OrderCommand {
    Complete,
    Cancel { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    Completed,
    Cancelled { reason: String },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Completed => "OrderCompleted",
            OrderEvent::Cancelled { .. } => "OrderCancelled",
        }
    }
}

impl Aggregate for Order {
    const STREAM_TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = Refused;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, Refused> {
        match command {
            OrderCommand::Complete if self.cancelled => Err(Refused("order is cancelled".into())),
            OrderCommand::Complete => Ok(vec![OrderEvent::Completed]),
            OrderCommand::Cancel { reason } => Ok(vec![OrderEvent::Cancelled {
                reason: reason.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Completed => self.completed = true,
            OrderEvent::Cancelled { .. } => self.cancelled = true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Participants.
// ---------------------------------------------------------------------------------------------

/// Fault hooks the participants consult (per order and step).
pub trait ShopFaults: Send + Sync + 'static {
    /// Refuse the action of `step` for `order` with this reason.
    fn refuse(&self, _order: &str, _step: &str) -> Option<String> {
        None
    }
    /// Fail this attempt of the compensation (or final command) of `step` for `order`.
    fn fail_compensation(&self, _order: &str, _step: &str) -> bool {
        false
    }
}

/// No faults.
pub struct NoFaults;
impl ShopFaults for NoFaults {}

/// Payment limit above which cards are declined.
pub const CARD_LIMIT: i64 = 10_000;

/// The four participants' stores.
#[derive(Clone)]
pub struct ShopStores {
    pub inventory: Arc<dyn EventStore>,
    pub payments: Arc<dyn EventStore>,
    pub shipping: Arc<dyn EventStore>,
    pub ordering: Arc<dyn EventStore>,
}

fn data(command: &SagaCommand) -> Result<PlaceOrder, Refusal> {
    command.data::<PlaceOrder>().map_err(Refusal::from)
}

fn check(
    faults: &Arc<dyn ShopFaults>,
    command: &SagaCommand,
    order: &PlaceOrder,
) -> Result<(), Refusal> {
    match command.kind {
        eventflow_saga::CommandKind::Action => {
            match faults.refuse(&order.order_id, &command.step) {
                Some(reason) => Err(Refusal(reason)),
                None => Ok(()),
            }
        }
        _ => {
            if faults.fail_compensation(&order.order_id, &command.step) {
                Err(Refusal(format!(
                    "{} is temporarily unavailable",
                    command.step
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// The four participants, typed.
pub struct Shop {
    pub inventory: Participant<Warehouse>,
    pub payments: Participant<Payment>,
    pub shipping: Participant<Shipment>,
    pub ordering: Participant<Order>,
}

impl Shop {
    /// Runs a command on whichever participant handles it (no bus involved).
    pub async fn execute(
        &self,
        command: &SagaCommand,
    ) -> eventflow_saga::Result<Option<eventflow_saga::ParticipantReply>> {
        if let Some(r) = self.inventory.execute(command).await? {
            return Ok(Some(r));
        }
        if let Some(r) = self.payments.execute(command).await? {
            return Ok(Some(r));
        }
        if let Some(r) = self.shipping.execute(command).await? {
            return Ok(Some(r));
        }
        self.ordering.execute(command).await
    }

    /// As (subscription, handler) pairs for a bus.
    pub fn handlers(self) -> Vec<(Subscription, Arc<dyn MessageHandler>)> {
        vec![
            (
                self.inventory.subscription(),
                Arc::new(self.inventory) as Arc<dyn MessageHandler>,
            ),
            (self.payments.subscription(), Arc::new(self.payments)),
            (self.shipping.subscription(), Arc::new(self.shipping)),
            (self.ordering.subscription(), Arc::new(self.ordering)),
        ]
    }
}

/// The four participants, as (subscription, handler) pairs.
pub fn participants(
    stores: &ShopStores,
    bus: &Arc<dyn EventBus>,
    faults: &Arc<dyn ShopFaults>,
) -> Vec<(Subscription, Arc<dyn MessageHandler>)> {
    shop(stores, bus, faults).handlers()
}

/// The four participants over `stores`, replying on `bus`, with `faults`.
pub fn shop(stores: &ShopStores, bus: &Arc<dyn EventBus>, faults: &Arc<dyn ShopFaults>) -> Shop {
    let f = Arc::clone(faults);
    let g = Arc::clone(faults);
    let inventory = Participant::new(
        "inventory",
        Repository::<Warehouse>::new(Arc::clone(&stores.inventory)),
        Arc::clone(bus),
    )
    .handles(
        "ReserveInventory",
        "InventoryReserved",
        "InventoryReservationFailed",
        move |c| {
            let order = data(c)?;
            check(&f, c, &order)?;
            Ok((
                "main".into(),
                WarehouseCommand::Reserve {
                    order_id: order.order_id,
                    items: order.items,
                },
            ))
        },
    )
    .handles(
        "ReleaseInventory",
        "InventoryReleased",
        "InventoryReleaseFailed",
        move |c| {
            let order = data(c)?;
            check(&g, c, &order)?;
            Ok((
                "main".into(),
                WarehouseCommand::Release {
                    order_id: order.order_id,
                },
            ))
        },
    );
    let (f, g) = (Arc::clone(faults), Arc::clone(faults));
    let payments = Participant::new(
        "payments",
        Repository::<Payment>::new(Arc::clone(&stores.payments)),
        Arc::clone(bus),
    )
    .handles(
        "AuthorizePayment",
        "PaymentAuthorized",
        "PaymentDeclined",
        move |c| {
            let order = data(c)?;
            check(&f, c, &order)?;
            Ok((
                order.order_id,
                PaymentCommand::Authorize {
                    amount: order.amount_cents,
                    limit: CARD_LIMIT,
                },
            ))
        },
    )
    .handles(
        "CancelPayment",
        "PaymentCancelled",
        "PaymentCancellationFailed",
        move |c| {
            let order = data(c)?;
            check(&g, c, &order)?;
            Ok((order.order_id, PaymentCommand::Cancel))
        },
    );
    let (f, g) = (Arc::clone(faults), Arc::clone(faults));
    let shipping = Participant::new(
        "shipping",
        Repository::<Shipment>::new(Arc::clone(&stores.shipping)),
        Arc::clone(bus),
    )
    .handles(
        "CreateShipment",
        "ShipmentCreated",
        "ShipmentFailed",
        move |c| {
            let order = data(c)?;
            check(&f, c, &order)?;
            Ok((
                order.order_id,
                ShipmentCommand::Create {
                    address: order.address,
                },
            ))
        },
    )
    .handles(
        "CancelShipment",
        "ShipmentCancelled",
        "ShipmentCancellationFailed",
        move |c| {
            let order = data(c)?;
            check(&g, c, &order)?;
            Ok((order.order_id, ShipmentCommand::Cancel))
        },
    );
    let (f, g) = (Arc::clone(faults), Arc::clone(faults));
    let ordering = Participant::new(
        "ordering",
        Repository::<Order>::new(Arc::clone(&stores.ordering)),
        Arc::clone(bus),
    )
    .handles(
        "CompleteOrder",
        "OrderCompletionRecorded",
        "OrderCompletionFailed",
        move |c| {
            let order = data(c)?;
            check(&f, c, &order)?;
            Ok((order.order_id, OrderCommand::Complete))
        },
    )
    .handles(
        "CancelOrder",
        "OrderCancellationRecorded",
        "OrderCancellationFailed",
        move |c| {
            let order = data(c)?;
            check(&g, c, &order)?;
            let reason = match &c.reason {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Ok((order.order_id, OrderCommand::Cancel { reason }))
        },
    );
    Shop {
        inventory,
        payments,
        shipping,
        ordering,
    }
}

/// Loads an aggregate's state directly from a store.
pub async fn load<A: Aggregate>(store: &Arc<dyn EventStore>, id: &str) -> A {
    Repository::<A>::new(Arc::clone(store))
        .load(id)
        .await
        .expect("load aggregate")
        .state
}
