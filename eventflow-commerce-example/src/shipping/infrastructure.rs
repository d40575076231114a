//! Shipping's wiring: its repository, the saga participant, the routes.

use std::sync::Arc;

use super::application::participant;
use crate::platform::messaging::{ContextInfra, Started};
use crate::platform::startup::StartError;

pub(crate) async fn start(infra: &ContextInfra) -> Result<Started, StartError> {
    let participant = participant(infra.repository(false), Arc::clone(&infra.bus));
    let consumers = vec![
        infra
            .subscribe(participant.subscription(), Arc::new(participant))
            .await?,
    ];
    Ok(Started {
        service: infra.service(super::http::routes(Arc::new(infra.repository(false)))),
        consumers,
    })
}
