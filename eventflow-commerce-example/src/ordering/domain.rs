//! An order: one stream per order id (`order-{id}`).

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::contract::{OrderSettled, PlacedOrder, events};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OrderStatus {
    Pending,
    Completed,
    Cancelled,
}

impl OrderStatus {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Order {
    placed: Option<PlacedOrder>,
    status: Option<OrderStatus>,
}

pub(crate) enum OrderCommand {
    Place(PlacedOrder),
    Complete,
    Cancel { reason: String },
}

/// Ordering's events, all published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(clippy::enum_variant_names)] // The variant names are the event types on the wire.
pub(crate) enum OrderEvent {
    OrderPlaced(PlacedOrder),
    OrderCompleted(OrderSettled),
    OrderCancelled(OrderSettled),
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced(_) => events::ORDER_PLACED,
            OrderEvent::OrderCompleted(_) => events::ORDER_COMPLETED,
            OrderEvent::OrderCancelled(_) => events::ORDER_CANCELLED,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OrderError {
    #[error("the order exists already")]
    AlreadyPlaced,
    #[error("no such order")]
    NotPlaced,
    #[error("an order needs at least one line")]
    NoLines,
    #[error("the order is {0:?} and cannot change")]
    Settled(OrderStatus),
}

impl Aggregate for Order {
    const STREAM_TYPE: &'static str = crate::contract::streams::ORDER;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        let settled = |placed: &PlacedOrder, reason: Option<&str>| OrderSettled {
            order_id: placed.order_id.clone(),
            customer_id: placed.customer_id.clone(),
            reason: reason.map(str::to_owned),
        };
        match (command, &self.placed, self.status) {
            (OrderCommand::Place(_), Some(_), _) => Err(OrderError::AlreadyPlaced),
            (OrderCommand::Place(order), None, _) if order.items.is_empty() => {
                Err(OrderError::NoLines)
            }
            (OrderCommand::Place(order), None, _) => {
                Ok(vec![OrderEvent::OrderPlaced(order.clone())])
            }
            (_, None, _) => Err(OrderError::NotPlaced),
            // Completing twice, or cancelling twice, is the same request again: nothing to do.
            (OrderCommand::Complete, Some(_), Some(OrderStatus::Completed))
            | (OrderCommand::Cancel { .. }, Some(_), Some(OrderStatus::Cancelled)) => Ok(vec![]),
            (OrderCommand::Complete, Some(placed), Some(OrderStatus::Pending)) => {
                Ok(vec![OrderEvent::OrderCompleted(settled(placed, None))])
            }
            (OrderCommand::Cancel { reason }, Some(placed), Some(OrderStatus::Pending)) => Ok(
                vec![OrderEvent::OrderCancelled(settled(placed, Some(reason)))],
            ),
            (_, Some(_), status) => {
                Err(OrderError::Settled(status.unwrap_or(OrderStatus::Pending)))
            }
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced(order) => {
                self.placed = Some(order.clone());
                self.status = Some(OrderStatus::Pending);
            }
            OrderEvent::OrderCompleted(_) => self.status = Some(OrderStatus::Completed),
            OrderEvent::OrderCancelled(_) => self.status = Some(OrderStatus::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use eventflow_core::testkit::AggregateTest;

    use super::*;
    use crate::contract::{Address, OrderLine};

    fn placed() -> PlacedOrder {
        PlacedOrder {
            order_id: "o1".into(),
            customer_id: "customer-1".into(),
            items: vec![OrderLine {
                product_id: "prod-1".into(),
                quantity: 1,
                unit_price_cents: 8999,
            }],
            total_cents: 8999,
            shipping_address: Address {
                street: "1 Main St".into(),
                city: "Seattle".into(),
                state: "WA".into(),
                zip: "98101".into(),
                country: "US".into(),
            },
        }
    }

    fn completed() -> AggregateTest<Order> {
        AggregateTest::<Order>::given([
            OrderEvent::OrderPlaced(placed()),
            OrderEvent::OrderCompleted(OrderSettled {
                order_id: "o1".into(),
                customer_id: "customer-1".into(),
                reason: None,
            }),
        ])
    }

    #[test]
    fn a_completed_order_cannot_be_cancelled() {
        completed()
            .when(&OrderCommand::Cancel {
                reason: "late".into(),
            })
            .then_error(&OrderError::Settled(OrderStatus::Completed));
    }

    #[test]
    fn completing_twice_records_once() {
        completed().when(&OrderCommand::Complete).then_expect(&[]);
    }
}
