//! The orchestrator's wiring: PlaceOrder on the saga store, triggered by `OrderPlaced`, its
//! timers, its metrics, the routes.

use eventflow_bus::Redelivery;
use eventflow_core::MessageHandler;
use eventflow_saga::{Orchestrator, SagaDefinition};
use std::sync::Arc;

use super::metrics::{StepClock, sample_outcomes};
use crate::contract::{self, PlacedOrder};
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// Starts the orchestrator of PlaceOrder (with the step timing `config` gives), resumes the
/// sagas its store left unfinished, and runs its timers until shutdown.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let definition = contract::place_order(config.step_timeout, config.step_sends);
    let failed = |e: eventflow_saga::Error| StartError::wiring(infra.service, e);
    let steps = StepClock::new(&definition, &infra.metrics);
    let orchestrator = Orchestrator::<PlacedOrder>::builder(
        definition,
        Arc::clone(&infra.store),
        steps.watching(Arc::clone(&infra.bus)),
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
    sample_outcomes(&orchestrator, &infra.metrics);
    let replies = infra
        .subscribe(
            orchestrator.subscription(),
            steps.replies_to(Arc::clone(&orchestrator) as Arc<dyn MessageHandler>),
        )
        .await?;
    orchestrator.resume().await.map_err(failed)?;
    let timers = {
        let orchestrator = Arc::clone(&orchestrator);
        let stop = infra.shutdown.clone();
        tokio::spawn(async move { orchestrator.run_timers(stop.wait()).await })
    };
    let service = infra.service(super::http::routes(orchestrator.query().clone()));
    let mut started = Started::new(service, vec![replies]);
    started.tasks.push(timers);
    Ok(started)
}

/// Refuses a saga step budget the bus can outlast. A participant that dies holding a command (or
/// an orchestrator holding a reply) gets it back only after the bus's redelivery time, and on
/// Pub/Sub every later message of its ordering key waits behind it: a step that fails sooner
/// than twice that (the held message, then the resend behind it) would cancel valid orders
/// whenever a process crashes.
pub(crate) fn check_timing(
    definition: &SagaDefinition,
    redelivery: Option<Redelivery>,
    config: &Config,
) -> Result<(), StartError> {
    let Some(Redelivery { after, setting, .. }) = redelivery else {
        return Ok(());
    };
    let budget = definition
        .steps
        .iter()
        .map(|step| step.budget())
        .min()
        .unwrap_or_default();
    let needed = after.saturating_mul(2);
    if budget >= needed {
        return Ok(());
    }
    Err(StartError::Settings(format!(
        "a saga step fails after {} s (SAGA_STEP_TIMEOUT_MS={} x SAGA_STEP_SENDS={}, with the \
         waits between sends), less than twice {setting}={} s, the time the bus may take to \
         deliver again a message a crashed process held: a crash would cancel valid orders. \
         Raise SAGA_STEP_TIMEOUT_MS or SAGA_STEP_SENDS, or lower {setting}",
        budget.as_secs(),
        config.step_timeout.as_millis(),
        config.step_sends,
        after.as_secs(),
    )))
}
