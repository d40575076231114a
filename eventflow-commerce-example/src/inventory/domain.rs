//! Stock of one product: one stream per product (`stock-{productId}`).

use std::collections::BTreeMap;

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stock {
    pub(crate) stocked: bool,
    pub(crate) available: u64,
    pub(crate) reserved: u64,
    /// Reserved quantity by order.
    reservations: BTreeMap<String, u64>,
}

pub(crate) enum StockCommand {
    Restock {
        quantity: u64,
    },
    Reserve {
        product_id: String,
        order_id: String,
        quantity: u64,
    },
    Release {
        order_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
#[allow(clippy::enum_variant_names)] // The variant names are the event types on the wire.
pub(crate) enum StockEvent {
    StockAdded { quantity: u64 },
    StockReserved { order_id: String, quantity: u64 },
    StockReleased { order_id: String, quantity: u64 },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            StockEvent::StockAdded { .. } => "StockAdded",
            StockEvent::StockReserved { .. } => "StockReserved",
            StockEvent::StockReleased { .. } => "StockReleased",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum StockError {
    #[error("{product_id} is not stocked")]
    NotStocked { product_id: String },
    #[error("insufficient stock for {product_id}: {available} available, {requested} requested")]
    Insufficient {
        product_id: String,
        available: u64,
        requested: u64,
    },
}

impl Aggregate for Stock {
    const STREAM_TYPE: &'static str = "stock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;

    fn handle(&self, command: &StockCommand) -> Result<Vec<StockEvent>, StockError> {
        match command {
            StockCommand::Restock { quantity } => Ok(vec![StockEvent::StockAdded {
                quantity: *quantity,
            }]),
            // The same order reserving again (a redelivery past its key) takes nothing more.
            StockCommand::Reserve { order_id, .. } if self.reservations.contains_key(order_id) => {
                Ok(vec![])
            }
            StockCommand::Reserve {
                product_id,
                order_id,
                quantity,
            } => {
                if !self.stocked {
                    return Err(StockError::NotStocked {
                        product_id: product_id.clone(),
                    });
                }
                if *quantity > self.available {
                    return Err(StockError::Insufficient {
                        product_id: product_id.clone(),
                        available: self.available,
                        requested: *quantity,
                    });
                }
                Ok(vec![StockEvent::StockReserved {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                }])
            }
            StockCommand::Release { order_id } => Ok(self
                .reservations
                .get(order_id)
                .map(|quantity| StockEvent::StockReleased {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                })
                .into_iter()
                .collect()),
        }
    }

    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::StockAdded { quantity } => {
                self.stocked = true;
                self.available += quantity;
            }
            StockEvent::StockReserved { order_id, quantity } => {
                // Saturating: `handle` never lets these go below zero; a corrupt history should
                // not panic a process.
                self.available = self.available.saturating_sub(*quantity);
                self.reserved += quantity;
                self.reservations.insert(order_id.clone(), *quantity);
            }
            StockEvent::StockReleased { order_id, quantity } => {
                self.available += quantity;
                self.reserved = self.reserved.saturating_sub(*quantity);
                self.reservations.remove(order_id);
            }
        }
    }
}
