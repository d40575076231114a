//! A context's consumers on an SQS event source. Each record is what an EventBridge rule put on
//! the queue: an app event (handed to every subscription of the context whose filter selects
//! it), or a command of the PlaceOrder state machine carrying a Step Functions task token
//! (run by the context's saga participant, whose reply answers the task). A record that fails
//! is reported alone (partial batch response), so SQS redelivers only it and, after the
//! queue's `maxReceiveCount`, moves it to the dead-letter queue; the rest of the batch is done.

use std::future::Future;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata};
use eventflow_core::{Delivery, OutboxRelay};
use eventflow_saga::{ParticipantReply, SagaCommand};
use serde_json::Value;

use super::Invoked;
use super::bus::Subscribers;

/// What a consumer function needs of its started context.
#[derive(Clone)]
pub(crate) struct Consumer {
    subscribers: Subscribers,
    relay: Arc<OutboxRelay>,
    /// Answers the state machine's tasks (`None`: a context with no participant).
    tasks: Option<aws_sdk_sfn::Client>,
}

impl Consumer {
    /// The subscriptions, participants and outbox relay of `invoked`, answering tasks with
    /// `tasks`.
    pub(crate) fn of(invoked: &Invoked, tasks: Option<aws_sdk_sfn::Client>) -> Consumer {
        Consumer {
            subscribers: invoked.subscribers.clone(),
            relay: Arc::clone(&invoked.relay),
            tasks,
        }
    }
}

/// Runs `handle` on every record of `event`; the records that failed are in the response.
pub(crate) async fn each_record<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        if let Err(reason) = handle(record).await {
            tracing::warn!(message_id = %id, %reason, "a record failed; SQS delivers it again");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// Handles a batch for the context's consumers.
pub(crate) async fn consume(consumer: &Consumer, event: SqsEvent) -> SqsBatchResponse {
    let response = each_record(event, |record| deliver(consumer, record)).await;
    // What the handlers recorded goes out now rather than on the stream relay's next
    // invocation; if this fails, that invocation publishes it.
    if let Err(error) = consumer.relay.relay_pending().await {
        tracing::warn!(%error, "outbox not relayed after the batch; the stream relay will");
    }
    response
}

/// Delivers one record. A subscription that already handled it (a redelivery after another
/// one failed) recognises it: projections by stream version, participants by idempotency key,
/// handlers by message id.
async fn deliver(consumer: &Consumer, record: SqsMessage) -> Result<(), String> {
    let body = record.body.as_deref().ok_or("the record has no body")?;
    let event: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(token) = event["detail"]["taskToken"].as_str() {
        return answer_task(consumer, &event, token).await;
    }
    let message = eventflow_bus::sqs::message_from_body(body).map_err(|e| e.to_string())?;
    let attempt = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1);
    for subscriber in consumer.subscribers.selecting(&message) {
        let delivery = Delivery::new(message.clone(), subscriber.name.as_str(), attempt);
        subscriber
            .handler
            .handle(delivery)
            .await
            .map_err(|e| format!("{}: {e}", subscriber.name))?;
    }
    Ok(())
}

/// Runs a state machine's command through the context's participant and answers its task.
async fn answer_task(consumer: &Consumer, event: &Value, token: &str) -> Result<(), String> {
    let detail_type = event["detail-type"].as_str().unwrap_or_default();
    let command = SagaCommand::from_step_functions_detail(detail_type, &event["detail"])
        .map_err(|e| e.to_string())?;
    let mut reply = None;
    for participant in consumer.subscribers.participants() {
        reply = participant
            .answer(&command)
            .await
            .map_err(|e| e.to_string())?;
        if reply.is_some() {
            break;
        }
    }
    let reply =
        reply.ok_or_else(|| format!("no participant of this context handles {detail_type}"))?;
    let tasks = consumer
        .tasks
        .as_ref()
        .ok_or("this function answers no Step Functions task")?;
    send(tasks, token, &reply).await
}

/// `SendTaskSuccess` or `SendTaskFailure` with `reply`. A task that no longer waits (its
/// execution ended, or it timed out and was resent with a new token) is not an error: the
/// participant's work is recorded, and the resend is answered from that record.
async fn send(
    tasks: &aws_sdk_sfn::Client,
    token: &str,
    reply: &ParticipantReply,
) -> Result<(), String> {
    let sent = if reply.success {
        tasks
            .send_task_success()
            .task_token(token)
            .output(reply.payload.to_string())
            .send()
            .await
            .map(drop)
            .map_err(aws_sdk_sfn::Error::from)
    } else {
        let reason = reply.payload["reason"].as_str().unwrap_or_default();
        tasks
            .send_task_failure()
            .task_token(token)
            .error(reply.reply_type.as_str())
            .cause(reason)
            .send()
            .await
            .map(drop)
            .map_err(aws_sdk_sfn::Error::from)
    };
    match sent {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.code(), Some("TaskTimedOut" | "TaskDoesNotExist")) => {
            tracing::info!(
                code = error.code(),
                "the task no longer waits for this reply"
            );
            Ok(())
        }
        Err(error) => Err(format!(
            "answering the task: {}",
            DisplayErrorContext(error)
        )),
    }
}
