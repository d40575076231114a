//! The events a saga instance records: its durable history.

use std::fmt;

use chrono::{DateTime, Utc};
use eventflow_core::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a compensation undoes: a completed (or timed-out) step, or the final `on_compensated`
/// command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CompensationTarget {
    /// The compensation of step `step` (0-based) named `name`.
    Step {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
    },
    /// The definition's `on_compensated` command.
    Final {
        /// Its message type.
        command: String,
    },
}

impl CompensationTarget {
    /// The step index, for a step's compensation.
    pub fn step(&self) -> Option<u32> {
        match self {
            CompensationTarget::Step { step, .. } => Some(*step),
            CompensationTarget::Final { .. } => None,
        }
    }
}

impl fmt::Display for CompensationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompensationTarget::Step { name, .. } => write!(f, "compensation of {name}"),
            CompensationTarget::Final { command } => write!(f, "final command {command}"),
        }
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SagaOutcome {
    /// Every step succeeded.
    Completed,
    /// A step failed or timed out and every compensation is done.
    Compensated,
}

/// One fact in a saga instance's history. The orchestrator's state is a fold of these.
///
/// Stored in the stream `saga-{saga type}-{saga id}`; the event type names returned by
/// [`DomainEvent::event_type`] are stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum SagaEvent {
    /// The saga started with its data.
    Started {
        /// The definition's name.
        saga_type: String,
        /// The saga data (the serialised typed data).
        data: Value,
        /// The correlation id of the request that started it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
        /// The W3C trace context of the request that started it, carried by every command.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// A step's command was sent (again, for `attempt` > 1: same command, same idempotency
    /// key); a reply is due by `deadline`.
    StepSent {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// When this send's wait for a reply ends.
        deadline: DateTime<Utc>,
        /// 1 for the first send.
        #[serde(default = "first_attempt")]
        attempt: u32,
    },
    /// No reply to send `attempt` by its deadline. The outcome is unknown, not failed: the
    /// command is sent again at `resend_at`, and a reply to any send still counts.
    StepDeadlinePassed {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// The send whose deadline passed.
        attempt: u32,
        /// The deadline that passed.
        deadline: DateTime<Utc>,
        /// When the command is sent again.
        resend_at: DateTime<Utc>,
    },
    /// A step's success reply arrived.
    StepSucceeded {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// The reply's message type.
        reply_type: String,
        /// The reply's message id.
        reply_id: String,
        /// The reply's payload; the step's compensation receives it.
        result: Value,
    },
    /// A step's failure reply arrived.
    StepFailed {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// The reply's message type.
        reply_type: String,
        /// The reply's message id.
        reply_id: String,
        /// The participant's reason.
        reason: String,
    },
    /// No send of the step was answered within its resend budget: the step failed, its outcome
    /// unknown (so it is compensated too). Never recorded at or after the pivot.
    StepTimedOut {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// The deadline that passed.
        deadline: DateTime<Utc>,
    },
    /// A step at or after the pivot was refused. Past the pivot the saga neither goes back nor,
    /// now, forward: it needs attention, with nothing undone.
    StuckAfterPivot {
        /// The step's index.
        step: u32,
        /// The step's name.
        name: String,
        /// The participant's reason.
        reason: String,
    },
    /// Compensation began; `plan` is what will be undone, in order.
    CompensationStarted {
        /// Why the saga is compensating.
        reason: String,
        /// The compensations to run, in this order.
        plan: Vec<CompensationTarget>,
    },
    /// A compensation command was sent (attempt `attempt`); a reply is due by `deadline`.
    CompensationSent {
        /// Index into the plan.
        position: u32,
        /// What it undoes.
        target: CompensationTarget,
        /// 1 for the first send.
        attempt: u32,
        /// When this attempt times out.
        deadline: DateTime<Utc>,
    },
    /// A compensation's success reply arrived.
    CompensationSucceeded {
        /// Index into the plan.
        position: u32,
        /// What it undid.
        target: CompensationTarget,
        /// The attempt the reply answered.
        attempt: u32,
        /// The reply's message id.
        reply_id: String,
    },
    /// A compensation attempt failed (failure reply or timeout). It is retried at `retry_at`, or,
    /// when there is none, the saga needs attention.
    CompensationFailed {
        /// Index into the plan.
        position: u32,
        /// What it was undoing.
        target: CompensationTarget,
        /// The attempt that failed.
        attempt: u32,
        /// The participant's reason, or that it timed out.
        reason: String,
        /// When the next attempt is sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
    },
    /// Compensation retries are used up: the saga is parked until an operator retries it (or a
    /// late success reply arrives).
    NeedsAttention {
        /// Index into the plan.
        position: u32,
        /// The compensation that cannot finish.
        target: CompensationTarget,
        /// Its last failure.
        reason: String,
    },
    /// An operator asked to retry a parked compensation.
    CompensationRetryRequested {
        /// Who asked, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by: Option<String>,
    },
    /// The saga ended.
    Finished {
        /// How.
        outcome: SagaOutcome,
    },
}

impl DomainEvent for SagaEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SagaEvent::Started { .. } => "SagaStarted",
            SagaEvent::StepSent { .. } => "SagaStepSent",
            SagaEvent::StepSucceeded { .. } => "SagaStepSucceeded",
            SagaEvent::StepFailed { .. } => "SagaStepFailed",
            SagaEvent::StepDeadlinePassed { .. } => "SagaStepDeadlinePassed",
            SagaEvent::StepTimedOut { .. } => "SagaStepTimedOut",
            SagaEvent::StuckAfterPivot { .. } => "SagaStuckAfterPivot",
            SagaEvent::CompensationStarted { .. } => "SagaCompensationStarted",
            SagaEvent::CompensationSent { .. } => "SagaCompensationSent",
            SagaEvent::CompensationSucceeded { .. } => "SagaCompensationSucceeded",
            SagaEvent::CompensationFailed { .. } => "SagaCompensationFailed",
            SagaEvent::NeedsAttention { .. } => "SagaNeedsAttention",
            SagaEvent::CompensationRetryRequested { .. } => "SagaCompensationRetryRequested",
            SagaEvent::Finished { .. } => "SagaFinished",
        }
    }
}

fn first_attempt() -> u32 {
    1
}

/// Entries of a saga type's index stream (`saga-index-{saga type}`): which sagas exist and which
/// have ended, so a new orchestrator finds the unfinished ones without a global feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum IndexEvent {
    /// A saga is about to start (written before its first event).
    Registered {
        /// The saga id.
        saga_id: String,
    },
    /// A saga ended.
    Settled {
        /// The saga id.
        saga_id: String,
        /// How it ended.
        outcome: SagaOutcome,
        /// Why it failed, for a compensated saga.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl DomainEvent for IndexEvent {
    fn event_type(&self) -> &'static str {
        match self {
            IndexEvent::Registered { .. } => "SagaRegistered",
            IndexEvent::Settled { .. } => "SagaSettled",
        }
    }
}
