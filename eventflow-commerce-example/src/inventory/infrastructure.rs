//! Inventory's wiring: the stock repository (cached and snapshotted: every order touches a
//! product's stream), the saga participant, the routes.

use std::sync::Arc;

use eventflow_core::Repository;

use super::application::participant;
use super::domain::Stock;
use crate::contract::SEED_PRODUCTS;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::records::Records;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// A product's stock stream grows by an event per order: snapshots keep a cold load short.
const SNAPSHOT_EVERY: u64 = 200;

/// Starts inventory, and the seed's stock (`SEED_STOCK` overrides every product's quantity).
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let stock = Arc::new(infra.snapshotted(SNAPSHOT_EVERY));
    // One repository (one cache) for the participant and the reads.
    let participant = participant(Arc::clone(&stock), Arc::clone(&infra.bus));
    let consumers = vec![infra.participate(participant).await?];
    let service = infra.service(super::http::routes(Records::new(Arc::clone(&stock))));
    let seed = seed(stock, config.seed_stock);
    Ok(Started::new(service, consumers).seeding(config, Box::pin(seed)))
}

/// Stocks the seed's products, once (the restock's idempotency key is per product).
async fn seed(stock: Arc<Repository<Stock>>, quantity: Option<u64>) -> Result<(), StartError> {
    for (product_id, _, _, seeded) in SEED_PRODUCTS {
        super::application::seed(&stock, product_id, quantity.unwrap_or(seeded))
            .await
            .map_err(|e| StartError::wiring("seeding inventory", e))?;
    }
    Ok(())
}
