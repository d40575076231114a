//! Shipping's wiring: its repository, the saga participant, the routes.

use std::sync::Arc;

use super::application::participant;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::records::Records;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// Starts shipping.
pub(crate) async fn start(infra: &ContextInfra, _: &Config) -> Result<Started, StartError> {
    let shipments = Arc::new(infra.repository(false));
    let participant = participant(Arc::clone(&shipments), Arc::clone(&infra.bus));
    let consumers = vec![infra.participate(participant).await?];
    let service = infra.service(super::http::routes(Records::new(shipments)));
    Ok(Started::new(service, consumers))
}
