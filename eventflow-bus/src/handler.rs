//! Calling a [`MessageHandler`] the same way in every adapter: in a span that carries the
//! message's correlation id and `traceparent` (the *handler context* side of end-to-end tracing),
//! with a panic counted as a failure.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use eventflow_core::{Delivery, MessageHandler};
use futures::FutureExt;
use tracing::Instrument;

/// Calls `handler` with `delivery`; `Err` carries the handler's error or panic message.
pub(crate) async fn call(
    backend: &'static str,
    handler: &dyn MessageHandler,
    delivery: Delivery,
) -> Result<(), String> {
    let message = &delivery.message;
    let span = tracing::info_span!(
        "eventflow.deliver",
        backend,
        subscription = %delivery.subscription,
        message_id = %message.id,
        message_type = %message.message_type,
        source = %message.source,
        correlation_id = message.correlation_id(),
        traceparent = message.traceparent(),
        attempt = delivery.attempt,
    );
    let outcome = AssertUnwindSafe(handler.handle(delivery))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error.to_string(),
        Err(panic) => format!("handler panicked: {}", panic_message(panic.as_ref())),
    };
    tracing::warn!(parent: &span, error = %error, "delivery failed");
    Err(error)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}
