//! Ordering's command path (place an order) and query path (read the projected view).

use std::sync::Arc;
use std::time::Duration;

use eventflow_core::{CommandContext, CommandError, EventBus, Projector, Repository};
use eventflow_saga::Participant;
use uuid::Uuid;

use super::domain::{Order, OrderCommand, OrderError, OrderEvent};
use super::infrastructure::{OrderView, OrderViews, PriceList};
use crate::contract::{Address, OrderLine, PlacedOrder, order_of, saga};
use crate::platform::context::RequestContext;
use crate::platform::customers::CustomerDirectory;
use crate::platform::text;
use eventflow_core::OutboxRelay;

/// At most this many lines per order, and this many of one product per line.
pub(crate) const MAX_LINES: usize = 50;
pub(crate) const MAX_QUANTITY: u32 = 1_000;
/// The longest product id an order may name, in characters.
pub(crate) const MAX_PRODUCT_ID_CHARS: usize = 100;
/// The longest address field, in characters.
const MAX_ADDRESS_CHARS: usize = 200;
/// How long placing an order waits for the view to show it.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// How long an order waits for its customer's `CustomerRegistered` to reach ordering.
const CUSTOMER_ARRIVAL: Duration = Duration::from_secs(5);

/// An order as the customer asks for it, before pricing.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub(crate) customer_id: String,
    pub(crate) lines: Vec<(String, u32)>,
    pub(crate) shipping_address: Address,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlaceError {
    /// A field is invalid: its path and why.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The token's subject is not a customer identity registered.
    #[error("the token's customer is not a registered customer")]
    UnknownCustomer,
    /// The idempotency key was used for a different order.
    #[error("the Idempotency-Key was used for a different order ({0})")]
    KeyReused(String),
    /// Ordering's own data could not be read or written.
    #[error(transparent)]
    Store(eventflow_core::Error),
    #[error("{0}")]
    Internal(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PlaceError {
    PlaceError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A placed order: its id, and whether this request created it (false for a retry).
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) order_id: String,
    pub(crate) created: bool,
}

pub(crate) struct Ordering {
    pub(crate) orders: Arc<Repository<Order>>,
    pub(crate) views: Arc<Projector<OrderViews>>,
    pub(crate) prices: Arc<Projector<PriceList>>,
    /// Identity's customers, as ordering knows them: an order is placed only for one of them.
    pub(crate) customers: Arc<Projector<CustomerDirectory>>,
    pub(crate) relay: Arc<OutboxRelay>,
}

impl Ordering {
    /// Validates and prices `order`, records `OrderPlaced` (which starts the saga), and waits,
    /// bounded, until the view shows it. With an idempotency key, a retry returns the first
    /// order.
    pub(crate) async fn place(
        &self,
        order: NewOrder,
        idempotency_key: Option<&str>,
        request: &RequestContext,
    ) -> Result<Placed, PlaceError> {
        self.known_customer(&order.customer_id).await?;
        let placed = self.price(Uuid::now_v7().to_string(), &order).await?;
        let mut context =
            CommandContext::new().with_metadata(request.metadata(Some(&order.customer_id)));
        if let Some(key) = idempotency_key {
            // Keys are the customer's own: two customers may pick the same one.
            context =
                context.with_idempotency_key(format!("place-order/{}/{key}", order.customer_id));
        }
        let outcome = self
            .orders
            .execute(
                &placed.order_id,
                &OrderCommand::Place(placed.clone()),
                context,
            )
            .await;
        let executed = match outcome {
            Ok(executed) => executed,
            // A retry: it drew a fresh order id, and the key answers with the first order.
            Err(CommandError::Store(eventflow_core::Error::DuplicateIdempotencyKey {
                original,
                ..
            })) => self
                .orders
                .replay(*original)
                .await
                .map_err(|e| PlaceError::Internal(e.to_string()))?
                .ok_or_else(|| {
                    PlaceError::Internal("an order key recorded on another stream type".into())
                })?,
            Err(CommandError::Rejected(OrderError::NoLines)) => {
                return Err(invalid("items", "an order needs at least one line"));
            }
            Err(CommandError::Store(error)) => return Err(PlaceError::Store(error)),
            Err(other) => return Err(PlaceError::Internal(other.to_string())),
        };
        let Some(OrderEvent::OrderPlaced(recorded)) = executed.events.first().map(|e| &e.event)
        else {
            return Err(PlaceError::Internal(
                "placing an order recorded no OrderPlaced".into(),
            ));
        };
        if executed.deduplicated && !same_request(recorded, &placed) {
            return Err(PlaceError::KeyReused(recorded.order_id.clone()));
        }
        self.relay.kick();
        // The order is in the view when the answer leaves, however slow the bus: this instance
        // applies what it recorded, and the bus's copy is a duplicate.
        if let Err(error) = self.views.apply_executed(&executed).await {
            tracing::warn!(%error, "the order view could not be updated at once; the bus will");
        }
        let visible = self
            .views
            .wait_for(&executed.stream_id, executed.version, READ_YOUR_WRITES)
            .await
            .map_err(|e| PlaceError::Internal(e.to_string()))?;
        if !visible {
            tracing::warn!(order_id = %recorded.order_id, "the order view is behind: a read right now may not find the order yet");
        }
        Ok(Placed {
            order_id: recorded.order_id.clone(),
            created: !executed.deduplicated,
        })
    }

    /// Refuses a customer identity never registered. A token names only customers identity
    /// registered, but its `CustomerRegistered` may still be on its way to a service that just
    /// started: an unknown customer is looked up again for a few seconds before it is refused.
    async fn known_customer(&self, customer_id: &str) -> Result<(), PlaceError> {
        let deadline = tokio::time::Instant::now() + CUSTOMER_ARRIVAL;
        loop {
            let known = self
                .customers
                .projection()
                .email_of(customer_id)
                .await
                .map_err(PlaceError::Store)?;
            if known.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlaceError::UnknownCustomer);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The order as recorded, priced from ordering's price list.
    async fn price(&self, order_id: String, order: &NewOrder) -> Result<PlacedOrder, PlaceError> {
        if order.lines.is_empty() {
            return Err(invalid("items", "an order needs at least one line"));
        }
        if order.lines.len() > MAX_LINES {
            return Err(invalid(
                "items",
                format!("at most {MAX_LINES} lines per order"),
            ));
        }
        let prices = self.prices.projection();
        let mut items = Vec::with_capacity(order.lines.len());
        let mut total: u64 = 0;
        for (i, (product_id, quantity)) in order.lines.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(quantity) {
                return Err(invalid(
                    format!("items[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            text::check(product_id, MAX_PRODUCT_ID_CHARS)
                .map_err(|e| invalid(format!("items[{i}].productId"), e.to_string()))?;
            let unit_price_cents = prices
                .price_of(product_id)
                .await
                .map_err(PlaceError::Store)?;
            let unit_price_cents = unit_price_cents.ok_or_else(|| {
                invalid(
                    format!("items[{i}].productId"),
                    format!("no product {:?} in the catalog", text::echo(product_id)),
                )
            })?;
            total = unit_price_cents
                .checked_mul(u64::from(*quantity))
                .and_then(|line| total.checked_add(line))
                .ok_or_else(|| invalid("items", "the order total is too large"))?;
            items.push(OrderLine {
                product_id: product_id.clone(),
                quantity: *quantity,
                unit_price_cents,
            });
        }
        check_address(&order.shipping_address)?;
        Ok(PlacedOrder {
            order_id,
            customer_id: order.customer_id.clone(),
            items,
            total_cents: total,
            shipping_address: order.shipping_address.clone(),
        })
    }

    /// The customer's order, from the view. Another customer's order is not found.
    pub(crate) async fn get(
        &self,
        order_id: &str,
        customer_id: &str,
    ) -> eventflow_core::Result<Option<OrderView>> {
        Ok(self
            .views
            .projection()
            .get(order_id)
            .await?
            .filter(|o| o.customer_id == customer_id))
    }

    pub(crate) async fn list(
        &self,
        customer_id: &str,
        offset: usize,
        limit: usize,
    ) -> eventflow_core::Result<(Vec<OrderView>, usize)> {
        self.views
            .projection()
            .of_customer(customer_id, offset, limit)
            .await
    }
}

/// A retry carries the same lines and address; prices may have been looked up again.
fn same_request(recorded: &PlacedOrder, retried: &PlacedOrder) -> bool {
    let lines = |o: &PlacedOrder| -> Vec<(String, u32)> {
        o.items
            .iter()
            .map(|l| (l.product_id.clone(), l.quantity))
            .collect()
    };
    recorded.customer_id == retried.customer_id
        && lines(recorded) == lines(retried)
        && recorded.shipping_address == retried.shipping_address
}

fn check_address(address: &Address) -> Result<(), PlaceError> {
    for (name, value) in [
        ("street", &address.street),
        ("city", &address.city),
        ("state", &address.state),
        ("zip", &address.zip),
        ("country", &address.country),
    ] {
        text::check(value, MAX_ADDRESS_CHARS)
            .map_err(|e| invalid(format!("shippingAddress.{name}"), e.to_string()))?;
    }
    Ok(())
}

/// Ordering's saga participant: completes or cancels the order (recording `OrderCompleted` or
/// `OrderCancelled`, which the outbox publishes).
pub(crate) fn participant(
    orders: Arc<Repository<Order>>,
    bus: Arc<dyn EventBus>,
) -> Participant<Order> {
    Participant::new("ordering", orders, bus)
        .handles(
            saga::COMPLETE_ORDER,
            saga::ORDER_COMPLETION_RECORDED,
            saga::ORDER_COMPLETION_FAILED,
            |command| Ok((order_of(command)?.order_id, OrderCommand::Complete)),
        )
        .handles(
            saga::CANCEL_ORDER,
            saga::ORDER_CANCELLATION_RECORDED,
            saga::ORDER_CANCELLATION_FAILED,
            |command| {
                let reason = match &command.reason {
                    Some(serde_json::Value::String(reason)) => reason.clone(),
                    Some(other) => other.to_string(),
                    None => "cancelled by the PlaceOrder saga".to_owned(),
                };
                Ok((order_of(command)?.order_id, OrderCommand::Cancel { reason }))
            },
        )
}
