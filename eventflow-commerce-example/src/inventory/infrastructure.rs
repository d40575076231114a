//! Inventory's wiring: the stock repository (cached and snapshotted: every order touches a
//! product's stream), the saga participant, the routes.

use std::sync::Arc;

use eventflow_core::Repository;

use super::application::participant;
use super::domain::Stock;
use crate::platform::messaging::{ContextInfra, Started};
use crate::platform::startup::StartError;

/// A product's stock stream grows by an event per order: snapshots keep a cold load short.
const SNAPSHOT_EVERY: u64 = 200;

/// Starts inventory; returns its repository too, for the seed.
pub(crate) async fn start(
    infra: &ContextInfra,
) -> Result<(Arc<Repository<Stock>>, Started), StartError> {
    let stock = Arc::new(infra.snapshotted(SNAPSHOT_EVERY));
    let participant = participant(infra.snapshotted(SNAPSHOT_EVERY), Arc::clone(&infra.bus));
    let consumers = vec![
        infra
            .subscribe(participant.subscription(), Arc::new(participant))
            .await?,
    ];
    let started = Started {
        service: infra.service(super::http::routes(Arc::clone(&stock))),
        consumers,
    };
    Ok((stock, started))
}
