//! The notification worker, the route from the bus to its queue, and the email sender.

use std::sync::Arc;

use async_trait::async_trait;
use eventflow_bus::WorkQueue;
use eventflow_core::extension::RepositoryExt;
use eventflow_core::{
    CommandContext, CommandError, Delivery, Envelope, Error, HandlerError, MessageHandler,
    Metadata, Projection, Projector, Repository, Result,
};

use super::domain::{DeliveryStatus, Email, NotificationCommand, NotificationKind, Notifications};
use crate::contract::{OrderOutcome, events, streams};
use crate::platform::customers::CustomerDirectory;

/// Sends an email. Pluggable: the default logs it; a deployment plugs in SES, SendGrid, ...
#[async_trait]
pub(crate) trait EmailSender: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> std::result::Result<(), String>;
}

/// The development sender: logs the email (the notification log records it), after `latency`.
#[derive(Debug, Default)]
pub(crate) struct LoggingSender {
    pub(crate) latency: std::time::Duration,
}

#[async_trait]
impl EmailSender for LoggingSender {
    async fn send(&self, email: &Email) -> std::result::Result<(), String> {
        if !self.latency.is_zero() {
            tracing::info!(to = %email.recipient, kind = ?email.kind, "sending email");
            tokio::time::sleep(self.latency).await;
        }
        tracing::info!(to = %email.recipient, subject = %email.subject, kind = ?email.kind, "email sent");
        Ok(())
    }
}

/// Puts order completed / cancelled events on the notification queue: the in-process twin of an
/// EventBridge rule targeting an SQS queue.
pub(crate) struct ForwardToQueue {
    pub(crate) queue: Arc<dyn WorkQueue>,
}

#[async_trait]
impl MessageHandler for ForwardToQueue {
    async fn handle(&self, delivery: Delivery) -> std::result::Result<(), HandlerError> {
        self.queue
            .send(vec![delivery.message])
            .await
            .map_err(HandlerError::from)
    }
}

/// Handles queued order outcomes: records the notification, sends it, marks it sent. A
/// projection of ordering's published `OrderCompleted` and `OrderCancelled`, fed from the work
/// queue, so a redelivered message is skipped by the projector before any email is considered.
pub(crate) struct NotificationWorker {
    pub(crate) log: Arc<Repository<Notifications>>,
    pub(crate) sender: Arc<dyn EmailSender>,
    /// Customers' addresses, from identity's `CustomerRegistered`.
    pub(crate) customers: Arc<Projector<CustomerDirectory>>,
}

fn email_for(outcome: &OrderOutcome, address: String) -> Email {
    let order = outcome.order();
    let (kind, subject, body) = match outcome {
        OrderOutcome::OrderCompleted(_) => (
            NotificationKind::OrderConfirmation,
            format!("Your order {} is confirmed", order.order_id),
            "Thank you: your order is paid and on its way.".to_owned(),
        ),
        OrderOutcome::OrderCancelled(_) => (
            NotificationKind::OrderCancellation,
            format!("Your order {} was cancelled", order.order_id),
            format!(
                "We could not complete your order: {}. You have not been charged.",
                order.reason.as_deref().unwrap_or("no reason given")
            ),
        ),
    };
    Email {
        kind,
        recipient: address,
        subject,
        body,
        customer_id: Some(order.customer_id.clone()),
        order_id: Some(order.order_id.clone()),
    }
}

/// A failed command on the notification log, as the projection's error.
fn log_failed<E: std::error::Error + Send + Sync + 'static>(error: CommandError<E>) -> Error {
    match error {
        CommandError::Store(error) => error,
        other => Error::backend("notification log", other.to_string()),
    }
}

impl Projection for NotificationWorker {
    type Event = OrderOutcome;
    const STREAMS: &'static [&'static str] = &[streams::ORDER];
    const EVENT_TYPES: &'static [&'static str] =
        &[events::ORDER_COMPLETED, events::ORDER_CANCELLED];

    fn name(&self) -> &str {
        "notification-emails"
    }

    async fn apply(&self, _: &str, event: &Envelope<OrderOutcome>) -> Result<()> {
        let order = event.event.order();
        // An address not known yet (identity's event still on its way) is retried: the queue
        // redelivers, and dead-letters the notification if the customer never arrives.
        let address = self
            .customers
            .projection()
            .email_of(&order.customer_id)
            .await?
            .ok_or_else(|| {
                Error::transient(
                    "customer directory",
                    format!("no address yet for customer {}", order.customer_id),
                )
            })?;
        let email = email_for(&event.event, address);
        let order_id = &order.order_id;
        let kind = email.kind;
        let mut metadata = Metadata::new().with_causation_id(event.event_id.to_string());
        metadata
            .correlation_id
            .clone_from(&event.metadata.correlation_id);
        let context = || CommandContext::new().with_metadata(metadata.clone());
        let mut status = None;
        // The log, not only the projector's checkpoint, keeps the email single: a crash after
        // sending and before the checkpoint is saved hands the event over again.
        self.log
            .execute_inspecting(
                order_id,
                &NotificationCommand::Request(email.clone()),
                context(),
                |state, _| {
                    status = state.status_of(kind);
                },
            )
            .await
            .map_err(log_failed)?;
        if status == Some(DeliveryStatus::Sent) {
            tracing::info!(%order_id, ?kind, "duplicate notification suppressed");
            return Ok(());
        }
        self.sender
            .send(&email)
            .await
            .map_err(|e| Error::transient("email sender", e))?;
        self.log
            .execute(order_id, &NotificationCommand::MarkSent(kind), context())
            .await
            .map_err(log_failed)?;
        Ok(())
    }

    /// Notifications are facts in notification's own streams: there is nothing to clear.
    async fn reset(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use eventflow_bus::{DeadLetterQueue, InMemoryWorkQueue, QueueSettings, Worker, WorkerOptions};
    use eventflow_core::bus::Backoff;
    use eventflow_core::outbox::event_to_message;
    use eventflow_core::{
        AppendRequest, EventStore, EventStoreExt, ExpectedVersion, InMemoryCheckpointStore,
        InMemoryEventStore, Message, NewEvent, Projector, StreamId,
    };
    use serde_json::json;

    use crate::contract::OrderSettled;
    use crate::platform::read_model::Documents;

    use super::*;

    /// Records what it sent; fails the first `fail_first` sends.
    #[derive(Default)]
    struct Outbox {
        sent: Mutex<Vec<Email>>,
        fail_first: Mutex<u32>,
    }

    #[async_trait]
    impl EmailSender for Outbox {
        async fn send(&self, email: &Email) -> std::result::Result<(), String> {
            let mut fail = self.fail_first.lock().unwrap_or_else(|e| e.into_inner());
            if *fail > 0 {
                *fail -= 1;
                return Err("mail server unavailable".into());
            }
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(email.clone());
            Ok(())
        }
    }

    /// `OrderCompleted` of order `o1` as ordering's outbox relays it.
    async fn completed() -> Message {
        let producer = InMemoryEventStore::new();
        let stream = StreamId::new("order-o1");
        let outcome = OrderOutcome::OrderCompleted(OrderSettled {
            order_id: "o1".into(),
            customer_id: "customer-1".into(),
            reason: None,
        });
        let event = NewEvent::encode(&outcome, Metadata::new()).expect("encodes");
        let request = AppendRequest::new(stream.clone(), ExpectedVersion::NoStream, vec![event]);
        producer.append(request).await.expect("appends");
        let recorded = producer
            .read_stream_to_end(&stream, 1)
            .await
            .expect("reads");
        event_to_message(&recorded[0], "ordering").expect("a message")
    }

    /// Runs a worker whose directory knows `customer-1` at `user@example.com`, until `until`.
    async fn run(queue: &Arc<InMemoryWorkQueue>, sender: Arc<Outbox>, until: impl Fn() -> bool) {
        let emails = Documents::in_memory("customers");
        emails
            .put("customer-1", "user@example.com".to_owned())
            .await
            .expect("an address");
        let customers = Arc::new(Projector::new(
            Arc::new(CustomerDirectory::new("customers", emails)),
            Arc::new(InMemoryCheckpointStore::new()),
        ));
        let store = Arc::new(InMemoryEventStore::new());
        let worker = Projector::new(
            Arc::new(NotificationWorker {
                log: Arc::new(Repository::new(store)),
                sender,
                customers,
            }),
            Arc::new(InMemoryCheckpointStore::new()),
        );
        let options = WorkerOptions::new()
            .with_wait_time(Duration::from_millis(20))
            .with_retry(Backoff::new(
                5,
                Duration::from_millis(1),
                Duration::from_millis(5),
            ));
        let handle = Worker::new(Arc::clone(queue) as Arc<dyn WorkQueue>, Arc::new(worker))
            .with_options(options)
            .start()
            .unwrap_or_else(|e| panic!("worker starts: {e}"));
        for _ in 0..500 {
            if until() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handle.unsubscribe().await;
    }

    #[tokio::test]
    async fn one_email_per_order_however_often_the_event_arrives_and_after_a_failed_send() {
        let queue = Arc::new(InMemoryWorkQueue::new(
            QueueSettings::new("n").with_max_receives(Some(5)),
        ));
        let sender = Arc::new(Outbox {
            fail_first: Mutex::new(1),
            ..Outbox::default()
        });
        let completed = completed().await;
        queue
            .send(vec![completed.clone(), completed.clone(), completed])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let watched = Arc::clone(&sender);
        let queued = Arc::clone(&queue);
        run(&queue, Arc::clone(&sender), move || {
            queued.is_empty()
                && !watched
                    .sent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
        })
        .await;
        let sent = sender.sent.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].kind, NotificationKind::OrderConfirmation);
        assert_eq!(sent[0].recipient, "user@example.com");
        assert_eq!(sent[0].customer_id.as_deref(), Some("customer-1"));
        assert_eq!(sent[0].order_id.as_deref(), Some("o1"));
    }

    #[tokio::test]
    async fn a_poison_message_ends_in_the_dead_letter_queue() {
        let queue = Arc::new(InMemoryWorkQueue::new(
            QueueSettings::new("n").with_max_receives(Some(2)),
        ));
        let poison = Message::new(events::ORDER_COMPLETED, "ordering", json!({"no": "order"}));
        queue
            .send(vec![poison.clone()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let queued = Arc::clone(&queue);
        run(&queue, Arc::new(Outbox::default()), move || {
            queued.is_empty()
        })
        .await;
        let dead = queue
            .dead_letters(10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message.id, poison.id);
        // A queue, like SQS, counts receives; it does not know the handler's error (the worker
        // logs it with the message id).
        assert_eq!(dead[0].attempts, 2);
    }
}
