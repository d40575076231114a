//! Payment's wiring: its repository, the saga participant, the capture on `OrderCompleted`, the
//! routes.

use std::sync::Arc;

use super::application::{CaptureOnCompletion, participant};
use crate::contract::events;
use crate::platform::config::Config;
use crate::platform::messaging::{ContextInfra, of_types};
use crate::platform::records::Records;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// Starts payment, declining orders above `PAYMENT_MAX_ORDER_CENTS`.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let limit_cents = config.payment_max_order_cents;
    let payments = Arc::new(infra.repository(false));
    // One repository (one cache) for the participant, the capture and the reads.
    let participant = participant(Arc::clone(&payments), Arc::clone(&infra.bus), limit_cents);
    let completed = of_types(&[events::ORDER_COMPLETED]).source("ordering");
    let consumers = vec![
        infra.participate(participant).await?,
        infra
            .project(
                "payment-capture",
                completed,
                &infra.projector(CaptureOnCompletion {
                    payments: Arc::clone(&payments),
                }),
            )
            .await?,
    ];
    Ok(Started::new(
        infra.service(super::http::routes(Records::new(payments))),
        consumers,
    ))
}
