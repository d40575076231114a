//! Starts the PlaceOrder state machine for each `OrderPlaced` an SQS queue brings (an
//! EventBridge rule fills it). The execution is named after the order, so a redelivered event
//! cannot start a second saga for one order: `ExecutionAlreadyExists` means it is running.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata};
use eventflow_saga::step_functions::execution_input;

use super::consumer::each_record;
use crate::contract::{PlacedOrder, events};

/// What the starter needs: the state machine and a client.
#[derive(Clone)]
pub(crate) struct Starter {
    pub(crate) client: aws_sdk_sfn::Client,
    pub(crate) state_machine_arn: String,
}

/// Starts an execution per `OrderPlaced` of the batch.
pub(crate) async fn start_sagas(starter: &Starter, event: SqsEvent) -> SqsBatchResponse {
    each_record(event, |record| start_one(starter, record)).await
}

async fn start_one(starter: &Starter, record: SqsMessage) -> Result<(), String> {
    let body = record.body.as_deref().ok_or("the record has no body")?;
    let message = eventflow_bus::sqs::message_from_body(body).map_err(|e| e.to_string())?;
    if message.message_type != events::ORDER_PLACED || message.source != "ordering" {
        return Err(format!(
            "{} from {} is not ordering's OrderPlaced: the rule feeding this queue is wrong",
            message.message_type, message.source
        ));
    }
    let order: PlacedOrder = serde_json::from_value(message.payload.clone())
        .map_err(|e| format!("OrderPlaced {}: {e}", message.id))?;
    let input = execution_input(
        &order.order_id,
        message.correlation_id(),
        message.payload.clone(),
    );
    let started = starter
        .client
        .start_execution()
        .state_machine_arn(&starter.state_machine_arn)
        .name(&order.order_id)
        .input(input.to_string())
        .send()
        .await
        .map_err(aws_sdk_sfn::Error::from);
    match started {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some("ExecutionAlreadyExists") => Ok(()),
        Err(error) => Err(format!("starting the saga: {}", DisplayErrorContext(error))),
    }
}
