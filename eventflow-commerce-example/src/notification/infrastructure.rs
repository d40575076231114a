//! Notification's wiring: the customers' addresses (from identity), the rule from the bus to the
//! work queue, the worker, the routes.

use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::{QueueSettings, WorkQueue, Worker, WorkerOptions};
use eventflow_core::Subscription;

use super::application::{ForwardToQueue, LoggingSender, NotificationWorker};
use super::http::NotificationState;
use crate::contract::events;
use crate::platform::config::Config;
use crate::platform::customers::CustomerDirectory;
use crate::platform::messaging::{ContextInfra, of_types, ready_with_queue};
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// How many receives a queued notification gets before it is dead-lettered.
const MAX_RECEIVES: u32 = 5;

/// Starts notification: `NOTIFICATION_VISIBILITY_SECONDS` is how long the queue hides a message being
/// handled, `EMAIL_LATENCY_MS` the sender's pause before each email.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let (visibility, email_latency) = (config.notification_visibility, config.email_latency);
    let queue = infra
        .work_queue(
            QueueSettings::new("notifications")
                .with_visibility_timeout(visibility)
                .with_max_receives(Some(MAX_RECEIVES)),
        )
        .await?;
    let log = Arc::new(infra.repository(false));
    let settled = of_types(&[events::ORDER_COMPLETED, events::ORDER_CANCELLED]).source("ordering");
    let customers = infra.projector(CustomerDirectory::new(
        "notification-customers",
        infra.documents("notification-customers"),
    ));
    let directory = infra
        .project(
            "notification-customers",
            of_types(&[events::CUSTOMER_REGISTERED]),
            &customers,
        )
        .await?;
    let worker = infra.projector(NotificationWorker {
        log: Arc::clone(&log),
        sender: Arc::new(LoggingSender {
            latency: email_latency,
        }),
        customers,
    });
    let mut consumers = vec![directory];
    if infra.runs_loops() {
        // A rule forwards the settled orders to the work queue, and a worker drains it.
        consumers.push(
            infra
                .subscribe(
                    Subscription::new("notification-queue-rule").with_filter(settled),
                    Arc::new(ForwardToQueue {
                        queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
                    }),
                )
                .await?,
        );
        let worker = infra.in_context(infra.measured(&worker), "notifications", MAX_RECEIVES);
        let worker = Worker::new(Arc::clone(&queue) as Arc<dyn WorkQueue>, worker)
            .with_options(WorkerOptions::new().with_wait_time(Duration::from_millis(500)))
            .start()
            .map_err(|e| StartError::wiring(infra.service, e))?;
        consumers.push(worker);
    } else {
        // Invoked (AWS Lambda): the queue that invokes the function is the work queue; SQS
        // redelivers and dead-letters, the function runs the worker.
        consumers.push(
            infra
                .subscribe(
                    Subscription::new("notifications").with_filter(settled),
                    infra.measured(&worker),
                )
                .await?,
        );
    }
    let queue_probe = Arc::clone(&queue) as Arc<dyn WorkQueue>;
    let mut service = infra.service(super::http::routes(NotificationState { log, queue }));
    service.ready = ready_with_queue(service.ready, queue_probe);
    Ok(Started::new(service, consumers))
}
