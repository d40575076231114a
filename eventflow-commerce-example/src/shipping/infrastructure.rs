//! Shipping's wiring: its repository, the saga participant, the routes.

use std::sync::Arc;

use super::application::participant;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// Starts shipping.
pub(crate) async fn start(infra: &ContextInfra, _: &Config) -> Result<Started, StartError> {
    let participant = participant(infra.repository(false), Arc::clone(&infra.bus));
    let consumers = vec![
        infra
            .subscribe(participant.subscription(), Arc::new(participant))
            .await?,
    ];
    let service = infra.service(super::http::routes(Arc::new(infra.repository(false))));
    Ok(Started::new(service, consumers))
}
