//! The command loop: idempotency check → decide → append → settle, or catch up and decide again
//! after a conflict. One loop runs both a command on one stream ([`DeciderRepository::execute`])
//! and one command per stream appended atomically ([`DeciderRepository::execute_all`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::{CommandContext, CommandError, DeciderRepository, Executed};
use crate::decider::Decider;
use crate::error::{Error, Result};
use crate::event::{DomainEvent, Envelope};
use crate::metadata::Metadata;
use crate::store::{
    AppendRequest, AppendResult, EventStoreExt, ExpectedVersion, NewEvent, StreamAppend, StreamId,
};

/// One stream's part in a command: what to decide, and the state it is decided on.
struct Target<'c, D: Decider> {
    id: &'c str,
    stream: StreamId,
    command: &'c D::Command,
    /// The state to decide on and its version: from the cache before the first decision, then
    /// what was loaded.
    state: Option<(u64, D::State)>,
    /// Whether `state` is known to be current (loaded from the store, not only cached).
    verified: bool,
    /// The events decided on `state` in the current round.
    decided: Vec<D::Event>,
    /// Once in the append: the decided events, enveloped (the store assigns versions, positions
    /// and time). `None`: the stream is not in the append.
    appended: Option<Vec<Envelope<D::Event>>>,
    /// What the command did to this stream, once it is done.
    executed: Option<Executed<D::Event>>,
}

impl<D: Decider> DeciderRepository<D> {
    /// Runs `command` against `id`.
    // Not an `async fn`: its future would only wrap `execute_observed`'s, and moving that large
    // future into the wrapper costs every command a copy of it (callgrind showed the `memcpy`).
    // `Send` still follows from the future returned, as for an `async fn`.
    pub fn execute<'a>(
        &'a self,
        id: &'a str,
        command: &'a D::Command,
        context: CommandContext,
    ) -> impl Future<Output = Result<Executed<D::Event>, CommandError<D::Error>>> + 'a {
        self.execute_observed(id, command, context, |_, _| {})
    }

    /// Moved: [`execute_inspecting`](crate::extension::RepositoryExt::execute_inspecting).
    #[deprecated(
        since = "0.3.0",
        note = "use `eventflow_core::extension::RepositoryExt::execute_inspecting`"
    )]
    pub async fn execute_and_inspect(
        &self,
        id: &str,
        command: &D::Command,
        context: CommandContext,
        inspect: impl FnOnce(&D::State, u64) + Send,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        self.execute_observed(id, command, context, inspect).await
    }

    /// See [`execute_inspecting`](crate::extension::RepositoryExt::execute_inspecting).
    pub(super) async fn execute_observed(
        &self,
        id: &str,
        command: &D::Command,
        context: CommandContext,
        inspect: impl FnOnce(&D::State, u64) + Send,
    ) -> Result<Executed<D::Event>, CommandError<D::Error>> {
        // One target on the stack: a command on one stream allocates no list of targets. It is
        // built in place and its result taken out of it, never moved whole (each move of it
        // was a `memcpy` per command).
        let mut targets = [self.target(id, command)];
        let span = tracing::info_span!(
            "eventflow.command",
            stream = %targets[0].stream,
            correlation_id = context.metadata.correlation_id.as_deref().unwrap_or(""),
        );
        let mut inspect = Some(inspect);
        let mut once = |_: usize, state: &D::State, version: u64| {
            if let Some(inspect) = inspect.take() {
                inspect(state, version);
            }
        };
        self.run(&mut targets, &context, &mut once)
            .instrument(span)
            .await?;
        Ok(targets[0].executed.take().ok_or_else(unfinished)?)
    }

    /// Runs one command on each of several streams, all or nothing: each command is decided on
    /// its stream's current state, and every event goes into **one** atomic multi-stream append
    /// ([`AppendRequest::with_stream`]) with each stream's exact version. If any command is refused,
    /// nothing is written and the refusal is returned; on a conflict every stream catches up and
    /// every command is decided again.
    ///
    /// For invariants spread over several streams: a transfer between two accounts, reserving
    /// every line of an order from per-product stock. Returns one [`Executed`] per command, in
    /// order; a stream whose command decides no events is left out of the append and its
    /// `Executed` has none. A retry with the same idempotency key appends nothing and returns
    /// the same shape, each stream with the events the first call appended to it. A stream named
    /// twice is a caller's mistake ([`Error::InvalidRequest`]).
    pub async fn execute_all<S: AsRef<str>>(
        &self,
        commands: &[(S, D::Command)],
        context: CommandContext,
    ) -> Result<Vec<Executed<D::Event>>, CommandError<D::Error>> {
        let mut targets: Vec<Target<'_, D>> = commands
            .iter()
            .map(|(id, command)| self.target(id.as_ref(), command))
            .collect();
        for (i, target) in targets.iter().enumerate() {
            if targets[..i].iter().any(|t| t.stream == target.stream) {
                return Err(Error::InvalidRequest(format!(
                    "stream {} is named twice in one execute_all",
                    target.stream
                ))
                .into());
            }
        }
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let span = tracing::info_span!(
            "eventflow.command",
            streams = targets.len(),
            correlation_id = context.metadata.correlation_id.as_deref().unwrap_or(""),
        );
        self.run(&mut targets, &context, &mut |_, _, _| {})
            .instrument(span)
            .await?;
        targets
            .into_iter()
            .map(|t| {
                t.executed
                    .ok_or_else(unfinished)
                    .map_err(CommandError::from)
            })
            .collect()
    }

    /// The target of `command` on `id`, with its cached state if any (the stream id comes from
    /// the cache on a hit, so a hit builds none).
    fn target<'c>(&self, id: &'c str, command: &'c D::Command) -> Target<'c, D> {
        let (stream, state) = match self.take_cached(id) {
            Some((stream, entry)) => (stream, Some(entry)),
            None => (self.stream_id(id), None),
        };
        Target {
            id,
            stream,
            command,
            verified: state.is_none(),
            state,
            decided: Vec::new(),
            appended: None,
            executed: None,
        }
    }

    /// The loop. A cached state is decided on without reading the stream first: the append's
    /// version check proves it was current. Only a decision that appends nothing (a refusal, an
    /// empty result) is not proven by an append, so that stream first catches up and decides
    /// again. After a conflict every state catches up from its version rather than from scratch.
    /// Each target's [`Executed`] is left in its `executed` slot.
    async fn run(
        &self,
        targets: &mut [Target<'_, D>],
        context: &CommandContext,
        inspect: &mut (impl FnMut(usize, &D::State, u64) + Send),
    ) -> Result<(), CommandError<D::Error>> {
        let mut conflicts = 0;
        loop {
            if let Some(key) = &context.idempotency_key
                && let Some(original) = self.dyn_store().find_idempotency_key(key).await?
            {
                return self.replay_for(targets, key, original).await;
            }
            let keyed_single = context.idempotency_key.is_some() && targets.len() == 1;
            if let Err(rejection) = self.decide_all(targets, keyed_single, inspect).await {
                self.put_back(targets);
                return Err(rejection);
            }
            let Some(request) = self.request(targets, context)? else {
                self.unchanged(targets, inspect);
                return Ok(());
            };
            let append = self
                .dyn_store()
                .append(request)
                .instrument(tracing::debug_span!("eventflow.append"))
                .await;
            match append {
                Ok(result) => {
                    self.settle(targets, &result, inspect).await;
                    return Ok(());
                }
                Err(Error::DuplicateIdempotencyKey { key, original }) => {
                    return self.replay_for(targets, &key, *original).await;
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    conflicts += 1;
                    if !self.wait_after_conflict(conflicts).await {
                        return Err(conflict.into());
                    }
                    tracing::debug!(conflicts, "conflict; catching up and deciding again");
                    for target in targets.iter_mut() {
                        target.verified = true;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Decides every target's command, loading what is not cached or must be verified. A refusal
    /// is returned at once, after `inspect` saw the state it was refused in. `keyed_single`: one
    /// stream and an idempotency key, whose recording appends even when nothing is decided, so
    /// that append proves the state too.
    async fn decide_all(
        &self,
        targets: &mut [Target<'_, D>],
        keyed_single: bool,
        inspect: &mut (impl FnMut(usize, &D::State, u64) + Send),
    ) -> Result<(), CommandError<D::Error>> {
        for (index, target) in targets.iter_mut().enumerate() {
            loop {
                let (version, state) = match target.state.take() {
                    Some(current) if !target.verified => current,
                    carried => {
                        target.verified = true;
                        let (state, version) =
                            self.load_stream(target.id, &target.stream, carried).await?;
                        (version, state)
                    }
                };
                let outcome = self.decider.decide(&state, target.command);
                let proven = matches!(&outcome, Ok(events) if !events.is_empty() || keyed_single);
                target.state = Some((version, state));
                if !proven && !target.verified {
                    // Catch up from the cached version and decide again.
                    target.verified = true;
                    continue;
                }
                match outcome {
                    Ok(events) => {
                        target.decided = events;
                        target.appended = None;
                    }
                    Err(rejection) => {
                        if let Some((version, state)) = &target.state {
                            inspect(index, state, *version);
                        }
                        return Err(CommandError::Rejected(rejection));
                    }
                }
                break;
            }
        }
        Ok(())
    }

    /// The append of every target that decided events, each at the version it was decided on.
    /// With an idempotency key and nothing decided, the first stream is appended nothing, to
    /// record the key. `None`: nothing to append.
    fn request(
        &self,
        targets: &mut [Target<'_, D>],
        context: &CommandContext,
    ) -> Result<Option<AppendRequest>> {
        let nothing_decided = targets.iter().all(|t| t.decided.is_empty());
        if nothing_decided && context.idempotency_key.is_none() {
            return Ok(None);
        }
        // One copy of the metadata for every event of the command, record and envelope alike.
        let metadata = Arc::new(context.metadata.clone());
        let mut appending = targets
            .iter_mut()
            .enumerate()
            // With a key and nothing decided, the first stream is appended nothing: it records
            // the key.
            .filter(|(index, target)| {
                !target.decided.is_empty() || (nothing_decided && *index == 0)
            });
        let Some((_, first)) = appending.next() else {
            return Ok(None);
        };
        let mut request = AppendRequest::new(
            first.stream.clone(),
            ExpectedVersion::Observed(first.version()),
            first.encode(&metadata)?,
        );
        for (_, target) in appending {
            let (stream, expected) = (target.stream.clone(), target.version());
            let events = target.encode(&metadata)?;
            request.other_streams.push(StreamAppend::new(
                stream,
                ExpectedVersion::Observed(expected),
                events,
            ));
        }
        request.idempotency_key.clone_from(&context.idempotency_key);
        request.outbox = self.outbox;
        Ok(Some(request))
    }

    /// Nothing was decided anywhere: every state goes back to the cache as it was.
    fn unchanged(
        &self,
        targets: &mut [Target<'_, D>],
        inspect: &mut (impl FnMut(usize, &D::State, u64) + Send),
    ) {
        for (index, target) in targets.iter_mut().enumerate() {
            let Some((version, state)) = target.state.take() else {
                continue;
            };
            inspect(index, &state, version);
            self.unchanged_stream(target, version, state, false);
        }
    }

    /// The result of a command that appended nothing to `target`'s stream (at `version`), whose
    /// state goes back into the cache.
    fn unchanged_stream(
        &self,
        target: &mut Target<'_, D>,
        version: u64,
        state: D::State,
        deduplicated: bool,
    ) {
        target.executed = Some(Executed {
            stream_id: target.stream.clone(),
            version,
            events: Vec::new(),
            deduplicated,
        });
        self.cache_put(&target.stream, version, state);
    }

    /// After the append: the envelopes get the versions, positions and time the store assigned,
    /// each state evolves through its events, is snapshotted by policy and goes back to the cache.
    async fn settle(
        &self,
        targets: &mut [Target<'_, D>],
        result: &AppendResult,
        inspect: &mut (impl FnMut(usize, &D::State, u64) + Send),
    ) {
        let mut results = std::iter::once(result).chain(&result.other_streams);
        for (index, target) in targets.iter_mut().enumerate() {
            let Some((before, mut state)) = target.state.take() else {
                continue;
            };
            // Results come in append order, which only the appended targets are in.
            let appended = target
                .appended
                .take()
                .and_then(|envelopes| Some((envelopes, results.next()?)));
            let (version, events) = match appended {
                Some((mut envelopes, result)) => {
                    for (i, envelope) in envelopes.iter_mut().enumerate() {
                        envelope.version = result.first_version + i as u64;
                        envelope.position = result.first_position.map(|p| p + i as u64);
                        envelope.recorded_at = result.recorded_at;
                        self.decider.evolve(&mut state, &envelope.event);
                    }
                    (result.last_version, envelopes)
                }
                None => (before, Vec::new()),
            };
            self.maybe_snapshot(&target.stream, before, version, &state)
                .await;
            inspect(index, &state, version);
            target.executed = Some(Executed {
                stream_id: target.stream.clone(),
                version,
                events,
                deduplicated: false,
            });
            self.cache_put(&target.stream, version, state);
        }
    }

    /// A refused command writes nothing: every state decided on goes back to the cache.
    fn put_back(&self, targets: &mut [Target<'_, D>]) {
        for target in targets {
            if let Some((version, state)) = target.state.take() {
                self.cache_put(&target.stream, version, state);
            }
        }
    }

    /// After the `conflicts`-th conflict of one command: false when no try is left, else true
    /// once it is time to try again.
    async fn wait_after_conflict(&self, conflicts: u32) -> bool {
        if !self.conflict_retry.allows_retry_after(conflicts) {
            return false;
        }
        if conflicts == 1 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.conflict_retry.delay(conflicts - 1)).await;
        }
        true
    }

    pub(super) fn cache_put(&self, stream: &StreamId, version: u64, state: D::State) {
        if let Some(cache) = &self.cache {
            cache.put(stream, version, state);
        }
    }

    /// The result of an earlier command with the same idempotency key, in the shape of this
    /// call: one [`Executed`] per target, each with what the first call appended to its stream.
    /// A key first used on other streams is a caller's mistake, reported with the original
    /// append ([`Error::DuplicateIdempotencyKey`]) rather than decoded.
    async fn replay_for(
        &self,
        targets: &mut [Target<'_, D>],
        key: &str,
        original: AppendResult,
    ) -> Result<(), CommandError<D::Error>> {
        if !targets.iter().any(|t| t.stream == original.stream) {
            self.put_back(targets);
            return Err(CommandError::Store(Error::DuplicateIdempotencyKey {
                key: key.to_owned(),
                original: Box::new(original),
            }));
        }
        for target in targets.iter_mut() {
            let recorded = std::iter::once(&original)
                .chain(&original.other_streams)
                .find(|r| r.stream == target.stream);
            match recorded {
                Some(recorded) => {
                    let mut recorded = recorded.clone();
                    recorded.other_streams.clear();
                    if let Some((version, state)) = target.state.take() {
                        self.cache_put(&target.stream, version, state);
                    }
                    target.executed = Some(self.read_executed(recorded).await?);
                }
                // The first call decided nothing for this stream.
                None => {
                    let (state, version) = self
                        .load_stream(target.id, &target.stream, target.state.take())
                        .await?;
                    self.unchanged_stream(target, version, state, true);
                }
            }
        }
        Ok(())
    }

    /// What an append that recorded an idempotency key wrote to its (first) stream, typed.
    pub(super) async fn read_executed(&self, original: AppendResult) -> Result<Executed<D::Event>> {
        let recorded = self
            .dyn_store()
            .read_range(
                &original.stream,
                original.first_version,
                original.last_version,
            )
            .await?;
        let events = self.decode_all(recorded)?;
        Ok(Executed {
            stream_id: original.stream,
            version: original.last_version,
            events,
            deduplicated: true,
        })
    }
}

impl<D: Decider> Target<'_, D> {
    /// The version the current decision was made on.
    fn version(&self) -> u64 {
        self.state.as_ref().map_or(0, |(version, _)| *version)
    }

    /// Encodes the decided events for the store, keeping them as envelopes to settle.
    fn encode(&mut self, metadata: &Arc<Metadata>) -> Result<Vec<NewEvent>> {
        let decided = std::mem::take(&mut self.decided);
        let (events, envelopes) = encode(&self.stream, decided, metadata)?;
        self.appended = Some(envelopes);
        Ok(events)
    }
}

/// Encodes decided events for `stream`, and the typed envelopes they become once the store
/// assigns versions ([`DeciderRepository::settle`]).
fn encode<E: DomainEvent>(
    stream: &StreamId,
    events: Vec<E>,
    metadata: &Arc<Metadata>,
) -> Result<(Vec<NewEvent>, Vec<Envelope<E>>)> {
    let mut new_events = Vec::with_capacity(events.len());
    for event in &events {
        new_events.push(NewEvent::encode(event, Arc::clone(metadata))?);
    }
    let envelopes = events
        .into_iter()
        .zip(&new_events)
        .map(|(event, new)| Envelope {
            event_id: new.event_id,
            stream_id: stream.clone(),
            version: 0,
            position: None,
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
            metadata: Arc::clone(metadata),
            event,
        })
        .collect();
    Ok((new_events, envelopes))
}

/// A target the loop left without a result: a bug in the loop, reported rather than panicked on.
fn unfinished() -> Error {
    Error::InvalidRequest("the command loop left a stream without a result".to_owned())
}
