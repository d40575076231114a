//! Inventory's saga participant and its seed.

use std::collections::BTreeMap;
use std::sync::Arc;

use eventflow_core::{CommandContext, CommandError, EventBus, Repository};
use eventflow_saga::Participant;

use super::domain::{Stock, StockCommand, StockError};
use crate::contract::{order_of, saga};

/// The participant answering `ReserveInventory` (all lines or none) and `ReleaseInventory`.
pub(crate) fn participant(
    stock: Arc<Repository<Stock>>,
    bus: Arc<dyn EventBus>,
) -> Participant<Stock> {
    Participant::new("inventory", stock, bus)
        .handles_all(
            saga::RESERVE_INVENTORY,
            saga::INVENTORY_RESERVED,
            saga::INVENTORY_RESERVATION_FAILED,
            |command| {
                let order = order_of(command)?;
                // One command per product: an order may name a product on several lines.
                let mut quantities: BTreeMap<String, u64> = BTreeMap::new();
                for line in &order.items {
                    *quantities.entry(line.product_id.clone()).or_default() +=
                        u64::from(line.quantity);
                }
                Ok(quantities
                    .into_iter()
                    .map(|(product_id, quantity)| {
                        let command = StockCommand::Reserve {
                            product_id: product_id.clone(),
                            order_id: order.order_id.clone(),
                            quantity,
                        };
                        (product_id, command)
                    })
                    .collect())
            },
        )
        .handles_all(
            saga::RELEASE_INVENTORY,
            saga::INVENTORY_RELEASED,
            saga::INVENTORY_RELEASE_FAILED,
            |command| {
                let order = order_of(command)?;
                let mut products: Vec<String> =
                    order.items.iter().map(|l| l.product_id.clone()).collect();
                products.sort();
                products.dedup();
                Ok(products
                    .into_iter()
                    .map(|product_id| {
                        let command = StockCommand::Release {
                            order_id: order.order_id.clone(),
                        };
                        (product_id, command)
                    })
                    .collect())
            },
        )
}

/// Stocks a product at start; seeding again (a durable store after a restart) adds nothing.
pub(crate) async fn seed(
    stock: &Repository<Stock>,
    product_id: &str,
    quantity: u64,
) -> Result<(), CommandError<StockError>> {
    let context = CommandContext::new().with_idempotency_key(format!("seed-stock/{product_id}"));
    stock
        .execute(product_id, &StockCommand::Restock { quantity }, context)
        .await
        .map(drop)
}
