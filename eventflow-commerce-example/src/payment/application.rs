//! Payment's saga participant (authorize, void) and its capture on `OrderCompleted`.

use std::sync::Arc;

use eventflow_core::{
    CommandContext, CommandError, Envelope, Error, EventBus, Metadata, Projection, Repository,
    Result,
};
use eventflow_saga::Participant;

use super::domain::{Payment, PaymentCommand};
use crate::contract::{OrderOutcome, events, order_of, saga, streams};

/// The participant answering `AuthorizePayment` and `CancelPayment`.
pub(crate) fn participant(
    payments: Arc<Repository<Payment>>,
    bus: Arc<dyn EventBus>,
    limit_cents: u64,
) -> Participant<Payment> {
    Participant::new("payment", payments, bus)
        .handles(
            saga::AUTHORIZE_PAYMENT,
            saga::PAYMENT_AUTHORIZED,
            saga::PAYMENT_DECLINED,
            move |command| {
                let order = order_of(command)?;
                Ok((
                    order.order_id,
                    PaymentCommand::Authorize {
                        customer_id: order.customer_id,
                        amount_cents: order.total_cents,
                        limit_cents,
                    },
                ))
            },
        )
        .handles(
            saga::CANCEL_PAYMENT,
            saga::PAYMENT_CANCELLED,
            saga::PAYMENT_CANCELLATION_FAILED,
            |command| Ok((order_of(command)?.order_id, PaymentCommand::Void)),
        )
        .fails_when(|event| event.failure())
}

/// Captures the payment of a completed order, once per order: a projection of ordering's
/// `OrderCompleted`, so the projector de-duplicates redeliveries and keeps its progress.
pub(crate) struct CaptureOnCompletion {
    pub(crate) payments: Arc<Repository<Payment>>,
}

impl Projection for CaptureOnCompletion {
    type Event = OrderOutcome;
    const STREAMS: &'static [&'static str] = &[streams::ORDER];
    const EVENT_TYPES: &'static [&'static str] = &[events::ORDER_COMPLETED];

    fn name(&self) -> &str {
        "payment-capture"
    }

    async fn apply(&self, _: &str, event: &Envelope<OrderOutcome>) -> Result<()> {
        let OrderOutcome::OrderCompleted(completed) = &event.event else {
            return Ok(());
        };
        let mut metadata = Metadata::new().with_causation_id(event.event_id.to_string());
        metadata
            .correlation_id
            .clone_from(&event.metadata.correlation_id);
        let context = CommandContext::new()
            .with_metadata(metadata)
            .with_idempotency_key(format!("capture/{}", completed.order_id));
        match self
            .payments
            .execute(&completed.order_id, &PaymentCommand::Capture, context)
            .await
        {
            Ok(executed) if executed.deduplicated => {
                tracing::info!(order_id = %completed.order_id, "capture already recorded: a duplicate delivery");
                Ok(())
            }
            Ok(_) => {
                tracing::info!(order_id = %completed.order_id, "payment captured");
                Ok(())
            }
            // A completed order always had its payment authorized; anything else is a bug to see.
            Err(CommandError::Rejected(refusal)) => {
                tracing::error!(order_id = %completed.order_id, %refusal, "cannot capture the payment of a completed order");
                Ok(())
            }
            Err(CommandError::Store(error)) => Err(error),
            Err(other) => Err(Error::InvalidRequest(other.to_string())),
        }
    }

    /// Captures are facts in payment's own streams: there is nothing to clear.
    async fn reset(&self) -> Result<()> {
        Ok(())
    }
}
