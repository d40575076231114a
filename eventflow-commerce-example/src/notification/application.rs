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

/// The development sender: logs the email (the notification log records it).
#[derive(Debug, Default)]
pub(crate) struct LoggingSender;

#[async_trait]
impl EmailSender for LoggingSender {
    async fn send(&self, email: &Email) -> Result<(), String> {
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
