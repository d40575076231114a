//! The notification worker, the route from the bus to its queue, and the email sender.

use std::sync::Arc;

use async_trait::async_trait;
use eventflow_bus::WorkQueue;
use eventflow_core::{
    CommandContext, Delivery, HandlerError, MessageHandler, Metadata, Repository,
};

use super::domain::{DeliveryStatus, Email, NotificationCommand, NotificationKind, Notifications};
use crate::contract::{OrderSettled, events};

/// Sends an email. Pluggable: the default logs it; a deployment plugs in SES, SendGrid, ...
#[async_trait]
pub(crate) trait EmailSender: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), String>;
}

/// The development sender: logs the email (the notification log records it), after `latency`.
#[derive(Debug, Default)]
pub(crate) struct LoggingSender {
    pub(crate) latency: std::time::Duration,
}

#[async_trait]
impl EmailSender for LoggingSender {
    async fn send(&self, email: &Email) -> Result<(), String> {
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
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.queue
            .send(vec![delivery.message])
            .await
            .map_err(HandlerError::from)
    }
}

/// Handles queued order events: records the notification, sends it, marks it sent.
pub(crate) struct NotificationWorker {
    pub(crate) log: Arc<Repository<Notifications>>,
    pub(crate) sender: Arc<dyn EmailSender>,
}

fn email_for(message_type: &str, order: &OrderSettled) -> Option<Email> {
    let (kind, subject, body) = match message_type {
        events::ORDER_COMPLETED => (
            NotificationKind::OrderConfirmation,
            format!("Your order {} is confirmed", order.order_id),
            "Thank you: your order is paid and on its way.".to_owned(),
        ),
        events::ORDER_CANCELLED => (
            NotificationKind::OrderCancellation,
            format!("Your order {} was cancelled", order.order_id),
            format!(
                "We could not complete your order: {}. You have not been charged.",
                order.reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        _ => return None,
    };
    Some(Email {
        kind,
        recipient: order.customer_id.clone(),
        subject,
        body,
    })
}

#[async_trait]
impl MessageHandler for NotificationWorker {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let message = &delivery.message;
        let order: OrderSettled = serde_json::from_value(message.payload.clone()).map_err(|e| {
            HandlerError::msg(format!(
                "{} {}: not an order event: {e}",
                message.message_type, message.id
            ))
        })?;
        let email = email_for(&message.message_type, &order).ok_or_else(|| {
            HandlerError::msg(format!("no notification for {}", message.message_type))
        })?;
        let kind = email.kind;
        let mut metadata = Metadata::new().with_causation_id(message.id.as_str());
        metadata.correlation_id = message.correlation_id().map(str::to_owned);
        let context = || CommandContext::new().with_metadata(metadata.clone());
        let mut status = None;
        self.log
            .execute_and_inspect(
                &order.order_id,
                &NotificationCommand::Request(email.clone()),
                context(),
                |state, _| {
                    status = state.status_of(kind);
                },
            )
            .await
            .map_err(HandlerError::msg)?;
        if status == Some(DeliveryStatus::Sent) {
            tracing::info!(order_id = %order.order_id, ?kind, "duplicate notification suppressed");
            return Ok(());
        }
        self.sender.send(&email).await.map_err(HandlerError::msg)?;
        self.log
            .execute(
                &order.order_id,
                &NotificationCommand::MarkSent(kind),
                context(),
            )
            .await
            .map_err(HandlerError::msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use eventflow_bus::{DeadLetterQueue, InMemoryWorkQueue, QueueSettings, Worker, WorkerOptions};
    use eventflow_core::bus::Backoff;
    use eventflow_core::{InMemoryEventStore, Message};
    use serde_json::json;

    use super::*;

    /// Records what it sent; fails the first `fail_first` sends.
    #[derive(Default)]
    struct Outbox {
        sent: Mutex<Vec<Email>>,
        fail_first: Mutex<u32>,
    }

    #[async_trait]
    impl EmailSender for Outbox {
        async fn send(&self, email: &Email) -> Result<(), String> {
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

    fn completed(message_id: &str) -> Message {
        Message::new(
            events::ORDER_COMPLETED,
            "ordering",
            json!({"orderId": "o1", "customerId": "customer-1"}),
        )
        .with_id(message_id)
    }

    async fn run(queue: &Arc<InMemoryWorkQueue>, sender: Arc<Outbox>, until: impl Fn() -> bool) {
        let store = Arc::new(InMemoryEventStore::new());
        let worker = NotificationWorker {
            log: Arc::new(Repository::new(store)),
            sender,
        };
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
        queue
            .send(vec![completed("m1"), completed("m1"), completed("m2")])
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
