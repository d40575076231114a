//! A payment: one stream per order (`payment-{orderId}`). A decline is recorded as a fact, not
//! refused, so the payment's history shows it.

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PaymentStatus {
    Authorized,
    Declined,
    Voided,
    Captured,
}

#[derive(Debug, Default)]
pub(crate) struct Payment {
    pub(crate) status: Option<PaymentStatus>,
    pub(crate) amount_cents: u64,
    pub(crate) customer_id: String,
}

pub(crate) enum PaymentCommand {
    Authorize {
        customer_id: String,
        amount_cents: u64,
        limit_cents: u64,
    },
    Void,
    Capture,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
#[allow(clippy::enum_variant_names)] // The variant names are the event types on the wire.
pub(crate) enum PaymentEvent {
    PaymentAuthorized {
        customer_id: String,
        amount_cents: u64,
    },
    PaymentDeclined {
        customer_id: String,
        amount_cents: u64,
        reason: String,
    },
    PaymentVoided,
    PaymentCaptured,
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            PaymentEvent::PaymentDeclined { .. } => "PaymentDeclined",
            PaymentEvent::PaymentVoided => "PaymentVoided",
            PaymentEvent::PaymentCaptured => "PaymentCaptured",
        }
    }
}

impl PaymentEvent {
    /// Why the payment failed, for the saga's failure reply.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            PaymentEvent::PaymentDeclined { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PaymentError {
    #[error("a payment for this order exists already")]
    AlreadyAuthorized,
    #[error("cannot capture a payment that is {0:?}")]
    NotCapturable(Option<PaymentStatus>),
    #[error("cannot void a captured payment")]
    AlreadyCaptured,
}

impl Aggregate for Payment {
    const STREAM_TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn handle(&self, command: &PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        use PaymentStatus::*;
        match (command, self.status) {
            (PaymentCommand::Authorize { .. }, Some(_)) => Err(PaymentError::AlreadyAuthorized),
            (
                PaymentCommand::Authorize {
                    customer_id,
                    amount_cents,
                    limit_cents,
                },
                None,
            ) => Ok(vec![if amount_cents > limit_cents {
                PaymentEvent::PaymentDeclined {
                    customer_id: customer_id.clone(),
                    amount_cents: *amount_cents,
                    reason: format!(
                        "payment declined: {amount_cents} cents exceeds the limit of {limit_cents}"
                    ),
                }
            } else {
                PaymentEvent::PaymentAuthorized {
                    customer_id: customer_id.clone(),
                    amount_cents: *amount_cents,
                }
            }]),
            // Nothing authorized (never, declined, or voided already): nothing to void.
            (PaymentCommand::Void, None | Some(Declined | Voided)) => Ok(vec![]),
            (PaymentCommand::Void, Some(Authorized)) => Ok(vec![PaymentEvent::PaymentVoided]),
            (PaymentCommand::Void, Some(Captured)) => Err(PaymentError::AlreadyCaptured),
            (PaymentCommand::Capture, Some(Captured)) => Ok(vec![]),
            (PaymentCommand::Capture, Some(Authorized)) => Ok(vec![PaymentEvent::PaymentCaptured]),
            (PaymentCommand::Capture, status) => Err(PaymentError::NotCapturable(status)),
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentAuthorized {
                customer_id,
                amount_cents,
            } => {
                self.status = Some(PaymentStatus::Authorized);
                self.amount_cents = *amount_cents;
                self.customer_id.clone_from(customer_id);
            }
            PaymentEvent::PaymentDeclined {
                customer_id,
                amount_cents,
                ..
            } => {
                self.status = Some(PaymentStatus::Declined);
                self.amount_cents = *amount_cents;
                self.customer_id.clone_from(customer_id);
            }
            PaymentEvent::PaymentVoided => self.status = Some(PaymentStatus::Voided),
            PaymentEvent::PaymentCaptured => self.status = Some(PaymentStatus::Captured),
        }
    }
}
