//! A saga instance's state: a fold of its [`SagaEvent`]s.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{CompensationTarget, SagaEvent, SagaOutcome};

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SagaStatus {
    /// Steps are running.
    Running,
    /// A step failed or timed out; completed steps are being undone.
    Compensating,
    /// A compensation failed every retry: nothing more happens until an operator calls
    /// [`Orchestrator::retry_compensation`](crate::Orchestrator::retry_compensation) (or a late
    /// success reply arrives). Or a step at or after the pivot was refused: nothing is undone
    /// and a person decides. Never a silent end: queries list these.
    NeedsAttention,
    /// Every step succeeded (terminal).
    Completed,
    /// Every compensation succeeded (terminal).
    Compensated,
}

impl SagaStatus {
    /// True for `Completed` and `Compensated`.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }
}

impl From<SagaOutcome> for SagaStatus {
    fn from(outcome: SagaOutcome) -> Self {
        match outcome {
            SagaOutcome::Completed => SagaStatus::Completed,
            SagaOutcome::Compensated => SagaStatus::Compensated,
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::NeedsAttention => "needs attention",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
        })
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StepStatus {
    /// Its command was sent (perhaps several times); no reply yet.
    Pending,
    /// It succeeded.
    Succeeded,
    /// Its participant refused it (nothing to undo).
    Failed,
    /// No send was answered within the resend budget. Its outcome is unknown, so it is
    /// compensated like a completed step.
    TimedOut,
}

/// One step of a saga instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StepState {
    /// The step's name.
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// When the current send's wait for a reply ends (or ended).
    pub deadline: DateTime<Utc>,
    /// How many times the command was sent (1 for the first send).
    #[serde(default = "first_send")]
    pub attempt: u32,
    /// When the command is sent again, while a deadline has passed and the resend waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_at: Option<DateTime<Utc>>,
    /// The success reply's payload.
    pub result: Option<Value>,
    /// The failure reason.
    pub reason: Option<String>,
}

fn first_send() -> u32 {
    1
}

/// Where the current compensation is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum CompensationPhase {
    /// Not sent yet (momentarily, between events of one decision).
    NotSent,
    /// Sent; a reply is due by the deadline.
    Sent {
        /// When the attempt times out.
        deadline: DateTime<Utc>,
    },
    /// The last attempt failed; the next one is sent at this time.
    RetryAt(DateTime<Utc>),
    /// Retries are used up (the saga needs attention).
    Parked,
    /// Every compensation in the plan is done.
    Done,
}

/// The compensation progress of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CompensationState {
    /// Why the saga compensates.
    pub reason: String,
    /// What is undone, in order.
    pub plan: Vec<CompensationTarget>,
    /// Index into `plan` of the compensation in progress (`plan.len()` when all are done).
    pub position: u32,
    /// The attempt number of the current compensation (1-based; 0 before the first send).
    pub attempt: u32,
    /// Attempts of the current compensation since it started or was last retried by an operator.
    pub round_attempts: u32,
    /// Where the current compensation is.
    pub phase: CompensationPhase,
    /// Compensations done, in the order they finished.
    pub done: Vec<CompensationTarget>,
}

impl CompensationState {
    /// The compensation in progress.
    pub fn current(&self) -> Option<&CompensationTarget> {
        self.plan.get(self.position as usize)
    }
}

/// A saga instance's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SagaState {
    /// The saga's id.
    pub saga_id: String,
    /// The definition's name.
    pub saga_type: String,
    /// `None` until the saga has started.
    pub status: Option<SagaStatus>,
    /// The saga data, serialised.
    pub data: Value,
    /// The correlation id that started it.
    pub correlation_id: Option<String>,
    /// The W3C trace context of the request that started it.
    pub traceparent: Option<String>,
    /// The steps sent so far, by index.
    pub steps: Vec<StepState>,
    /// The compensation progress, once compensating.
    pub compensation: Option<CompensationState>,
    /// Why the saga failed, once it does.
    pub failure: Option<String>,
    /// Why the saga needs attention, while it does.
    pub attention: Option<String>,
}

impl SagaState {
    /// A state before any event.
    pub fn new(saga_id: impl Into<String>) -> Self {
        SagaState {
            saga_id: saga_id.into(),
            ..SagaState::default()
        }
    }

    /// Rebuilds the state of saga `saga_id` from its events.
    pub fn from_events<'a>(
        saga_id: impl Into<String>,
        events: impl IntoIterator<Item = &'a SagaEvent>,
    ) -> Self {
        let mut state = SagaState::new(saga_id);
        for event in events {
            state.apply(event);
        }
        state
    }

    /// True once the saga completed or compensated.
    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(SagaStatus::is_terminal)
    }

    /// The step awaiting its reply, if any.
    pub fn pending_step(&self) -> Option<u32> {
        if self.status != Some(SagaStatus::Running) {
            return None;
        }
        let last = self.steps.len().checked_sub(1)?;
        (self.steps[last].status == StepStatus::Pending).then_some(last as u32)
    }

    /// Evolves the state by one event.
    pub fn apply(&mut self, event: &SagaEvent) {
        match event {
            SagaEvent::Started {
                saga_type,
                data,
                correlation_id,
                traceparent,
            } => self.start(
                saga_type,
                data,
                correlation_id.as_deref(),
                traceparent.as_deref(),
            ),
            SagaEvent::StepSent {
                step,
                name,
                deadline,
                attempt,
            } => self.send_step(*step, name, *deadline, *attempt),
            SagaEvent::StepSucceeded { step, result, .. } => {
                if let Some(s) = self.steps.get_mut(*step as usize) {
                    s.status = StepStatus::Succeeded;
                    s.result = Some(result.clone());
                }
            }
            SagaEvent::StepFailed { step, reason, .. } => {
                if let Some(s) = self.steps.get_mut(*step as usize) {
                    s.status = StepStatus::Failed;
                    s.reason = Some(reason.clone());
                }
            }
            SagaEvent::StepDeadlinePassed {
                step, resend_at, ..
            } => {
                if let Some(s) = self.steps.get_mut(*step as usize) {
                    s.resend_at = Some(*resend_at);
                }
            }
            SagaEvent::StepTimedOut { step, .. } => {
                if let Some(s) = self.steps.get_mut(*step as usize) {
                    s.status = StepStatus::TimedOut;
                    s.resend_at = None;
                }
            }
            SagaEvent::StuckAfterPivot { reason, name, .. } => {
                self.status = Some(SagaStatus::NeedsAttention);
                self.attention = Some(format!(
                    "step {name} was refused after the pivot (nothing undone): {reason}"
                ));
            }
            SagaEvent::CompensationStarted { reason, plan } => {
                self.start_compensation(reason, plan);
            }
            SagaEvent::CompensationSent {
                position,
                attempt,
                deadline,
                ..
            } => self.send_compensation(*position, *attempt, *deadline),
            SagaEvent::CompensationSucceeded {
                position, target, ..
            } => self.finish_compensation(*position, target),
            SagaEvent::CompensationFailed { retry_at, .. } => {
                if let Some(c) = &mut self.compensation {
                    c.phase = match retry_at {
                        Some(at) => CompensationPhase::RetryAt(*at),
                        None => CompensationPhase::Parked,
                    };
                }
            }
            SagaEvent::NeedsAttention { reason, .. } => self.park(reason),
            SagaEvent::CompensationRetryRequested { .. } => self.resume_compensation(),
            SagaEvent::Finished { outcome } => {
                self.status = Some((*outcome).into());
            }
        }
    }

    fn start(
        &mut self,
        saga_type: &str,
        data: &Value,
        correlation_id: Option<&str>,
        traceparent: Option<&str>,
    ) {
        saga_type.clone_into(&mut self.saga_type);
        self.data = data.clone();
        self.correlation_id = correlation_id.map(str::to_owned);
        self.traceparent = traceparent.map(str::to_owned);
        self.status = Some(SagaStatus::Running);
    }

    /// A resend replaces the step's entry (fresh deadline, no reply yet) rather than adding one.
    fn send_step(&mut self, step: u32, name: &str, deadline: DateTime<Utc>, attempt: u32) {
        let index = step as usize;
        let state = StepState {
            name: name.to_owned(),
            status: StepStatus::Pending,
            deadline,
            attempt,
            resend_at: None,
            result: None,
            reason: None,
        };
        if index < self.steps.len() {
            self.steps[index] = state;
        } else {
            self.steps.push(state);
        }
    }

    fn start_compensation(&mut self, reason: &str, plan: &[CompensationTarget]) {
        self.status = Some(SagaStatus::Compensating);
        self.failure = Some(reason.to_owned());
        self.compensation = Some(CompensationState {
            reason: reason.to_owned(),
            plan: plan.to_vec(),
            position: 0,
            attempt: 0,
            round_attempts: 0,
            phase: if plan.is_empty() {
                CompensationPhase::Done
            } else {
                CompensationPhase::NotSent
            },
            done: Vec::new(),
        });
    }

    fn send_compensation(&mut self, position: u32, attempt: u32, deadline: DateTime<Utc>) {
        if let Some(c) = &mut self.compensation {
            // Moving on to the next compensation starts its own count of attempts.
            if c.position != position {
                c.round_attempts = 0;
            }
            c.position = position;
            c.attempt = attempt;
            c.round_attempts += 1;
            c.phase = CompensationPhase::Sent { deadline };
        }
    }

    fn finish_compensation(&mut self, position: u32, target: &CompensationTarget) {
        if let Some(c) = &mut self.compensation {
            c.done.push(target.clone());
            c.position = position + 1;
            c.attempt = 0;
            c.round_attempts = 0;
            c.phase = if c.position as usize >= c.plan.len() {
                CompensationPhase::Done
            } else {
                CompensationPhase::NotSent
            };
        }
        // A late success reply un-parks a saga that gave up on this compensation.
        if self.status == Some(SagaStatus::NeedsAttention) {
            self.status = Some(SagaStatus::Compensating);
            self.attention = None;
        }
    }

    fn park(&mut self, reason: &str) {
        self.status = Some(SagaStatus::NeedsAttention);
        self.attention = Some(reason.to_owned());
        if let Some(c) = &mut self.compensation {
            c.phase = CompensationPhase::Parked;
        }
    }

    /// An operator's retry grants the current compensation a fresh round of attempts.
    fn resume_compensation(&mut self) {
        self.status = Some(SagaStatus::Compensating);
        self.attention = None;
        if let Some(c) = &mut self.compensation {
            c.round_attempts = 0;
        }
    }
}
