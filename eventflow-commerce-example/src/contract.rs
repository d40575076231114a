//! The published language: the messages contexts exchange over the bus, and the PlaceOrder saga.
//! A context's own events stay in its `domain`; what crosses a boundary is defined here once,
//! so producer and consumers cannot drift apart.

use std::time::Duration;

use eventflow_core::DomainEvent;
use eventflow_saga::{Backoff, SagaDefinition};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Event types on the bus.
pub(crate) mod events {
    /// Identity: a customer registered, with the address notifications go to.
    pub(crate) const CUSTOMER_REGISTERED: &str = "CustomerRegistered";
    /// Catalog: a product was listed (price and name). Ordering keeps its own price list from it.
    pub(crate) const PRODUCT_LISTED: &str = "ProductListed";
    /// Ordering: an order was placed. Starts the PlaceOrder saga.
    pub(crate) const ORDER_PLACED: &str = "OrderPlaced";
    /// Ordering: the saga completed the order. Payment captures; notification confirms.
    pub(crate) const ORDER_COMPLETED: &str = "OrderCompleted";
    /// Ordering: the saga cancelled the order. Notification tells the customer.
    pub(crate) const ORDER_CANCELLED: &str = "OrderCancelled";
}

/// The stream types published events come from: a consumer's projection reads these streams,
/// the producer's aggregate writes them.
pub(crate) mod streams {
    /// Identity's published customers (`customer-{customerId}`).
    pub(crate) const CUSTOMER: &str = "customer";
    /// The catalog's products (`product-{id}`).
    pub(crate) const PRODUCT: &str = "product";
    /// Ordering's orders (`order-{id}`).
    pub(crate) const ORDER: &str = "order";
}

/// What consumers read of identity's events: `CustomerRegistered` (never a password or its hash,
/// which stay in identity's own user streams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum IdentityFact {
    CustomerRegistered(CustomerRegistered),
}

impl DomainEvent for IdentityFact {
    fn event_type(&self) -> &'static str {
        events::CUSTOMER_REGISTERED
    }
}

/// `CustomerRegistered`'s payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerRegistered {
    pub(crate) customer_id: String,
    /// Where the customer's notifications go.
    pub(crate) email: String,
}

/// What consumers read of the catalog's events: `ProductListed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum CatalogFact {
    ProductListed(ProductListed),
}

impl DomainEvent for CatalogFact {
    fn event_type(&self) -> &'static str {
        events::PRODUCT_LISTED
    }
}

/// What consumers read of an order's outcome: `OrderCompleted` or `OrderCancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum OrderOutcome {
    OrderCompleted(OrderSettled),
    OrderCancelled(OrderSettled),
}

impl OrderOutcome {
    /// The order it settled.
    pub(crate) fn order(&self) -> &OrderSettled {
        match self {
            OrderOutcome::OrderCompleted(order) | OrderOutcome::OrderCancelled(order) => order,
        }
    }
}

impl DomainEvent for OrderOutcome {
    fn event_type(&self) -> &'static str {
        match self {
            OrderOutcome::OrderCompleted(_) => events::ORDER_COMPLETED,
            OrderOutcome::OrderCancelled(_) => events::ORDER_CANCELLED,
        }
    }
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Address {
    #[schema(
        example = "123 Main St",
        min_length = 1,
        max_length = 200,
        pattern = r"\S"
    )]
    pub(crate) street: String,
    #[schema(example = "Seattle", min_length = 1, max_length = 200, pattern = r"\S")]
    pub(crate) city: String,
    #[schema(example = "WA", min_length = 1, max_length = 200, pattern = r"\S")]
    pub(crate) state: String,
    /// `00000` is undeliverable: shipping fails the saga's third step.
    #[schema(example = "98101", min_length = 1, max_length = 200, pattern = r"\S")]
    pub(crate) zip: String,
    /// Optional: `US` when absent (the specification's own example sends none).
    #[schema(
        example = "US",
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        default = "US"
    )]
    #[serde(default = "default_country")]
    pub(crate) country: String,
}

/// The country of an address that names none.
fn default_country() -> String {
    "US".to_owned()
}

/// One line of a placed order, priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderLine {
    pub(crate) product_id: String,
    pub(crate) quantity: u32,
    pub(crate) unit_price_cents: u64,
}

/// `OrderPlaced`'s payload, and the PlaceOrder saga's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlacedOrder {
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    pub(crate) items: Vec<OrderLine>,
    pub(crate) total_cents: u64,
    pub(crate) shipping_address: Address,
}

/// The payload fields `OrderCompleted` and `OrderCancelled` share with their consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderSettled {
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// `ProductListed`'s payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProductListed {
    pub(crate) product_id: String,
    pub(crate) name: String,
    pub(crate) price_cents: u64,
    pub(crate) currency: String,
}

/// The seed's customers every context agrees on: identity registers them (login, customer id),
/// ordering is ready once they arrived.
pub(crate) const SEED_CUSTOMERS: [(&str, &str); 3] = [
    ("user@example.com", "customer-1"),
    ("other@example.com", "customer-2"),
    ("operator@example.com", "operator-1"),
];

/// The demo data every context agrees on: the catalog lists these products, inventory stocks
/// them, ordering is ready once their prices arrived. Id, name, price in cents, stock.
pub(crate) const SEED_PRODUCTS: [(&str, &str, u64, u64); 5] = [
    ("prod-1", "Mechanical Keyboard", 8_999, 100),
    ("prod-2", "4K Monitor", 39_900, 50),
    ("prod-3", "USB-C Hub", 4_950, 200),
    ("prod-4", "Noise-Cancelling Headphones", 24_999, 30),
    ("prod-5", "Limited Edition Poster", 1_999, 5),
];

/// Saga command and reply types of PlaceOrder.
pub(crate) mod saga {
    pub(crate) const NAME: &str = "PlaceOrder";
    pub(crate) const RESERVE_INVENTORY: &str = "ReserveInventory";
    pub(crate) const INVENTORY_RESERVED: &str = "InventoryReserved";
    pub(crate) const INVENTORY_RESERVATION_FAILED: &str = "InventoryReservationFailed";
    pub(crate) const RELEASE_INVENTORY: &str = "ReleaseInventory";
    pub(crate) const INVENTORY_RELEASED: &str = "InventoryReleased";
    pub(crate) const INVENTORY_RELEASE_FAILED: &str = "InventoryReleaseFailed";
    pub(crate) const AUTHORIZE_PAYMENT: &str = "AuthorizePayment";
    pub(crate) const PAYMENT_AUTHORIZED: &str = "PaymentAuthorized";
    pub(crate) const PAYMENT_DECLINED: &str = "PaymentDeclined";
    pub(crate) const CANCEL_PAYMENT: &str = "CancelPayment";
    pub(crate) const PAYMENT_CANCELLED: &str = "PaymentCancelled";
    pub(crate) const PAYMENT_CANCELLATION_FAILED: &str = "PaymentCancellationFailed";
    pub(crate) const CREATE_SHIPMENT: &str = "CreateShipment";
    pub(crate) const SHIPMENT_CREATED: &str = "ShipmentCreated";
    pub(crate) const SHIPMENT_FAILED: &str = "ShipmentFailed";
    pub(crate) const CANCEL_SHIPMENT: &str = "CancelShipment";
    pub(crate) const SHIPMENT_CANCELLED: &str = "ShipmentCancelled";
    pub(crate) const SHIPMENT_CANCELLATION_FAILED: &str = "ShipmentCancellationFailed";
    pub(crate) const COMPLETE_ORDER: &str = "CompleteOrder";
    /// Reply names differ from the `OrderCompleted` event the completion records, which other
    /// contexts subscribe to.
    pub(crate) const ORDER_COMPLETION_RECORDED: &str = "OrderCompletionRecorded";
    pub(crate) const ORDER_COMPLETION_FAILED: &str = "OrderCompletionFailed";
    pub(crate) const CANCEL_ORDER: &str = "CancelOrder";
    pub(crate) const ORDER_CANCELLATION_RECORDED: &str = "OrderCancellationRecorded";
    pub(crate) const ORDER_CANCELLATION_FAILED: &str = "OrderCancellationFailed";
}

/// How a PlaceOrder step is resent after a deadline: 1 s doubling to 30 s between sends.
const RESEND_FIRST_WAIT: Duration = Duration::from_secs(1);
const RESEND_LONGEST_WAIT: Duration = Duration::from_secs(30);

/// PlaceOrder: reserve inventory, authorize payment, create the shipment, complete the order. A
/// failed step undoes the steps before it in reverse order, then the order is cancelled.
///
/// Each send waits `step_timeout` for its reply; a step is sent `step_sends` times (the same
/// command, which participants answer from what they recorded) before it fails. CompleteOrder is
/// the pivot: once it is sent the saga never compensates (it is resent until ordering answers),
/// so payment may capture on `OrderCompleted`.
pub(crate) fn place_order(step_timeout: Duration, step_sends: u32) -> SagaDefinition {
    use saga::*;
    let resend = Backoff::new(step_sends, RESEND_FIRST_WAIT, RESEND_LONGEST_WAIT);
    SagaDefinition::builder(NAME)
        .triggered_by(events::ORDER_PLACED)
        .step(RESERVE_INVENTORY, |s| {
            s.on_success(INVENTORY_RESERVED)
                .on_failure(INVENTORY_RESERVATION_FAILED)
                .timeout(step_timeout)
                .resend(resend)
                .compensate_with(RELEASE_INVENTORY, |c| {
                    c.on_success(INVENTORY_RELEASED)
                        .on_failure(INVENTORY_RELEASE_FAILED)
                })
        })
        .step(AUTHORIZE_PAYMENT, |s| {
            s.on_success(PAYMENT_AUTHORIZED)
                .on_failure(PAYMENT_DECLINED)
                .timeout(step_timeout)
                .resend(resend)
                .compensate_with(CANCEL_PAYMENT, |c| {
                    c.on_success(PAYMENT_CANCELLED)
                        .on_failure(PAYMENT_CANCELLATION_FAILED)
                })
        })
        .step(CREATE_SHIPMENT, |s| {
            s.on_success(SHIPMENT_CREATED)
                .on_failure(SHIPMENT_FAILED)
                .timeout(step_timeout)
                .resend(resend)
                .compensate_with(CANCEL_SHIPMENT, |c| {
                    c.on_success(SHIPMENT_CANCELLED)
                        .on_failure(SHIPMENT_CANCELLATION_FAILED)
                })
        })
        .step(COMPLETE_ORDER, |s| {
            s.on_success(ORDER_COMPLETION_RECORDED)
                .on_failure(ORDER_COMPLETION_FAILED)
                .timeout(step_timeout)
                .resend(resend)
                .pivot()
        })
        .on_compensated(CANCEL_ORDER, |c| {
            c.on_success(ORDER_CANCELLATION_RECORDED)
                .on_failure(ORDER_CANCELLATION_FAILED)
                .timeout(step_timeout)
        })
        .build()
        .unwrap_or_else(|e| unreachable!("PlaceOrder is a valid definition: {e}"))
}

/// The order a PlaceOrder saga command carries.
pub(crate) fn order_of(
    command: &eventflow_saga::SagaCommand,
) -> Result<PlacedOrder, eventflow_saga::Refusal> {
    command
        .data::<PlacedOrder>()
        .map_err(|e| eventflow_saga::Refusal(format!("not a PlaceOrder saga command: {e}")))
}

#[cfg(test)]
mod tests {
    use eventflow_saga::{Backoff, SagaDefinition};

    /// Every command of a definition, in order, with its success and failure replies.
    fn names(definition: &SagaDefinition) -> Vec<(String, Vec<String>, Vec<String>)> {
        definition
            .steps
            .iter()
            .flat_map(|step| std::iter::once(&step.action).chain(&step.compensation))
            .chain(&definition.on_compensated)
            .map(|c| (c.command.clone(), c.success.clone(), c.failure.clone()))
            .collect()
    }

    /// The saga crate tests PlaceOrder with its own fixture: it must stay this definition, or
    /// those tests prove something about another saga.
    #[test]
    fn place_order_is_the_saga_testkit_fixture() {
        let timeout = std::time::Duration::from_secs(10);
        let app = super::place_order(timeout, 6);
        let fixture = eventflow_saga::testkit::place_order(timeout, Backoff::default());
        assert_eq!(names(&app), names(&fixture));
        assert_eq!(app.pivot(), fixture.pivot());
        assert_eq!(app.trigger, fixture.trigger);
    }

    #[test]
    fn place_order_builds() {
        let definition = super::place_order(std::time::Duration::from_secs(10), 6);
        assert_eq!(definition.command_types().len(), 8);
        assert_eq!(
            definition
                .pivot()
                .map(|i| definition.steps[i].name.as_str()),
            Some("CompleteOrder")
        );
        assert_eq!(
            definition.steps[0].budget(),
            std::time::Duration::from_secs(6 * 10 + 1 + 2 + 4 + 8 + 16),
            "the budget --help gives"
        );
    }
}
