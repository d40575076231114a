//! One saga transition. If this process does not know the saga, it loads it and does what its
//! state waits on (a restart, a failure that left the outcome unknown); then the input goes through
//! the core's repository (decide, append with an exact version, catch up and retry on conflict),
//! and the state it ends on says what to send and which timer to arm.

use std::sync::Arc;

use eventflow_core::extension::RepositoryExt;
use eventflow_core::{CommandContext, CommandError, Envelope, Executed, Metadata};
use serde_json::Value;
use tracing::Instrument;

use super::{Orchestrator, SagaData, bump};
use crate::error::{Error, Result};
use crate::event::{SagaEvent, SagaOutcome};
use crate::machine::{self, Disposition, InputKind, Obligations, SagaInput, TimerKey, Unchanged};
use crate::message::Reply;
use crate::state::{SagaState, SagaStatus};

/// What moves a saga, as the orchestrator receives it.
pub(super) enum ShellInput<'a> {
    Start {
        data: Value,
        metadata: Metadata,
    },
    Reply(Reply),
    Timer(TimerKey),
    Retry {
        requested_by: Option<&'a str>,
    },
    /// Only make sure the saga is known (loading it does what its state waits on).
    Load,
}

impl ShellInput<'_> {
    fn name(&self) -> &'static str {
        match self {
            ShellInput::Start { .. } => "start",
            ShellInput::Reply(_) => "reply",
            ShellInput::Timer(_) => "timer",
            ShellInput::Retry { .. } => "retry",
            ShellInput::Load => "resume",
        }
    }

    /// The machine's input, with the metadata a start brings; `None` for `Load`, which only needs
    /// the saga known.
    fn into_kind(self) -> Option<(InputKind, Option<Metadata>)> {
        match self {
            ShellInput::Start { data, metadata } => {
                let kind = InputKind::Start {
                    data,
                    correlation_id: metadata.correlation_id.clone(),
                    traceparent: metadata.traceparent.clone(),
                };
                Some((kind, Some(metadata)))
            }
            ShellInput::Reply(reply) => Some((InputKind::Reply(reply), None)),
            ShellInput::Timer(key) => Some((InputKind::Timer(key), None)),
            ShellInput::Retry { requested_by } => {
                let requested_by = requested_by.map(str::to_owned);
                Some((InputKind::RetryCompensation { requested_by }, None))
            }
            ShellInput::Load => None,
        }
    }
}

/// The metadata of the events an input records: a start's own, else the saga's correlation id.
fn event_metadata(
    start: Option<Metadata>,
    correlation_id: Option<&str>,
    causation: Option<&str>,
) -> Metadata {
    let mut metadata = start.unwrap_or_default();
    if metadata.correlation_id.is_none() {
        metadata.correlation_id = correlation_id.map(str::to_owned);
    }
    if let Some(causation) = causation {
        metadata.causation_id = Some(causation.to_owned());
    }
    metadata
}

/// What this process knows of a saga: the version it last saw and what of its state the shell
/// needs. `None` in a slot means "not known": the next input loads the saga.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) version: u64,
    pub(super) status: Option<SagaStatus>,
    pub(super) correlation_id: Option<String>,
    pub(super) failure: Option<String>,
    attention: Option<String>,
}

impl Known {
    fn of(state: &SagaState, version: u64) -> Self {
        Known {
            version,
            status: state.status,
            correlation_id: state.correlation_id.clone(),
            failure: state.failure.clone(),
            attention: state.attention.clone(),
        }
    }

    /// Not started, or ended: nothing to hold in memory.
    pub(super) fn is_done(&self) -> bool {
        self.status.is_none_or(SagaStatus::is_terminal)
    }
}

/// One saga's lock and what this process knows of it.
pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Known>>>;

impl<D: SagaData> Orchestrator<D> {
    pub(super) async fn process(
        &self,
        saga_id: &str,
        input: ShellInput<'_>,
        causation: Option<&str>,
    ) -> Result<Disposition> {
        let span = tracing::info_span!(
            "eventflow.saga",
            saga_id = %saga_id,
            saga_type = %self.inner.definition.name,
            input = input.name(),
            step = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        if let ShellInput::Reply(reply) = &input {
            span.record("step", reply.step.as_str());
        }
        async {
            let slot = self.slot(saga_id);
            let mut known = slot.lock().await;
            let result = self
                .process_locked(saga_id, &mut known, input, causation)
                .await;
            let done = known.as_ref().is_some_and(Known::is_done);
            let unknown = known.is_none();
            drop(known);
            if result.is_err() && unknown {
                self.after_failure(saga_id);
            }
            if done {
                self.release(saga_id, &slot);
            }
            match result {
                Ok(Disposition::Duplicate) => bump(&self.inner.counters.duplicates),
                Ok(Disposition::Late) => bump(&self.inner.counters.late),
                _ => {}
            }
            result
        }
        .instrument(span)
        .await
    }

    pub(super) async fn process_locked(
        &self,
        saga_id: &str,
        known: &mut Option<Known>,
        input: ShellInput<'_>,
        causation: Option<&str>,
    ) -> Result<Disposition> {
        if known.is_none() {
            *known = Some(self.load_and_resend(saga_id).await?);
        }
        let Some((kind, start_metadata)) = input.into_kind() else {
            return Ok(Disposition::Ignored);
        };
        let Some(current) = known.as_ref() else {
            return Err(self.unknown(saga_id, known, "the saga was not loaded"));
        };
        let (current_version, current_status) = (current.version, current.status);
        if let Some(id) = &current.correlation_id {
            tracing::Span::current().record("correlation_id", id.as_str());
        }
        let starting = start_metadata.is_some() && current_status.is_none();
        let metadata = event_metadata(start_metadata, current.correlation_id.as_deref(), causation);
        if starting {
            // Registered before the saga's first event, so `resume` can always find it.
            self.inner.index.register(saga_id).await?;
        }
        let (result, seen) = self.execute(saga_id, kind, metadata).await;
        match result {
            Ok(executed) => {
                self.applied(saga_id, known, seen, starting, &executed.events)
                    .await
            }
            Err(CommandError::Rejected(Unchanged(disposition))) => {
                self.unchanged(saga_id, known, seen, current_version, disposition)
                    .await
            }
            Err(CommandError::Store(error)) => {
                // The append may or may not have happened: reload next time.
                *known = None;
                self.inner.sagas.evict(saga_id);
                Err(error.into())
            }
            Err(other) => Err(self.unknown(saga_id, known, &other.to_string())),
        }
    }

    /// Loads a saga this process does not know and does what its state waits on: the process
    /// that wrote it may have crashed before sending.
    async fn load_and_resend(&self, saga_id: &str) -> Result<Known> {
        let inner = &self.inner;
        let loaded = inner.sagas.load(saga_id).await?;
        let obligations = machine::obligations(&inner.definition, &loaded.state);
        if obligations.command.is_some() {
            tracing::info!(%saga_id, status = ?loaded.state.status, "saga loaded; resending what is in flight");
        }
        self.fulfil(saga_id, obligations).await?;
        let known = Known::of(&loaded.state, loaded.version);
        inner.sagas.cache_loaded(saga_id, loaded);
        Ok(known)
    }

    /// Runs the input through the repository, with what the state it ends on says (also when the
    /// input changed nothing: the state may still have moved under another orchestrator).
    async fn execute(
        &self,
        saga_id: &str,
        kind: InputKind,
        metadata: Metadata,
    ) -> (
        std::result::Result<Executed<SagaEvent>, CommandError<Unchanged>>,
        Option<(Known, Obligations)>,
    ) {
        let inner = &self.inner;
        let definition = &inner.definition;
        let mut seen: Option<(Known, Obligations)> = None;
        let input = SagaInput {
            kind,
            now: inner.clock.now(),
        };
        let context = CommandContext::new().with_metadata(metadata);
        let result = inner
            .sagas
            .execute_inspecting(saga_id, &input, context, |state, version| {
                seen = Some((
                    Known::of(state, version),
                    machine::obligations(definition, state),
                ));
            })
            .await;
        (result, seen)
    }

    /// The input was recorded: send what the new state waits on and report how the saga moved.
    async fn applied(
        &self,
        saga_id: &str,
        known: &mut Option<Known>,
        seen: Option<(Known, Obligations)>,
        starting: bool,
        events: &[Envelope<SagaEvent>],
    ) -> Result<Disposition> {
        let Some((now_known, obligations)) = seen else {
            return Err(self.unknown(saga_id, known, "appended without a state"));
        };
        if starting {
            bump(&self.inner.counters.started);
        }
        *known = Some(now_known.clone());
        self.fulfil_or_forget(saga_id, known, obligations).await?;
        for envelope in events {
            match &envelope.event {
                SagaEvent::NeedsAttention { .. } => {
                    bump(&self.inner.counters.needs_attention);
                    tracing::error!(
                        %saga_id,
                        reason = now_known.attention.as_deref().unwrap_or(""),
                        "saga needs attention: a compensation cannot finish"
                    );
                }
                SagaEvent::Finished { outcome } => {
                    self.finish(saga_id, *outcome, now_known.failure.clone())
                        .await;
                }
                _ => {}
            }
        }
        Ok(Disposition::Applied)
    }

    /// The input changed nothing, but the saga may have moved since this process last saw it.
    async fn unchanged(
        &self,
        saga_id: &str,
        known: &mut Option<Known>,
        seen: Option<(Known, Obligations)>,
        current_version: u64,
        disposition: Disposition,
    ) -> Result<Disposition> {
        if let Some((now_known, obligations)) = seen
            && now_known.version != current_version
        {
            // Another orchestrator moved the saga meanwhile and may have crashed before
            // sending: do what its state now waits on, as after a load.
            *known = Some(now_known);
            self.fulfil_or_forget(saga_id, known, obligations).await?;
        }
        tracing::debug!(?disposition, "input changed nothing");
        Ok(disposition)
    }

    /// [`fulfil`](Self::fulfil) for a state already recorded: if sending fails, the saga is
    /// recorded but not sent, so it is forgotten and the next input reloads and resends.
    async fn fulfil_or_forget(
        &self,
        saga_id: &str,
        known: &mut Option<Known>,
        obligations: Obligations,
    ) -> Result<()> {
        if let Err(error) = self.fulfil(saga_id, obligations).await {
            *known = None;
            self.inner.sagas.evict(saga_id);
            return Err(error);
        }
        Ok(())
    }

    /// Forgets a saga whose state is no longer known, with the error to return.
    fn unknown(&self, saga_id: &str, known: &mut Option<Known>, what: &str) -> Error {
        *known = None;
        self.inner.sagas.evict(saga_id);
        Error::Core(eventflow_core::Error::backend(
            "saga orchestrator",
            what.to_owned(),
        ))
    }

    /// Sends the command the saga's state has in flight and arms its timer.
    async fn fulfil(&self, saga_id: &str, obligations: Obligations) -> Result<()> {
        if let Some(command) = obligations.command {
            let message = command.to_message(&self.inner.source)?;
            tracing::info_span!(
                "eventflow.saga.step",
                saga_id = %saga_id,
                saga_type = %self.inner.definition.name,
                step = %command.step,
                kind = %command.kind,
                attempt = command.attempt,
                correlation_id = command.correlation_id.as_deref().unwrap_or(""),
            )
            .in_scope(|| tracing::info!(command = %command.command_type, "saga command sent"));
            self.inner.bus.publish(vec![message]).await?;
            bump(&self.inner.counters.commands_sent);
        }
        self.set_timer(saga_id, obligations.timer);
        Ok(())
    }

    async fn finish(&self, saga_id: &str, outcome: SagaOutcome, failure: Option<String>) {
        let counters = &self.inner.counters;
        match outcome {
            SagaOutcome::Completed => bump(&counters.completed),
            SagaOutcome::Compensated => bump(&counters.compensated),
        }
        tracing::info!(%saga_id, ?outcome, reason = failure.as_deref().unwrap_or(""), "saga finished");
        // Best effort: if this fails, `resume` settles the saga later; queries load it meanwhile.
        if let Err(error) = self.inner.index.settle(saga_id, outcome, failure).await {
            tracing::warn!(%saga_id, %error, "could not settle the saga in the index; resume will");
        }
        self.set_timer(saga_id, None);
        self.inner.finished.notify_waiters();
    }
}
