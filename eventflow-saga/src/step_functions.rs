//! Export to AWS Step Functions: the same [`SagaDefinition`] as an Amazon States Language document.
//!
//! Shape of the state machine:
//!
//! - `Prepare` (Pass) sets `$.results` to `{step: null, ...}` so every compensation can read its
//!   step's result, even for a step that timed out.
//! - `Step_{name}` per step: a Task with the EventBridge callback pattern
//!   (`arn:aws:states:::events:putEvents.waitForTaskToken`) and `TimeoutSeconds`. The event's
//!   `detail-type` is the command type and its `detail` is the [`SagaCommand`](crate::SagaCommand)
//!   payload plus `taskToken`; the participant answers with `SendTaskSuccess` (its result lands in
//!   `$.results.{name}`) or `SendTaskFailure`. A timeout first resends: `Retry` on
//!   `States.Timeout` renders the step's [`resend`](crate::StepDefinition::resend) budget
//!   (`MaxAttempts` = sends − 1, `IntervalSeconds` its first wait, doubling). When the budget is
//!   spent, `Catch` routes `States.Timeout` to the step's own compensation (its outcome is
//!   unknown) and every other error to the compensation of the step before, exactly as the
//!   [`Orchestrator`](crate::Orchestrator) does.
//! - The [pivot](crate::StepBuilder::pivot) and the steps after it retry `States.Timeout`
//!   without end (`MaxAttempts` 99999999, ASL's largest) and `Catch` every other error into
//!   `NeedsAttention`: past the pivot nothing is compensated.
//! - `Compensate_{name}` per step with a compensation, chained in reverse step order, then
//!   `Final_{command}` for the `on_compensated` command. Each has `Retry` (the definition's
//!   [`Backoff`]: `MaxAttempts` = attempts − 1, doubling
//!   backoff, `JitterStrategy` `FULL` when the backoff has full jitter) and a `Catch` into `NeedsAttention`.
//! - Terminal states: `Completed` (Succeed), `Compensated` (Fail, error `Saga.Compensated`),
//!   `NeedsAttention` (Fail, error `Saga.NeedsAttention`).
//!
//! Differences from the orchestrator: Step Functions has no "parked" state, so `NeedsAttention` ends
//! the execution (as FAILED); `Retry` has no cap on the backoff (`max_backoff` is not rendered,
//! so past the pivot the waits grow to ASL's limits where the orchestrator keeps its longest);
//! the `attempt` field is not sent (participants deduplicate by idempotency key, which they derive
//! from `sagaType`/`sagaId`/`step`/`kind` when it is absent).
//!
//! The execution input is [`execution_input`]: `{"sagaId", "correlationId", "data"}`. Name each
//! execution after the saga id.

use eventflow_core::{Backoff, Jitter};
use serde_json::{Map, Value, json};

use crate::definition::{CommandDefinition, SagaDefinition, StepDefinition};
use crate::message::CommandKind;

/// Where the exported state machine puts its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepFunctionsOptions {
    /// The EventBridge bus the commands go to (`"default"` for the account's default bus).
    pub event_bus_name: String,
    /// The `source` of the command events (match it in the participants' rules).
    pub source: String,
    /// The document's `Comment` (default: names the saga).
    pub comment: Option<String>,
}

impl StepFunctionsOptions {
    /// Commands go to `event_bus_name` with source `source`.
    pub fn new(event_bus_name: impl Into<String>, source: impl Into<String>) -> Self {
        StepFunctionsOptions {
            event_bus_name: event_bus_name.into(),
            source: source.into(),
            comment: None,
        }
    }

    /// Sets the comment.
    #[must_use]
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// The execution input the exported state machine expects.
pub fn execution_input(saga_id: &str, correlation_id: Option<&str>, data: Value) -> Value {
    let mut input = Map::new();
    input.insert("sagaId".into(), json!(saga_id));
    input.insert("correlationId".into(), json!(correlation_id));
    input.insert("data".into(), data);
    Value::Object(input)
}

/// The state name of step `name`'s task.
pub fn step_state(name: &str) -> String {
    format!("Step_{name}")
}

/// The state name of step `name`'s compensation.
pub fn compensation_state(name: &str) -> String {
    format!("Compensate_{name}")
}

/// The state name of the `on_compensated` command.
pub fn final_state(command: &str) -> String {
    format!("Final_{command}")
}

const PREPARE: &str = "Prepare";
const COMPLETED: &str = "Completed";
const COMPENSATED: &str = "Compensated";
const NEEDS_ATTENTION: &str = "NeedsAttention";
/// ASL's largest `MaxAttempts`: "until it answers" for the steps past the pivot.
const MAX_RETRIES: u32 = 99_999_999;

fn seconds(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl SagaDefinition {
    /// Renders the definition as an Amazon States Language document (see the
    /// [module docs](crate::step_functions) for its shape).
    ///
    /// ```
    /// use eventflow_saga::{SagaDefinition, StepFunctionsOptions};
    ///
    /// let definition = SagaDefinition::builder("Transfer")
    ///     .step("Debit", |s| s.on_success("Debited").on_failure("DebitFailed")
    ///         .compensate_with("Refund", |c| c.on_success("Refunded")))
    ///     .step("Credit", |s| s.on_success("Credited").on_failure("CreditFailed"))
    ///     .build()?;
    /// let asl = definition.to_step_functions(&StepFunctionsOptions::new("default", "transfers"));
    ///
    /// assert_eq!(asl["StartAt"], "Prepare");
    /// let credit = &asl["States"]["Step_Credit"];
    /// assert_eq!(credit["Resource"], "arn:aws:states:::events:putEvents.waitForTaskToken");
    /// // Credit failing undoes Debit.
    /// assert_eq!(credit["Catch"][0]["Next"], "Compensate_Debit");
    /// # Ok::<(), eventflow_saga::Error>(())
    /// ```
    pub fn to_step_functions(&self, options: &StepFunctionsOptions) -> Value {
        let mut states = Map::new();
        states.insert(PREPARE.into(), self.prepare_state());
        for (i, step) in self.steps.iter().enumerate() {
            states.insert(step_state(&step.name), self.step_task(options, i, step));
            if let Some(compensation) = &step.compensation {
                let task = self.compensation_task(
                    options,
                    compensation,
                    &step.name,
                    CommandKind::Compensation,
                    &self.compensation_entry(i),
                );
                states.insert(compensation_state(&step.name), task);
            }
        }
        if let Some(c) = &self.on_compensated {
            let task =
                self.compensation_task(options, c, &c.command, CommandKind::Final, COMPENSATED);
            states.insert(final_state(&c.command), task);
        }
        insert_end_states(&mut states);
        json!({
            "Comment": options.comment.clone().unwrap_or_else(|| format!(
                "Saga {} exported by eventflow-saga: steps with compensations in reverse order.",
                self.name
            )),
            "StartAt": PREPARE,
            "States": states,
        })
    }

    /// The `Prepare` state: every step's result slot set to null, so a compensation can read its
    /// step's result even when the step timed out.
    fn prepare_state(&self) -> Value {
        let results: Map<String, Value> = self
            .steps
            .iter()
            .map(|s| (s.name.clone(), Value::Null))
            .collect();
        let first = self
            .steps
            .first()
            .map_or_else(|| COMPLETED.to_owned(), |s| step_state(&s.name));
        json!({
            "Type": "Pass",
            "Result": results,
            "ResultPath": "$.results",
            "Next": first,
        })
    }

    /// The first compensation state for a failure after steps `0..below` have succeeded.
    fn compensation_entry(&self, below: usize) -> String {
        self.steps[..below]
            .iter()
            .rev()
            .find(|s| s.compensation.is_some())
            .map_or_else(
                || {
                    self.on_compensated
                        .as_ref()
                        .map_or_else(|| COMPENSATED.to_owned(), |c| final_state(&c.command))
                },
                |s| compensation_state(&s.name),
            )
    }

    /// Step `index`'s task. A timeout undoes the step itself when it can be (its outcome is
    /// unknown); a refusal undoes only the steps before it.
    fn step_task(
        &self,
        options: &StepFunctionsOptions,
        index: usize,
        step: &StepDefinition,
    ) -> Value {
        let next = self
            .steps
            .get(index + 1)
            .map_or_else(|| COMPLETED.to_owned(), |s| step_state(&s.name));
        let forward_only = self.is_forward_only(index);
        let on_failure = if forward_only {
            NEEDS_ATTENTION.to_owned()
        } else {
            self.compensation_entry(index)
        };
        let on_timeout = if step.compensation.is_some() {
            compensation_state(&step.name)
        } else {
            on_failure.clone()
        };
        let mut task = self.task(options, &step.action, &step.name, CommandKind::Action);
        task.insert(
            "ResultPath".into(),
            json!(format!("$.results.{}", step.name)),
        );
        let resends = if forward_only {
            MAX_RETRIES
        } else {
            step.resend.max_attempts - 1
        };
        if resends > 0 {
            let rule = retry_rule("States.Timeout", step.resend, resends);
            task.insert("Retry".into(), json!([rule]));
        }
        task.insert("Catch".into(), step_catch(&on_timeout, &on_failure));
        task.insert("Next".into(), json!(next));
        Value::Object(task)
    }

    fn task(
        &self,
        options: &StepFunctionsOptions,
        command: &CommandDefinition,
        step: &str,
        kind: CommandKind,
    ) -> Map<String, Value> {
        let mut detail = Map::new();
        detail.insert("sagaId.$".into(), json!("$.sagaId"));
        detail.insert("sagaType".into(), json!(self.name));
        detail.insert("step".into(), json!(step));
        detail.insert("kind".into(), json!(kind.as_str()));
        detail.insert("data.$".into(), json!("$.data"));
        detail.insert("correlationId.$".into(), json!("$.correlationId"));
        detail.insert("taskToken.$".into(), json!("$$.Task.Token"));
        match kind {
            CommandKind::Action => {}
            CommandKind::Compensation => {
                detail.insert("result.$".into(), json!(format!("$.results.{step}")));
                detail.insert("reason.$".into(), json!("$.error"));
            }
            CommandKind::Final => {
                detail.insert("reason.$".into(), json!("$.error"));
            }
        }
        let mut task = Map::new();
        task.insert("Type".into(), json!("Task"));
        task.insert(
            "Resource".into(),
            json!("arn:aws:states:::events:putEvents.waitForTaskToken"),
        );
        task.insert(
            "Parameters".into(),
            json!({
                "Entries": [{
                    "EventBusName": options.event_bus_name,
                    "Source": options.source,
                    "DetailType": command.command,
                    "Detail": detail,
                }]
            }),
        );
        task.insert("TimeoutSeconds".into(), json!(seconds(command.timeout)));
        task
    }

    fn compensation_task(
        &self,
        options: &StepFunctionsOptions,
        command: &CommandDefinition,
        step: &str,
        kind: CommandKind,
        next: &str,
    ) -> Value {
        let mut task = self.task(options, command, step, kind);
        task.insert("ResultPath".into(), Value::Null);
        let retry = self.compensation_retry;
        if retry.max_attempts > 1 {
            let rule = retry_rule("States.ALL", retry, retry.max_attempts - 1);
            task.insert("Retry".into(), json!([rule]));
        }
        task.insert(
            "Catch".into(),
            json!([{
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.compensationError",
                "Next": NEEDS_ATTENTION,
            }]),
        );
        task.insert("Next".into(), json!(next));
        Value::Object(task)
    }
}

/// A step's `Catch`: a timeout gets its own route only when it differs from a refusal's.
fn step_catch(on_timeout: &str, on_failure: &str) -> Value {
    let mut catch = Vec::new();
    if on_timeout != on_failure {
        catch.push(json!({
            "ErrorEquals": ["States.Timeout"],
            "ResultPath": "$.error",
            "Next": on_timeout,
        }));
    }
    catch.push(json!({
        "ErrorEquals": ["States.ALL"],
        "ResultPath": "$.error",
        "Next": on_failure,
    }));
    Value::Array(catch)
}

/// The terminal states every exported saga ends in.
fn insert_end_states(states: &mut Map<String, Value>) {
    states.insert(COMPLETED.into(), json!({ "Type": "Succeed" }));
    states.insert(
        COMPENSATED.into(),
        json!({
            "Type": "Fail",
            "Error": "Saga.Compensated",
            "Cause": "A step failed or timed out; the completed steps were compensated.",
        }),
    );
    states.insert(
        NEEDS_ATTENTION.into(),
        json!({
            "Type": "Fail",
            "Error": "Saga.NeedsAttention",
            "Cause": "A compensation failed after every retry, or a step past the pivot was refused.",
        }),
    );
}

/// A `Retry` rule for `error`: `retries` more tries, the backoff's first wait doubling.
fn retry_rule(error: &str, backoff: Backoff, retries: u32) -> Value {
    let mut rule = json!({
        "ErrorEquals": [error],
        "IntervalSeconds": seconds(backoff.initial_backoff),
        "MaxAttempts": retries,
        "BackoffRate": 2.0,
    });
    if backoff.jitter == Jitter::Full {
        rule["JitterStrategy"] = json!("FULL");
    }
    rule
}
