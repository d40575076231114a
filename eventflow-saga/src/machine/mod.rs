//! The orchestrator's core: a pure, deterministic state machine, run as a [`Decider`] by the core's
//! [`DeciderRepository`](eventflow_core::DeciderRepository).
//!
//! `decide(definition, state, input)` returns the events to record; `obligations(definition,
//! state)` gives what a saga in a state waits on: the complete command in flight and its one
//! timer. The shell sends and arms exactly that after every transition, and after loading a saga
//! it did not write (a restart, another orchestrator's write). No I/O, no clock, no randomness:
//! the time comes in the input.

mod timer;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventflow_core::Decider;
use serde_json::Value;

use crate::clock::add;
use crate::definition::{CommandDefinition, SagaDefinition};
use crate::event::{CompensationTarget, SagaEvent, SagaOutcome};
use crate::message::{CommandKind, Reply, SagaCommand, idempotency_key};
use crate::state::{CompensationPhase, SagaState, SagaStatus, StepStatus};
use timer::timer;

/// An input to a saga, owned, with the time it is decided at: the decider's command.
#[derive(Debug, Clone)]
pub(crate) struct SagaInput {
    pub(crate) kind: InputKind,
    pub(crate) now: DateTime<Utc>,
}

/// What moves a saga (the owned form of [`Input`]).
#[derive(Debug, Clone)]
pub(crate) enum InputKind {
    Start {
        data: Value,
        correlation_id: Option<String>,
        traceparent: Option<String>,
    },
    Reply(Reply),
    Timer(TimerKey),
    RetryCompensation {
        requested_by: Option<String>,
    },
}

impl InputKind {
    fn borrowed(&self) -> Input<'_> {
        match self {
            InputKind::Start {
                data,
                correlation_id,
                traceparent,
            } => Input::Start {
                data,
                correlation_id: correlation_id.as_deref(),
                traceparent: traceparent.as_deref(),
            },
            InputKind::Reply(reply) => Input::Reply(reply),
            InputKind::Timer(key) => Input::Timer(key),
            InputKind::RetryCompensation { requested_by } => Input::RetryCompensation {
                requested_by: requested_by.as_deref(),
            },
        }
    }
}

/// An input that records nothing, and why: the decider's "refusal".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the input changed nothing ({0:?})")]
pub(crate) struct Unchanged(pub(crate) Disposition);

/// The state machine of one saga definition as a [`Decider`]: streams `saga-{name}-{saga id}`.
#[derive(Debug, Clone)]
pub(crate) struct SagaDecider {
    definition: Arc<SagaDefinition>,
    stream_type: String,
}

impl SagaDecider {
    pub(crate) fn new(definition: Arc<SagaDefinition>) -> Self {
        let stream_type = format!("saga-{}", definition.name);
        SagaDecider {
            definition,
            stream_type,
        }
    }

    pub(crate) fn definition(&self) -> &Arc<SagaDefinition> {
        &self.definition
    }
}

impl Decider for SagaDecider {
    type State = SagaState;
    type Command = SagaInput;
    type Event = SagaEvent;
    type Error = Unchanged;

    fn stream_type(&self) -> &str {
        &self.stream_type
    }

    fn initial_state(&self, saga_id: &str) -> SagaState {
        SagaState::new(saga_id)
    }

    fn decide(&self, state: &SagaState, input: &SagaInput) -> Result<Vec<SagaEvent>, Unchanged> {
        let decision = decide(&self.definition, state, input.kind.borrowed(), input.now);
        if decision.events.is_empty() {
            Err(Unchanged(decision.disposition))
        } else {
            Ok(decision.events)
        }
    }

    fn evolve(&self, state: &mut SagaState, event: &SagaEvent) {
        state.apply(event);
    }
}

/// Something that can move a saga.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Start {
        data: &'a Value,
        correlation_id: Option<&'a str>,
        traceparent: Option<&'a str>,
    },
    Reply(&'a Reply),
    Timer(&'a TimerKey),
    RetryCompensation {
        requested_by: Option<&'a str>,
    },
}

/// A durable timer: the deadline lives in the saga's events, the key says what it is for. A timer
/// that fires after its purpose passed (a reply came first) is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// Send `attempt` of step `step` reaches its deadline.
    Step { step: u32, attempt: u32 },
    /// Step `step` is sent again after send `attempt` went unanswered.
    StepResend { step: u32, attempt: u32 },
    /// Attempt `attempt` of compensation `position` times out.
    Compensation { position: u32, attempt: u32 },
    /// Compensation `position` is retried after attempt `attempt` failed.
    CompensationRetry { position: u32, attempt: u32 },
    /// Not a deadline: the shell reloads the saga (after a failure left its state unknown).
    Reload,
}

/// What the input did to the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// The saga moved on.
    Applied,
    /// The input had already been applied (a redelivered reply, a repeated start).
    Duplicate,
    /// The input came after its moment (a reply after the step timed out, a stale timer).
    Late,
    /// The input does not concern this saga or is not expected by its definition.
    Ignored,
    /// The operation does not apply in the saga's state.
    Refused,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub(crate) events: Vec<SagaEvent>,
    pub(crate) disposition: Disposition,
}

impl Decision {
    fn none(disposition: Disposition) -> Self {
        Decision {
            events: Vec::new(),
            disposition,
        }
    }

    fn apply(events: Vec<SagaEvent>) -> Self {
        Decision {
            events,
            disposition: Disposition::Applied,
        }
    }
}

/// What a saga in some state waits on: the command in flight, complete (sent after the
/// transition that records it, resent after a load: participants deduplicate by its key), and
/// the saga's one timer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Obligations {
    pub(crate) command: Option<SagaCommand>,
    pub(crate) timer: Option<(DateTime<Utc>, TimerKey)>,
}

/// Decides what `input` does to a saga in `state`.
pub(crate) fn decide(
    definition: &SagaDefinition,
    state: &SagaState,
    input: Input<'_>,
    now: DateTime<Utc>,
) -> Decision {
    match input {
        Input::Start {
            data,
            correlation_id,
            traceparent,
        } => {
            if state.status.is_some() {
                return Decision::none(Disposition::Duplicate);
            }
            let mut events = vec![SagaEvent::Started {
                saga_type: definition.name.clone(),
                data: data.clone(),
                correlation_id: correlation_id.map(str::to_owned),
                traceparent: traceparent.map(str::to_owned),
            }];
            events.push(send_step(definition, 0, 1, now));
            Decision::apply(events)
        }
        Input::Reply(reply) => {
            if state.status.is_none() {
                return Decision::none(Disposition::Ignored);
            }
            match reply.kind {
                CommandKind::Action => step_reply(definition, state, reply, now),
                CommandKind::Compensation | CommandKind::Final => {
                    compensation_reply(definition, state, reply, now)
                }
            }
        }
        Input::Timer(key) => timer(definition, state, key, now),
        Input::RetryCompensation { requested_by } => {
            let Some(c) = &state.compensation else {
                return Decision::none(Disposition::Refused);
            };
            if state.status != Some(SagaStatus::NeedsAttention) {
                return Decision::none(Disposition::Refused);
            }
            let Some(target) = c.current() else {
                return Decision::none(Disposition::Refused);
            };
            let events = vec![
                SagaEvent::CompensationRetryRequested {
                    requested_by: requested_by.map(str::to_owned),
                },
                send_compensation(definition, c.position, target, c.attempt + 1, now),
            ];
            Decision::apply(events)
        }
    }
}

fn send_step(
    definition: &SagaDefinition,
    step: usize,
    attempt: u32,
    now: DateTime<Utc>,
) -> SagaEvent {
    let def = &definition.steps[step];
    SagaEvent::StepSent {
        step: step as u32,
        name: def.name.clone(),
        deadline: add(now, def.action.timeout),
        attempt,
    }
}

/// The command definition a compensation target sends.
pub(crate) fn compensation_command<'d>(
    definition: &'d SagaDefinition,
    target: &CompensationTarget,
) -> Option<&'d CommandDefinition> {
    match target {
        CompensationTarget::Step { step, .. } => definition
            .steps
            .get(*step as usize)
            .and_then(|s| s.compensation.as_ref()),
        CompensationTarget::Final { .. } => definition.on_compensated.as_ref(),
    }
}

fn send_compensation(
    definition: &SagaDefinition,
    position: u32,
    target: &CompensationTarget,
    attempt: u32,
    now: DateTime<Utc>,
) -> SagaEvent {
    let timeout = compensation_command(definition, target)
        .map_or(crate::definition::DEFAULT_TIMEOUT, |c| c.timeout);
    SagaEvent::CompensationSent {
        position,
        target: target.clone(),
        attempt,
        deadline: add(now, timeout),
    }
}

fn step_reply(
    definition: &SagaDefinition,
    state: &SagaState,
    reply: &Reply,
    now: DateTime<Utc>,
) -> Decision {
    let Some(index) = definition.step_index(&reply.step) else {
        return Decision::none(Disposition::Ignored);
    };
    let def = &definition.steps[index];
    let success = def.action.success.contains(&reply.message_type);
    let failure = def.action.failure.contains(&reply.message_type);
    if !success && !failure {
        return Decision::none(Disposition::Ignored);
    }
    let Some(step) = state.steps.get(index) else {
        // Never sent: not a reply to anything this saga did.
        return Decision::none(Disposition::Ignored);
    };
    match step.status {
        StepStatus::Pending if state.status == Some(SagaStatus::Running) => {}
        StepStatus::Succeeded if success => return Decision::none(Disposition::Duplicate),
        StepStatus::Failed if failure => return Decision::none(Disposition::Duplicate),
        _ => return Decision::none(Disposition::Late),
    }
    let name = def.name.clone();
    if success {
        let mut events = vec![SagaEvent::StepSucceeded {
            step: index as u32,
            name,
            reply_type: reply.message_type.clone(),
            reply_id: reply.message_id.clone(),
            result: reply.payload.clone(),
        }];
        if index + 1 < definition.steps.len() {
            events.push(send_step(definition, index + 1, 1, now));
        } else {
            events.push(SagaEvent::Finished {
                outcome: SagaOutcome::Completed,
            });
        }
        Decision::apply(events)
    } else {
        let reason = reply.reason();
        let mut events = vec![SagaEvent::StepFailed {
            step: index as u32,
            name: name.clone(),
            reply_type: reply.message_type.clone(),
            reply_id: reply.message_id.clone(),
            reason: reason.clone(),
        }];
        if definition.is_forward_only(index) {
            events.push(SagaEvent::StuckAfterPivot {
                step: index as u32,
                name,
                reason,
            });
            return Decision::apply(events);
        }
        start_compensation(
            definition,
            state,
            None,
            format!("step {name} failed: {reason}"),
            now,
            &mut events,
        );
        Decision::apply(events)
    }
}

/// Plans the compensations: the timed-out step (its outcome is unknown), then every succeeded step
/// with a compensation, latest first, then the final command.
pub(crate) fn compensation_plan(
    definition: &SagaDefinition,
    state: &SagaState,
    timed_out: Option<u32>,
) -> Vec<CompensationTarget> {
    let mut plan = Vec::new();
    let compensable = |i: usize| {
        definition
            .steps
            .get(i)
            .is_some_and(|s| s.compensation.is_some())
    };
    if let Some(t) = timed_out
        && compensable(t as usize)
    {
        plan.push(CompensationTarget::Step {
            step: t,
            name: definition.steps[t as usize].name.clone(),
        });
    }
    for (i, step) in state.steps.iter().enumerate().rev() {
        if step.status == StepStatus::Succeeded && compensable(i) {
            plan.push(CompensationTarget::Step {
                step: i as u32,
                name: step.name.clone(),
            });
        }
    }
    if let Some(c) = &definition.on_compensated {
        plan.push(CompensationTarget::Final {
            command: c.command.clone(),
        });
    }
    plan
}

fn start_compensation(
    definition: &SagaDefinition,
    state: &SagaState,
    timed_out: Option<u32>,
    reason: String,
    now: DateTime<Utc>,
    events: &mut Vec<SagaEvent>,
) {
    let plan = compensation_plan(definition, state, timed_out);
    let first = plan.first().cloned();
    events.push(SagaEvent::CompensationStarted { reason, plan });
    match first {
        Some(target) => events.push(send_compensation(definition, 0, &target, 1, now)),
        None => events.push(SagaEvent::Finished {
            outcome: SagaOutcome::Compensated,
        }),
    }
}

fn compensation_reply(
    definition: &SagaDefinition,
    state: &SagaState,
    reply: &Reply,
    now: DateTime<Utc>,
) -> Decision {
    let target = match reply.kind {
        CommandKind::Final => CompensationTarget::Final {
            command: reply.step.clone(),
        },
        _ => match definition.step_index(&reply.step) {
            Some(i) => CompensationTarget::Step {
                step: i as u32,
                name: reply.step.clone(),
            },
            None => return Decision::none(Disposition::Ignored),
        },
    };
    let Some(command) = compensation_command(definition, &target) else {
        return Decision::none(Disposition::Ignored);
    };
    if matches!(&target, CompensationTarget::Final { command: c } if *c != command.command) {
        return Decision::none(Disposition::Ignored);
    }
    let success = command.success.contains(&reply.message_type);
    let failure = command.failure.contains(&reply.message_type);
    if !success && !failure {
        return Decision::none(Disposition::Ignored);
    }
    let Some(c) = &state.compensation else {
        return Decision::none(Disposition::Ignored);
    };
    let Some(position) = c.plan.iter().position(|t| *t == target) else {
        return Decision::none(Disposition::Ignored);
    };
    let position = position as u32;
    if position < c.position || c.phase == CompensationPhase::Done {
        return Decision::none(Disposition::Duplicate);
    }
    if position > c.position || reply.attempt > c.attempt || c.attempt == 0 {
        // Not sent yet: not an answer to anything this saga sent.
        return Decision::none(Disposition::Ignored);
    }
    if success {
        // Any attempt's success means the compensation is done: they share one idempotency key.
        let mut events = vec![SagaEvent::CompensationSucceeded {
            position,
            target,
            attempt: reply.attempt,
            reply_id: reply.message_id.clone(),
        }];
        let next = position + 1;
        match c.plan.get(next as usize) {
            Some(next_target) => {
                events.push(send_compensation(definition, next, next_target, 1, now));
            }
            None => events.push(SagaEvent::Finished {
                outcome: SagaOutcome::Compensated,
            }),
        }
        return Decision::apply(events);
    }
    let sent = matches!(c.phase, CompensationPhase::Sent { .. });
    if reply.attempt != c.attempt || !sent {
        return Decision::none(Disposition::Late);
    }
    Decision::apply(fail_compensation(definition, state, reply.reason(), now))
}

/// The current compensation attempt failed: retry after backoff, or park the saga.
fn fail_compensation(
    definition: &SagaDefinition,
    state: &SagaState,
    reason: String,
    now: DateTime<Utc>,
) -> Vec<SagaEvent> {
    let Some(c) = &state.compensation else {
        return Vec::new();
    };
    let Some(target) = c.current().cloned() else {
        return Vec::new();
    };
    let retry = definition.compensation_retry;
    if c.round_attempts >= retry.max_attempts {
        vec![
            SagaEvent::CompensationFailed {
                position: c.position,
                target: target.clone(),
                attempt: c.attempt,
                reason: reason.clone(),
                retry_at: None,
            },
            SagaEvent::NeedsAttention {
                position: c.position,
                reason: format!("{target} failed {} times, last: {reason}", c.round_attempts),
                target,
            },
        ]
    } else {
        vec![SagaEvent::CompensationFailed {
            position: c.position,
            target,
            attempt: c.attempt,
            reason,
            retry_at: Some(add(now, retry.delay(c.round_attempts))),
        }]
    }
}

/// What a saga in `state` waits on: its command in flight and its timer.
pub(crate) fn obligations(definition: &SagaDefinition, state: &SagaState) -> Obligations {
    if let Some(step) = state.pending_step() {
        let Some(def) = definition.steps.get(step as usize) else {
            return Obligations::default();
        };
        let sent = &state.steps[step as usize];
        let attempt = sent.attempt;
        if let Some(resend_at) = sent.resend_at {
            // Between a deadline and the resend: nothing in flight to send again.
            return Obligations {
                command: None,
                timer: Some((resend_at, TimerKey::StepResend { step, attempt })),
            };
        }
        let command = command(
            definition,
            state,
            (&def.action.command, &def.name, CommandKind::Action, attempt),
            None,
            None,
        );
        return Obligations {
            command: Some(command),
            timer: Some((sent.deadline, TimerKey::Step { step, attempt })),
        };
    }
    let Some(c) = state
        .compensation
        .as_ref()
        .filter(|_| state.status == Some(SagaStatus::Compensating))
    else {
        return Obligations::default();
    };
    let (position, attempt) = (c.position, c.attempt);
    match c.phase {
        CompensationPhase::Sent { deadline } => {
            let timer = Some((deadline, TimerKey::Compensation { position, attempt }));
            let Some(target) = c.current() else {
                return Obligations::default();
            };
            let Some(def) = compensation_command(definition, target) else {
                return Obligations {
                    command: None,
                    timer,
                };
            };
            let reason = Some(Value::String(c.reason.clone()));
            let command = match target {
                CompensationTarget::Step { step, name } => {
                    let result = state
                        .steps
                        .get(*step as usize)
                        .and_then(|s| s.result.clone())
                        .unwrap_or(Value::Null);
                    let what = (&def.command, name, CommandKind::Compensation, attempt);
                    command(definition, state, what, Some(result), reason)
                }
                CompensationTarget::Final { command: name } => {
                    let what = (&def.command, name, CommandKind::Final, attempt);
                    command(definition, state, what, None, reason)
                }
            };
            Obligations {
                command: Some(command),
                timer,
            }
        }
        CompensationPhase::RetryAt(at) => Obligations {
            command: None,
            timer: Some((at, TimerKey::CompensationRetry { position, attempt })),
        },
        _ => Obligations::default(),
    }
}

/// The complete command of saga `state`: `(command type, step name, kind, attempt)`.
fn command(
    definition: &SagaDefinition,
    state: &SagaState,
    (command_type, step, kind, attempt): (&String, &String, CommandKind, u32),
    result: Option<Value>,
    reason: Option<Value>,
) -> SagaCommand {
    SagaCommand {
        saga_id: state.saga_id.clone(),
        saga_type: definition.name.clone(),
        step: step.clone(),
        kind,
        attempt,
        idempotency_key: idempotency_key(&definition.name, &state.saga_id, step, kind),
        data: state.data.clone(),
        result,
        reason,
        task_token: None,
        command_type: command_type.clone(),
        message_id: String::new(),
        correlation_id: state.correlation_id.clone(),
        traceparent: state.traceparent.clone(),
    }
}

#[cfg(test)]
mod tests;
