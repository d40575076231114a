//! The wire format: saga commands (orchestrator → participant) and replies (participant →
//! orchestrator), as [`Message`]s on any [`EventBus`](eventflow_core::EventBus).
//!
//! A command's payload is a JSON object (see [`SagaCommand`]); its routing fields are repeated as
//! message [`attributes`] so a reply can copy them without parsing. A reply is any message whose
//! type the step lists as success or failure and which carries the command's routing attributes;
//! [`SagaCommand::success_reply`] and [`SagaCommand::failure_reply`] build one.

use std::fmt;
use std::str::FromStr;

use eventflow_core::Message;
use eventflow_core::bus::attributes as core_attributes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Attribute names of saga commands and replies.
pub mod attributes {
    /// The saga instance's id.
    pub const SAGA_ID: &str = "saga-id";
    /// The saga definition's name.
    pub const SAGA_TYPE: &str = "saga-type";
    /// The step's name (for [`CommandKind::Final`](super::CommandKind::Final): the command type).
    pub const STEP: &str = "saga-step";
    /// `action`, `compensation` or `final`.
    pub const KIND: &str = "saga-kind";
    /// The attempt number of the command a reply answers (1-based).
    pub const ATTEMPT: &str = "saga-attempt";
    /// The command's idempotency key: `{saga type}/{saga id}/{step}/{kind}`.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
}

/// What a saga command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CommandKind {
    /// Do the step.
    Action,
    /// Undo the step (it succeeded, or it timed out and may have happened).
    Compensation,
    /// The definition's `on_compensated` command (e.g. mark the order cancelled).
    Final,
}

impl CommandKind {
    /// `"action"`, `"compensation"` or `"final"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Action => "action",
            CommandKind::Compensation => "compensation",
            CommandKind::Final => "final",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "action" => Ok(CommandKind::Action),
            "compensation" => Ok(CommandKind::Compensation),
            "final" => Ok(CommandKind::Final),
            other => Err(format!("unknown saga command kind {other:?}")),
        }
    }
}

/// The idempotency key of one command of one saga: `{saga type}/{saga id}/{step}/{kind}`. Every
/// attempt and every resend of a command carries the same key, so a participant applies it once.
pub fn idempotency_key(saga_type: &str, saga_id: &str, step: &str, kind: CommandKind) -> String {
    format!("{saga_type}/{saga_id}/{step}/{kind}")
}

/// A saga command as a participant receives it.
///
/// Payload (JSON, camelCase): `sagaId`, `sagaType`, `step`, `kind`, `attempt`, `idempotencyKey`,
/// `data` (the saga data), and for compensations `result` (the step's success reply payload, `null`
/// when the step timed out) and `reason` (why the saga compensates). The Step Functions export sends
/// the same fields plus `taskToken` inside the EventBridge event's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SagaCommand {
    /// The saga instance's id.
    pub saga_id: String,
    /// The saga definition's name.
    pub saga_type: String,
    /// The step's name (for `Final`: the command type).
    pub step: String,
    /// Action, compensation or final command.
    pub kind: CommandKind,
    /// 1 for the first send; compensations count their retries.
    #[serde(default = "one")]
    pub attempt: u32,
    /// The key a participant deduplicates by.
    #[serde(default)]
    pub idempotency_key: String,
    /// The saga data.
    #[serde(default)]
    pub data: Value,
    /// For compensations: the step's success reply payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// For compensations and the final command: why the saga compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Value>,
    /// The Step Functions task token, when the command came from the exported state machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_token: Option<String>,
    /// The command's message type.
    #[serde(skip)]
    pub command_type: String,
    /// The command message's id.
    #[serde(skip)]
    pub message_id: String,
    /// The correlation id it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The W3C trace context of the request that started the saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn one() -> u32 {
    1
}

impl SagaCommand {
    /// Parses a saga command from a bus message.
    pub fn from_message(message: &Message) -> Result<Self> {
        let mut command: SagaCommand = serde_json::from_value(message.payload.clone())
            .map_err(|e| Error::invalid_message(&message.id, format!("payload: {e}")))?;
        command.command_type.clone_from(&message.message_type);
        command.message_id.clone_from(&message.id);
        if command.correlation_id.is_none() {
            command.correlation_id = message.correlation_id().map(str::to_owned);
        }
        if command.traceparent.is_none() {
            command.traceparent = message.traceparent().map(str::to_owned);
        }
        command.fill_key();
        Ok(command)
    }

    /// Parses a saga command from the `detail` of an EventBridge event sent by the exported Step
    /// Functions state machine (`detail-type` is the command type).
    pub fn from_step_functions_detail(detail_type: &str, detail: &Value) -> Result<Self> {
        let mut command: SagaCommand = serde_json::from_value(detail.clone())
            .map_err(|e| Error::invalid_message(detail_type, format!("detail: {e}")))?;
        command.command_type = detail_type.to_owned();
        command.message_id = format!("{}#{}", command.idempotency_key, command.attempt);
        command.fill_key();
        Ok(command)
    }

    fn fill_key(&mut self) {
        if self.idempotency_key.is_empty() {
            self.idempotency_key =
                idempotency_key(&self.saga_type, &self.saga_id, &self.step, self.kind);
        }
    }

    /// The command as the bus message the orchestrator publishes from `source`: its id is
    /// `{idempotency key}#{attempt}` (a resend of one attempt is the same message), its routing
    /// fields are repeated as [`attributes`], and its causation id is the saga id.
    pub fn to_message(&self, source: &str) -> Result<Message> {
        let payload = serde_json::to_value(self)
            .map_err(|e| Error::serialization(format!("command {}", self.command_type), e))?;
        let mut message = Message::new(self.command_type.as_str(), source, payload)
            .with_id(format!("{}#{}", self.idempotency_key, self.attempt))
            .with_attribute(attributes::SAGA_ID, self.saga_id.as_str())
            .with_attribute(attributes::SAGA_TYPE, self.saga_type.as_str())
            .with_attribute(attributes::STEP, self.step.as_str())
            .with_attribute(attributes::KIND, self.kind.as_str())
            .with_attribute(attributes::ATTEMPT, self.attempt.to_string())
            .with_attribute(attributes::IDEMPOTENCY_KEY, self.idempotency_key.as_str());
        if let Some(id) = &self.correlation_id {
            message = message.with_correlation_id(id.as_str());
        }
        if let Some(traceparent) = &self.traceparent {
            message = message.with_attribute(core_attributes::TRACEPARENT, traceparent.as_str());
        }
        Ok(message.with_attribute(core_attributes::CAUSATION_ID, self.saga_id.as_str()))
    }

    /// The saga data as `D`.
    pub fn data<D: DeserializeOwned>(&self) -> Result<D> {
        serde_json::from_value(self.data.clone())
            .map_err(|e| Error::serialization(format!("data of saga {}", self.saga_id), e))
    }

    /// The idempotency key of this step's action (for a compensation: the action it undoes).
    pub fn action_key(&self) -> String {
        idempotency_key(
            &self.saga_type,
            &self.saga_id,
            &self.step,
            CommandKind::Action,
        )
    }

    /// A reply meaning success, with `payload` as the step's result, carrying this command's
    /// routing attributes. Its id is derived from the command's, so a repeated reply is recognisable.
    pub fn success_reply(
        &self,
        reply_type: impl Into<String>,
        source: impl Into<String>,
        payload: Value,
    ) -> Message {
        self.reply(reply_type, source, payload)
    }

    /// A reply meaning failure, with `{"reason": reason}` as payload.
    pub fn failure_reply(
        &self,
        reply_type: impl Into<String>,
        source: impl Into<String>,
        reason: impl fmt::Display,
    ) -> Message {
        self.reply(reply_type, source, json!({ "reason": reason.to_string() }))
    }

    /// A reply of type `reply_type` with any payload, carrying this command's routing attributes.
    pub fn reply(
        &self,
        reply_type: impl Into<String>,
        source: impl Into<String>,
        payload: Value,
    ) -> Message {
        let mut message = Message::new(reply_type, source, payload)
            .with_id(format!("{}:reply", self.message_id))
            .with_attribute(attributes::SAGA_ID, self.saga_id.as_str())
            .with_attribute(attributes::SAGA_TYPE, self.saga_type.as_str())
            .with_attribute(attributes::STEP, self.step.as_str())
            .with_attribute(attributes::KIND, self.kind.as_str())
            .with_attribute(attributes::ATTEMPT, self.attempt.to_string())
            .with_attribute(attributes::IDEMPOTENCY_KEY, self.idempotency_key.as_str())
            .with_attribute(core_attributes::CAUSATION_ID, self.message_id.as_str());
        if let Some(id) = &self.correlation_id {
            message = message.with_correlation_id(id.as_str());
        }
        if let Some(traceparent) = &self.traceparent {
            message = message.with_attribute(core_attributes::TRACEPARENT, traceparent.as_str());
        }
        message
    }
}

/// A reply as the orchestrator reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) saga_id: String,
    pub(crate) kind: CommandKind,
    pub(crate) step: String,
    pub(crate) attempt: u32,
    pub(crate) message_type: String,
    pub(crate) message_id: String,
    pub(crate) payload: Value,
}

impl Reply {
    /// Reads a reply addressed to sagas of type `saga_type`. `Ok(None)`: the message is not a reply
    /// of this saga type (no saga attributes, or another saga type); `Err`: it claims to be one but
    /// is malformed.
    pub(crate) fn parse(message: &Message, saga_type: &str) -> Result<Option<Reply>> {
        let (Some(saga_id), Some(kind_type)) = (
            message.attribute(attributes::SAGA_ID),
            message.attribute(attributes::SAGA_TYPE),
        ) else {
            return Ok(None);
        };
        if kind_type != saga_type {
            return Ok(None);
        }
        let missing =
            |name: &str| Error::invalid_message(&message.id, format!("no {name} attribute"));
        let kind = message
            .attribute(attributes::KIND)
            .ok_or_else(|| missing(attributes::KIND))?
            .parse::<CommandKind>()
            .map_err(|e| Error::invalid_message(&message.id, e))?;
        let step = message
            .attribute(attributes::STEP)
            .ok_or_else(|| missing(attributes::STEP))?;
        let attempt = match message.attribute(attributes::ATTEMPT) {
            Some(a) => a
                .parse()
                .map_err(|_| Error::invalid_message(&message.id, "bad saga-attempt attribute"))?,
            None => 1,
        };
        Ok(Some(Reply {
            saga_id: saga_id.to_owned(),
            kind,
            step: step.to_owned(),
            attempt,
            message_type: message.message_type.clone(),
            message_id: message.id.clone(),
            payload: message.payload.clone(),
        }))
    }

    /// The failure reason a reply carries: its `reason` field, else the whole payload.
    pub(crate) fn reason(&self) -> String {
        match self.payload.get("reason") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None if self.payload.is_null() => self.message_type.clone(),
            None => self.payload.to_string(),
        }
    }
}
