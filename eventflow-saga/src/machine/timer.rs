//! What a saga does when one of its timers fires: a step's reply deadline or resend, a
//! compensation's deadline or retry. Each checks the timer still names what the saga waits on
//! (an earlier one is late), then decides like a reply would.

use chrono::{DateTime, Utc};

use super::{
    Decision, Disposition, TimerKey, fail_compensation, send_compensation, send_step,
    start_compensation,
};
use crate::clock::add;
use crate::definition::SagaDefinition;
use crate::event::SagaEvent;
use crate::state::{CompensationPhase, CompensationState, SagaState, SagaStatus};

pub(super) fn timer(
    definition: &SagaDefinition,
    state: &SagaState,
    key: &TimerKey,
    now: DateTime<Utc>,
) -> Decision {
    match *key {
        TimerKey::Step { step, attempt } => step_deadline(definition, state, step, attempt, now),
        TimerKey::StepResend { step, attempt } => {
            step_resend_due(definition, state, step, attempt, now)
        }
        TimerKey::Compensation { position, attempt } => {
            compensation_deadline(definition, state, position, attempt, now)
        }
        TimerKey::Reload => Decision::none(Disposition::Ignored),
        TimerKey::CompensationRetry { position, attempt } => {
            compensation_retry_due(definition, state, position, attempt, now)
        }
    }
}

/// A step's wait for a reply ended: resend it while the budget lasts, else give it up as timed
/// out and compensate.
fn step_deadline(
    definition: &SagaDefinition,
    state: &SagaState,
    step: u32,
    attempt: u32,
    now: DateTime<Utc>,
) -> Decision {
    let Some(s) = state.steps.get(step as usize) else {
        return Decision::none(Disposition::Ignored);
    };
    let waiting = s.attempt == attempt && s.resend_at.is_none();
    if state.pending_step() != Some(step) || !waiting || s.deadline > now {
        return Decision::none(Disposition::Late);
    }
    let def = &definition.steps[step as usize];
    // Past the pivot there is no going back: the step is resent until it answers.
    if attempt < def.resend.max_attempts || definition.is_forward_only(step as usize) {
        return Decision::apply(vec![SagaEvent::StepDeadlinePassed {
            step,
            name: s.name.clone(),
            attempt,
            deadline: s.deadline,
            resend_at: add(now, def.resend.delay(attempt)),
        }]);
    }
    let mut events = vec![SagaEvent::StepTimedOut {
        step,
        name: s.name.clone(),
        deadline: s.deadline,
    }];
    start_compensation(
        definition,
        state,
        Some(step),
        format!("step {} timed out ({attempt} sends unanswered)", s.name),
        now,
        &mut events,
    );
    Decision::apply(events)
}

/// A step's wait before its resend is over: send it again.
fn step_resend_due(
    definition: &SagaDefinition,
    state: &SagaState,
    step: u32,
    attempt: u32,
    now: DateTime<Utc>,
) -> Decision {
    let Some(s) = state.steps.get(step as usize) else {
        return Decision::none(Disposition::Ignored);
    };
    let due = s.attempt == attempt && s.resend_at.is_some_and(|at| at <= now);
    if state.pending_step() != Some(step) || !due {
        return Decision::none(Disposition::Late);
    }
    Decision::apply(vec![send_step(definition, step as usize, attempt + 1, now)])
}

/// True while the saga compensates and `position`/`attempt` still name its current attempt: a
/// timer armed for an earlier one is late.
fn is_current_attempt(
    state: &SagaState,
    c: &CompensationState,
    position: u32,
    attempt: u32,
) -> bool {
    state.status == Some(SagaStatus::Compensating) && c.position == position && c.attempt == attempt
}

/// A compensation attempt went unanswered: it counts as a failed attempt.
fn compensation_deadline(
    definition: &SagaDefinition,
    state: &SagaState,
    position: u32,
    attempt: u32,
    now: DateTime<Utc>,
) -> Decision {
    let Some(c) = &state.compensation else {
        return Decision::none(Disposition::Ignored);
    };
    let due = matches!(c.phase, CompensationPhase::Sent { deadline } if deadline <= now);
    if !is_current_attempt(state, c, position, attempt) || !due {
        return Decision::none(Disposition::Late);
    }
    let target = c.current().map(ToString::to_string).unwrap_or_default();
    Decision::apply(fail_compensation(
        definition,
        state,
        format!("{target} timed out (attempt {attempt})"),
        now,
    ))
}

/// A failed compensation's backoff is over: send it again.
fn compensation_retry_due(
    definition: &SagaDefinition,
    state: &SagaState,
    position: u32,
    attempt: u32,
    now: DateTime<Utc>,
) -> Decision {
    let Some(c) = &state.compensation else {
        return Decision::none(Disposition::Ignored);
    };
    let due = matches!(c.phase, CompensationPhase::RetryAt(at) if at <= now);
    if !is_current_attempt(state, c, position, attempt) || !due {
        return Decision::none(Disposition::Late);
    }
    let Some(target) = c.current() else {
        return Decision::none(Disposition::Ignored);
    };
    Decision::apply(vec![send_compensation(
        definition,
        position,
        target,
        attempt + 1,
        now,
    )])
}
