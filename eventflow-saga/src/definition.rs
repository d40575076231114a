//! Saga definitions: plain data, built with a readable builder and checked once.

use std::collections::BTreeSet;
use std::time::Duration;

use eventflow_core::{Backoff, Jitter};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default timeout of a step or a compensation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A saga: an ordered list of steps, each a command sent to a participant, with the replies that
/// mean success and failure, a timeout and an optional compensation.
///
/// It is data (serde-serialisable, comparable), so the same value drives the
/// [`Orchestrator`](crate::Orchestrator) and renders a Step Functions state machine
/// ([`to_step_functions`](Self::to_step_functions)). Build one with [`SagaDefinition::builder`]:
///
/// ```
/// use std::time::Duration;
/// use eventflow_saga::SagaDefinition;
///
/// let place_order = SagaDefinition::builder("PlaceOrder")
///     .triggered_by("OrderPlaced")
///     .step("ReserveInventory", |s| {
///         s.on_success("InventoryReserved")
///             .on_failure("InventoryReservationFailed")
///             .timeout(Duration::from_secs(10))
///             .compensate_with("ReleaseInventory", |c| c.on_success("InventoryReleased"))
///     })
///     .step("AuthorizePayment", |s| {
///         s.on_success("PaymentAuthorized")
///             .on_failure("PaymentDeclined")
///             .compensate_with("CancelPayment", |c| c.on_success("PaymentCancelled"))
///     })
///     .step("CompleteOrder", |s| s.on_success("OrderCompleted").on_failure("OrderCompletionFailed"))
///     .on_compensated("CancelOrder", |c| c.on_success("OrderCancelled"))
///     .build()?;
///
/// assert_eq!(place_order.steps().len(), 3);
/// assert_eq!(place_order.step(1).map(|s| s.command()), Some("AuthorizePayment"));
/// # Ok::<(), eventflow_saga::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SagaDefinition {
    /// The saga type's name, e.g. `"PlaceOrder"`. It names the saga's streams and appears in every
    /// command and reply.
    pub name: String,
    /// The message type that starts a saga, if sagas are started from the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The steps, run in this order.
    pub steps: Vec<StepDefinition>,
    /// A command sent once every compensation is done (e.g. `CancelOrder`), with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_compensated: Option<CommandDefinition>,
    /// How failed or timed-out compensations are retried before the saga needs attention.
    pub compensation_retry: Backoff,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StepDefinition {
    /// The step's name, unique in the saga (e.g. `"ReserveInventory"`).
    pub name: String,
    /// The command it sends: its message type and the replies it expects.
    #[serde(flatten)]
    pub action: CommandDefinition,
    /// How to undo the step once it succeeded, if it can be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CommandDefinition>,
    /// How the command is resent when its deadline passes without a reply. A deadline means
    /// "outcome unknown", not "failed": the same command (same idempotency key, so the
    /// participant answers a duplicate with the reply it recorded) is sent again
    /// `resend.delay(n)` after the `n`th deadline, up to `resend.max_attempts` sends in all.
    /// Only then is the step failed, or, at and after the pivot, resent at the longest delay
    /// until a reply comes.
    #[serde(default = "default_resend")]
    pub resend: Backoff,
    /// Whether this step is the saga's pivot: once its command is sent, the saga only goes
    /// forward (see [`SagaDefinitionBuilder`]'s rules).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pivot: bool,
}

impl StepDefinition {
    /// The command's message type (shortcut for `action.command`).
    pub fn command(&self) -> &str {
        &self.action.command
    }

    /// The least time the step waits for a reply, over all its sends, before it is failed: every
    /// send's timeout plus the waits between them (counted as zero when the resend backoff has
    /// jitter, which may draw them so). A participant down, or a message held by a dead process,
    /// for less than this never fails the step.
    pub fn budget(&self) -> Duration {
        let sends = self.resend.max_attempts.max(1);
        let mut budget = self.action.timeout.saturating_mul(sends);
        if self.resend.jitter == Jitter::None {
            for resend in 1..sends {
                budget = budget.saturating_add(self.resend.delay(resend));
            }
        }
        budget
    }
}

/// A command the saga sends and the replies it waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CommandDefinition {
    /// The command's message type, e.g. `"ReserveInventory"`.
    pub command: String,
    /// Reply message types that mean the command succeeded.
    pub success: Vec<String>,
    /// Reply message types that mean the command failed (and changed nothing).
    #[serde(default)]
    pub failure: Vec<String>,
    /// How long to wait for a reply.
    #[serde(with = "eventflow_core::backoff::millis", rename = "timeoutMs")]
    pub timeout: Duration,
}

/// 5 sends, 1 s doubling to at most 60 s.
fn default_compensation_retry() -> Backoff {
    Backoff::new(5, Duration::from_secs(1), Duration::from_secs(60))
}

/// The default resend policy of a step: 5 sends, waiting 1 s doubling to at most 30 s between a
/// deadline and the next send (with the default 30 s timeout, a step fails after 2 min 45 s).
pub const DEFAULT_RESEND: Backoff =
    Backoff::new(5, Duration::from_secs(1), Duration::from_secs(30));

fn default_resend() -> Backoff {
    DEFAULT_RESEND
}

impl SagaDefinition {
    /// Starts a definition named `name`.
    pub fn builder(name: impl Into<String>) -> SagaDefinitionBuilder {
        SagaDefinitionBuilder {
            name: name.into(),
            trigger: None,
            steps: Vec::new(),
            on_compensated: None,
            compensation_retry: default_compensation_retry(),
        }
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[StepDefinition] {
        &self.steps
    }

    /// The step at `index`.
    pub fn step(&self, index: usize) -> Option<&StepDefinition> {
        self.steps.get(index)
    }

    /// The index of the step named `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The index of the pivot step, if the saga has one.
    pub fn pivot(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.pivot)
    }

    /// Whether step `index` is the pivot or after it: once it is sent, the saga never compensates.
    pub fn is_forward_only(&self, index: usize) -> bool {
        self.pivot().is_some_and(|pivot| index >= pivot)
    }

    /// Every reply message type the orchestrator listens to (for its bus subscription), sorted.
    pub fn reply_types(&self) -> Vec<String> {
        let mut types = BTreeSet::new();
        let commands = self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(&s.action).chain(s.compensation.as_ref()))
            .chain(self.on_compensated.as_ref());
        for command in commands {
            types.extend(command.success.iter().cloned());
            types.extend(command.failure.iter().cloned());
        }
        types.into_iter().collect()
    }

    /// Every command message type the saga sends, sorted.
    pub fn command_types(&self) -> Vec<String> {
        let mut types = BTreeSet::new();
        for step in &self.steps {
            types.insert(step.action.command.clone());
            if let Some(c) = &step.compensation {
                types.insert(c.command.clone());
            }
        }
        if let Some(c) = &self.on_compensated {
            types.insert(c.command.clone());
        }
        types.into_iter().collect()
    }

    /// Checks the rules [`SagaDefinitionBuilder::build`] enforces (useful after deserialising).
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(Error::Definition(reason));
        check_name("saga name", &self.name)?;
        if self.steps.is_empty() {
            return fail(format!("saga {} has no steps", self.name));
        }
        let mut names = BTreeSet::new();
        for step in &self.steps {
            check_name("step name", &step.name)?;
            if !names.insert(step.name.as_str()) {
                return fail(format!("step name {:?} is used twice", step.name));
            }
            check_command(&format!("step {}", step.name), &step.action)?;
            if let Some(c) = &step.compensation {
                check_command(&format!("compensation of step {}", step.name), c)?;
            }
        }
        if let Some(c) = &self.on_compensated {
            check_command("on_compensated", c)?;
        }
        check_pivot(self)?;
        if let Some(trigger) = &self.trigger
            && trigger.is_empty()
        {
            return fail("the trigger message type is empty".into());
        }
        Ok(())
    }
}

/// Names end up in stream ids, idempotency keys and Step Functions state names: keep them plain.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Definition(format!(
            "{what} {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
        )))
    }
}

/// One pivot at most, and nothing to undo from it on: a compensation there would be a promise the
/// saga never keeps, since it does not compensate once the pivot is sent.
fn check_pivot(definition: &SagaDefinition) -> Result<()> {
    let Some(pivot) = definition.pivot() else {
        return Ok(());
    };
    let pivot_name = &definition.steps[pivot].name;
    for step in &definition.steps[pivot + 1..] {
        if step.pivot {
            return Err(Error::Definition(format!(
                "steps {pivot_name} and {} are both marked as the pivot: a saga has one",
                step.name
            )));
        }
    }
    for step in &definition.steps[pivot..] {
        if step.compensation.is_some() {
            let place = if step.pivot {
                "the pivot".to_owned()
            } else {
                format!("after the pivot {pivot_name}")
            };
            return Err(Error::Definition(format!(
                "step {} has a compensation but is {place}: past the pivot a saga only goes \
                 forward, so it would never run",
                step.name
            )));
        }
    }
    Ok(())
}

fn check_command(what: &str, c: &CommandDefinition) -> Result<()> {
    if c.command.is_empty() {
        return Err(Error::Definition(format!(
            "{what}: the command type is empty"
        )));
    }
    if c.success.is_empty() {
        return Err(Error::Definition(format!(
            "{what}: no reply type means success (call on_success)"
        )));
    }
    if let Some(both) = c.success.iter().find(|t| c.failure.contains(t)) {
        return Err(Error::Definition(format!(
            "{what}: reply type {both:?} means both success and failure"
        )));
    }
    if c.success.iter().chain(&c.failure).any(String::is_empty) {
        return Err(Error::Definition(format!("{what}: a reply type is empty")));
    }
    if c.timeout.is_zero() {
        return Err(Error::Definition(format!("{what}: the timeout is zero")));
    }
    Ok(())
}

/// Builds a [`SagaDefinition`]; see there for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct SagaDefinitionBuilder {
    name: String,
    trigger: Option<String>,
    steps: Vec<StepDefinition>,
    on_compensated: Option<CommandDefinition>,
    compensation_retry: Backoff,
}

impl SagaDefinitionBuilder {
    /// Starts a saga for every message of this type on the bus (see
    /// [`OrchestratorBuilder::trigger`](crate::OrchestratorBuilder::trigger)).
    pub fn triggered_by(mut self, message_type: impl Into<String>) -> Self {
        self.trigger = Some(message_type.into());
        self
    }

    /// Adds a step named `name`. Its command type defaults to the name; `configure` sets the replies,
    /// the timeout and the compensation.
    pub fn step(
        mut self,
        name: impl Into<String>,
        configure: impl FnOnce(StepBuilder) -> StepBuilder,
    ) -> Self {
        let name = name.into();
        let step = configure(StepBuilder {
            name: name.clone(),
            action: CommandBuilder::new(name),
            compensation: None,
            resend: DEFAULT_RESEND,
            pivot: false,
        });
        self.steps.push(StepDefinition {
            name: step.name,
            action: step.action.0,
            compensation: step.compensation,
            resend: step.resend,
            pivot: step.pivot,
        });
        self
    }

    /// Sends `command` once every compensation is done (e.g. `CancelOrder`), retried like a
    /// compensation. It carries the reason the saga failed.
    pub fn on_compensated(
        mut self,
        command: impl Into<String>,
        configure: impl FnOnce(CommandBuilder) -> CommandBuilder,
    ) -> Self {
        self.on_compensated = Some(configure(CommandBuilder::new(command.into())).0);
        self
    }

    /// Sets how compensations are retried: `max_attempts` sends per round, the first included.
    /// When they are used up the saga is parked as
    /// [`NeedsAttention`](crate::SagaStatus::NeedsAttention), visible to queries, until
    /// [`Orchestrator::retry_compensation`](crate::Orchestrator::retry_compensation) or a late
    /// success reply moves it on. Default: 5 sends, 1 s doubling to at most 60 s, no jitter
    /// (a saga's timers are part of its persisted, replayable state).
    pub fn compensation_retry(mut self, retry: Backoff) -> Self {
        self.compensation_retry = retry;
        self
    }

    /// Checks and returns the definition: a valid name, at least one step, unique step names, at
    /// least one success reply per command, no reply type meaning both success and failure,
    /// non-zero timeouts, at most one pivot and no compensation on the pivot or after it.
    pub fn build(self) -> Result<SagaDefinition> {
        let definition = SagaDefinition {
            name: self.name,
            trigger: self.trigger,
            steps: self.steps,
            on_compensated: self.on_compensated,
            compensation_retry: self.compensation_retry,
        };
        definition.validate()?;
        Ok(definition)
    }
}

/// Configures one step; see [`SagaDefinitionBuilder::step`].
#[derive(Debug, Clone)]
#[must_use]
pub struct StepBuilder {
    name: String,
    action: CommandBuilder,
    compensation: Option<CommandDefinition>,
    resend: Backoff,
    pivot: bool,
}

impl StepBuilder {
    /// Sets the command's message type (default: the step's name).
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.action.0.command = command.into();
        self
    }

    /// Adds a reply type that means success.
    pub fn on_success(mut self, reply_type: impl Into<String>) -> Self {
        self.action = self.action.on_success(reply_type);
        self
    }

    /// Adds a reply type that means failure.
    pub fn on_failure(mut self, reply_type: impl Into<String>) -> Self {
        self.action = self.action.on_failure(reply_type);
        self
    }

    /// Sets how long to wait for a reply to each send (default 30 s). When it passes, the
    /// command is resent as [`resend`](Self::resend) says.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.action = self.action.timeout(timeout);
        self
    }

    /// Sets how the command is resent when a deadline passes without a reply: `max_attempts`
    /// sends in all, `delay(n)` after the `n`th deadline (default [`DEFAULT_RESEND`]: 5 sends,
    /// 1 s doubling to 30 s). The step fails only when every send went unanswered;
    /// [`StepDefinition::budget`] is how long that takes.
    pub fn resend(mut self, resend: Backoff) -> Self {
        self.resend = resend;
        self
    }

    /// Makes this step the saga's pivot (Garcia-Molina's compensatable / pivot / retriable
    /// structure): the steps before it can be undone, this one and the ones after it cannot.
    /// Once its command is sent the saga never compensates: it and every later step are resent
    /// until they answer, and a refusal parks the saga as
    /// [`NeedsAttention`](crate::SagaStatus::NeedsAttention) with nothing undone. A reaction to
    /// the pivot's success outside the saga (capturing a payment when an order completes) is
    /// therefore safe. Building refuses a compensation on the pivot or after it.
    pub fn pivot(mut self) -> Self {
        self.pivot = true;
        self
    }

    /// Undoes the step with `command` when a later step fails or this one times out. The
    /// compensation's timeout defaults to the step's.
    pub fn compensate_with(
        mut self,
        command: impl Into<String>,
        configure: impl FnOnce(CommandBuilder) -> CommandBuilder,
    ) -> Self {
        let base = CommandBuilder::new(command.into()).timeout(self.action.0.timeout);
        self.compensation = Some(configure(base).0);
        self
    }
}

/// Configures a compensation or the `on_compensated` command.
#[derive(Debug, Clone)]
#[must_use]
pub struct CommandBuilder(CommandDefinition);

impl CommandBuilder {
    fn new(command: String) -> Self {
        CommandBuilder(CommandDefinition {
            command,
            success: Vec::new(),
            failure: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Adds a reply type that means success.
    pub fn on_success(mut self, reply_type: impl Into<String>) -> Self {
        self.0.success.push(reply_type.into());
        self
    }

    /// Adds a reply type that means failure.
    pub fn on_failure(mut self, reply_type: impl Into<String>) -> Self {
        self.0.failure.push(reply_type.into());
        self
    }

    /// Sets how long to wait for a reply (default 30 s, or the step's timeout for a compensation).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(builder: SagaDefinitionBuilder) -> String {
        match builder.build() {
            Err(Error::Definition(reason)) => reason,
            other => panic!("expected a refused definition, got {other:?}"),
        }
    }

    fn undoable(s: StepBuilder, reply: &str) -> StepBuilder {
        s.on_success(reply)
            .compensate_with("Undo", |c| c.on_success("Undone"))
    }

    #[test]
    fn a_compensation_on_or_after_the_pivot_is_refused() {
        let on_pivot = SagaDefinition::builder("S")
            .step("A", |s| undoable(s, "ADone"))
            .step("B", |s| undoable(s, "BDone").pivot());
        assert!(refusal(on_pivot).contains("step B has a compensation but is the pivot"));

        let after_pivot = SagaDefinition::builder("S")
            .step("A", |s| s.on_success("ADone").pivot())
            .step("B", |s| undoable(s, "BDone"));
        assert!(refusal(after_pivot).contains("is after the pivot A"));

        let two_pivots = SagaDefinition::builder("S")
            .step("A", |s| s.on_success("ADone").pivot())
            .step("B", |s| s.on_success("BDone").pivot());
        assert!(refusal(two_pivots).contains("both marked as the pivot"));
    }

    #[test]
    fn the_pivot_splits_compensatable_from_forward_only_steps() {
        let definition = SagaDefinition::builder("S")
            .step("A", |s| undoable(s, "ADone"))
            .step("B", |s| s.on_success("BDone").pivot())
            .step("C", |s| s.on_success("CDone"))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(definition.pivot(), Some(1));
        let forward: Vec<bool> = (0..3).map(|i| definition.is_forward_only(i)).collect();
        assert_eq!(forward, [false, true, true]);
        // It survives serde: a stored definition keeps its pivot and budgets.
        let json = serde_json::to_string(&definition).unwrap_or_else(|e| panic!("{e}"));
        let back: SagaDefinition = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, definition);
    }

    #[test]
    fn a_budget_counts_every_send_and_the_waits_between_them() {
        let step = |resend: Backoff| {
            SagaDefinition::builder("S")
                .step("A", |s| {
                    s.on_success("ADone")
                        .timeout(Duration::from_secs(10))
                        .resend(resend)
                })
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
                .steps[0]
                .budget()
        };
        let resend = Backoff::new(6, Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(step(resend), Duration::from_secs(60 + 1 + 2 + 4 + 8 + 16));
        assert_eq!(step(Backoff::none()), Duration::from_secs(10));
        // Jittered waits may be drawn as zero: only the timeouts are certain.
        assert_eq!(step(resend.with_full_jitter()), Duration::from_secs(60));
    }
}
