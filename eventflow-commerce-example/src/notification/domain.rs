//! An order's notifications: one stream per order (`notifications-{orderId}`).

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum NotificationKind {
    OrderConfirmation,
    OrderCancellation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum DeliveryStatus {
    /// Recorded; the email may or may not have left (a crash in between sends it again).
    Pending,
    Sent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Email {
    pub(crate) kind: NotificationKind,
    /// The address it goes to.
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    /// Whose order it is about; absent in notifications recorded before addresses were known,
    /// whose recipient was the customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) customer_id: Option<String>,
    /// The order it confirms or cancels (absent in older notifications: the stream's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) order_id: Option<String>,
}

impl Email {
    /// The customer whose order it is about.
    pub(crate) fn customer(&self) -> &str {
        self.customer_id.as_deref().unwrap_or(&self.recipient)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub(crate) email: Email,
    pub(crate) status: DeliveryStatus,
}

#[derive(Debug, Default)]
pub(crate) struct Notifications {
    pub(crate) sent: Vec<Notification>,
}

impl Notifications {
    pub(crate) fn status_of(&self, kind: NotificationKind) -> Option<DeliveryStatus> {
        self.sent
            .iter()
            .find(|n| n.email.kind == kind)
            .map(|n| n.status)
    }
}

pub(crate) enum NotificationCommand {
    Request(Email),
    MarkSent(NotificationKind),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub(crate) enum NotificationEvent {
    NotificationRequested { email: Email },
    NotificationSent { kind: NotificationKind },
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            NotificationEvent::NotificationRequested { .. } => "NotificationRequested",
            NotificationEvent::NotificationSent { .. } => "NotificationSent",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NotificationError {
    #[error("no {0:?} notification was requested")]
    NotRequested(NotificationKind),
}

impl Aggregate for Notifications {
    const STREAM_TYPE: &'static str = "notifications";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = NotificationError;

    fn handle(
        &self,
        command: &NotificationCommand,
    ) -> Result<Vec<NotificationEvent>, NotificationError> {
        match command {
            // One email of each kind per order, however often the event arrives.
            NotificationCommand::Request(email) if self.status_of(email.kind).is_some() => {
                Ok(vec![])
            }
            NotificationCommand::Request(email) => {
                Ok(vec![NotificationEvent::NotificationRequested {
                    email: email.clone(),
                }])
            }
            NotificationCommand::MarkSent(kind) => match self.status_of(*kind) {
                None => Err(NotificationError::NotRequested(*kind)),
                Some(DeliveryStatus::Sent) => Ok(vec![]),
                Some(DeliveryStatus::Pending) => {
                    Ok(vec![NotificationEvent::NotificationSent { kind: *kind }])
                }
            },
        }
    }

    fn apply(&mut self, event: &NotificationEvent) {
        match event {
            NotificationEvent::NotificationRequested { email } => self.sent.push(Notification {
                email: email.clone(),
                status: DeliveryStatus::Pending,
            }),
            NotificationEvent::NotificationSent { kind } => {
                for n in self.sent.iter_mut().filter(|n| n.email.kind == *kind) {
                    n.status = DeliveryStatus::Sent;
                }
            }
        }
    }
}
