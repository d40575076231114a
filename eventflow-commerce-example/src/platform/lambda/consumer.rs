//! A context's bus subscriptions on an SQS event source: each record is the message an
//! EventBridge rule put on the queue, handed to every subscription of the context whose filter
//! selects it. A record that fails is reported alone (partial batch response), so SQS
//! redelivers only it and, after the queue's `maxReceiveCount`, moves it to the dead-letter
//! queue; the rest of the batch is done.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::sync::Arc;

use eventflow_core::{Delivery, OutboxRelay};

use super::Invoked;
use super::bus::Subscribers;

/// What a consumer function needs of its started context.
#[derive(Clone)]
pub(crate) struct Consumer {
    subscribers: Subscribers,
    relay: Arc<OutboxRelay>,
}

impl Consumer {
    /// The subscriptions and the outbox relay of `invoked`.
    pub(crate) fn of(invoked: &Invoked) -> Consumer {
        Consumer {
            subscribers: invoked.subscribers.clone(),
            relay: Arc::clone(&invoked.relay),
        }
    }
}

/// Handles a batch; the records that failed are in the response.
pub(crate) async fn consume(invoked: &Consumer, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        if let Err(reason) = deliver(invoked, &record).await {
            let id = record.message_id.unwrap_or_default();
            tracing::warn!(message_id = %id, %reason, "a record failed; SQS delivers it again");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    // What the handlers recorded goes out now rather than on the stream relay's next
    // invocation; if this fails, that invocation publishes it.
    if let Err(error) = invoked.relay.relay_pending().await {
        tracing::warn!(%error, "outbox not relayed after the batch; the stream relay will");
    }
    response
}

/// Delivers one record to every subscription that selects it. A subscription that already
/// handled it (a redelivery after another one failed) recognises it: projections by stream
/// version, participants by idempotency key, handlers by message id.
async fn deliver(invoked: &Consumer, record: &SqsMessage) -> Result<(), String> {
    let body = record.body.as_deref().ok_or("the record has no body")?;
    let message = eventflow_bus::sqs::message_from_body(body).map_err(|e| e.to_string())?;
    let attempt = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1);
    let subscribers = invoked.subscribers.selecting(&message);
    if subscribers.is_empty() {
        tracing::debug!(message_type = %message.message_type, "no subscription of this context selects it");
    }
    for subscriber in subscribers {
        let delivery = Delivery::new(message.clone(), subscriber.name.as_str(), attempt);
        subscriber
            .handler
            .handle(delivery)
            .await
            .map_err(|e| format!("{}: {e}", subscriber.name))?;
    }
    Ok(())
}
