//! Payment's saga participant (authorize, void) and its capture on `OrderCompleted`.

use std::sync::Arc;

use async_trait::async_trait;
use eventflow_core::{
    CommandContext, CommandError, Delivery, EventBus, HandlerError, MessageHandler, Metadata,
    Repository,
};
use eventflow_saga::Participant;

use super::domain::{Payment, PaymentCommand};
use crate::contract::{OrderSettled, order_of, saga};

/// The participant answering `AuthorizePayment` and `CancelPayment`.
pub(crate) fn participant(
    payments: Repository<Payment>,
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

/// Captures the payment of a completed order, once per order.
pub(crate) struct CaptureOnCompletion {
    pub(crate) payments: Arc<Repository<Payment>>,
}

#[async_trait]
impl MessageHandler for CaptureOnCompletion {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let completed: OrderSettled = serde_json::from_value(delivery.message.payload.clone())
            .map_err(|e| HandlerError::msg(format!("OrderCompleted payload: {e}")))?;
        let mut metadata = Metadata::new().with_causation_id(delivery.message.id.as_str());
        metadata.correlation_id = delivery.message.correlation_id().map(str::to_owned);
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
            Err(other) => Err(HandlerError::msg(other)),
        }
    }
}
