//! Notification's wiring: the rule from the bus to the work queue, the worker, the routes.

use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::{QueueSettings, WorkQueue, Worker, WorkerOptions};
use eventflow_core::Subscription;

use super::application::{ForwardToQueue, LoggingSender, NotificationWorker};
use super::http::NotificationState;
use crate::contract::events;
use crate::platform::messaging::{ContextInfra, Started, of_types};
use crate::platform::startup::StartError;

/// How many receives a queued notification gets before it is dead-lettered.
const MAX_RECEIVES: u32 = 5;

/// Starts notification: `visibility` is how long the queue hides a message being handled,
/// `email_latency` the sender's pause before each email.
pub(crate) async fn start(
    infra: &ContextInfra,
    visibility: Duration,
    email_latency: Duration,
) -> Result<Started, StartError> {
    let queue = infra
        .work_queue(
            QueueSettings::new("notifications")
                .with_visibility_timeout(visibility)
                .with_max_receives(Some(MAX_RECEIVES)),
        )
        .await?;
    let log = Arc::new(infra.repository(false));
    let settled = of_types(&[events::ORDER_COMPLETED, events::ORDER_CANCELLED]).source("ordering");
    let rule = infra
        .subscribe(
            Subscription::new("notification-queue-rule").with_filter(settled),
            Arc::new(ForwardToQueue {
                queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
            }),
        )
        .await?;
    let worker = infra.in_context(infra.projector(NotificationWorker {
        log: Arc::clone(&log),
        sender: Arc::new(LoggingSender {
            latency: email_latency,
        }),
    }));
    let worker = Worker::new(Arc::clone(&queue) as Arc<dyn WorkQueue>, worker)
        .with_options(WorkerOptions::new().with_wait_time(Duration::from_millis(500)))
        .start()
        .map_err(|e| StartError::wiring(infra.service, e))?;
    Ok(Started {
        service: infra.service(super::http::routes(NotificationState { log, queue })),
        consumers: vec![rule, worker],
    })
}
