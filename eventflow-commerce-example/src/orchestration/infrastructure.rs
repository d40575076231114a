//! The orchestrator's wiring: PlaceOrder on the saga store, triggered by `OrderPlaced`, its
//! timers, the routes.

use std::sync::Arc;
use std::time::Duration;

use eventflow_core::MessageHandler;
use eventflow_saga::Orchestrator;
use tokio::task::JoinHandle;

use crate::app::StartError;
use crate::contract::{self, PlacedOrder};
use crate::platform::messaging::{ContextInfra, Started};
use crate::platform::server::Shutdown;

/// Starts the orchestrator, resumes the sagas its store left unfinished, and runs its timers
/// until `shutdown` (the returned task).
pub(crate) async fn start(
    infra: &ContextInfra,
    step_timeout: Duration,
    shutdown: &Shutdown,
) -> Result<(Started, JoinHandle<()>), StartError> {
    let failed = |e: eventflow_saga::Error| StartError::wiring(infra.service, e);
    let orchestrator = Orchestrator::<PlacedOrder>::builder(
        contract::place_order(step_timeout),
        Arc::clone(&infra.store),
        Arc::clone(&infra.bus),
    )
    .source(infra.service)
    .trigger(|message| {
        if message.source != "ordering" {
            return Ok(None);
        }
        let order: PlacedOrder =
            serde_json::from_value(message.payload.clone()).map_err(|source| {
                eventflow_saga::Error::Serialization {
                    what: format!("OrderPlaced {}", message.id),
                    source,
                }
            })?;
        Ok(Some((order.order_id.clone(), order)))
    })
    .build()
    .map_err(failed)?;
    let orchestrator = Arc::new(orchestrator);
    let replies = infra
        .subscribe(
            orchestrator.subscription(),
            Arc::clone(&orchestrator) as Arc<dyn MessageHandler>,
        )
        .await?;
    orchestrator.resume().await.map_err(failed)?;
    let timers = {
        let orchestrator = Arc::clone(&orchestrator);
        let stop = shutdown.clone();
        tokio::spawn(async move { orchestrator.run_timers(stop.wait()).await })
    };
    let started = Started {
        service: infra.service(super::http::routes(orchestrator.query().clone())),
        consumers: vec![replies],
    };
    Ok((started, timers))
}
