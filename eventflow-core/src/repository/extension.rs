//! [`RepositoryExt`]: what frameworks built on the repository need beyond commands.

use std::future::Future;

use super::{CommandContext, CommandError, DeciderRepository, Executed, Loaded};
use crate::decider::Decider;
use crate::error::Result;

/// What a framework built on the repository needs beyond commands and loads (the saga crate's
/// orchestrator keeps its states in the repository's cache and acts on the state a command ended
/// on). Applications do not need it: see [`extension`](crate::extension).
pub trait RepositoryExt {
    /// The decider the repository runs.
    type Decider: Decider;

    /// Puts a state the caller loaded (and acted on) into the cache, so the next command starts
    /// from it. Without a cache it is dropped.
    fn cache_loaded(&self, id: &str, loaded: Loaded<<Self::Decider as Decider>::State>);

    /// Drops `id` from the cache: the next command loads it from the store.
    fn evict(&self, id: &str);

    /// Saves a snapshot of a state the caller loaded, whatever the snapshot policy: for streams
    /// written outside commands (appends with [`ExpectedVersion::Any`](crate::ExpectedVersion::Any)
    /// of facts that need no decision) that still want short loads. Without
    /// [`with_snapshots`](DeciderRepository::with_snapshots) it is
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest).
    fn snapshot_loaded(
        &self,
        id: &str,
        loaded: &Loaded<<Self::Decider as Decider>::State>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs `command` against `id`, and shows `inspect` the state the command ended on with its
    /// version (after the append; after a refusal, the state it was refused in), before the state
    /// goes back into the cache. It is not called for a command answered from its idempotency key.
    ///
    /// For callers that act on the state rather than on the events, such as a process manager
    /// that sends whatever its state has in flight: a version other than the one it last saw plus
    /// the events it appended means another writer moved the stream.
    #[allow(clippy::type_complexity)]
    fn execute_inspecting(
        &self,
        id: &str,
        command: &<Self::Decider as Decider>::Command,
        context: CommandContext,
        inspect: impl FnOnce(&<Self::Decider as Decider>::State, u64) + Send,
    ) -> impl Future<
        Output = std::result::Result<
            Executed<<Self::Decider as Decider>::Event>,
            CommandError<<Self::Decider as Decider>::Error>,
        >,
    > + Send;
}

impl<D: Decider> RepositoryExt for DeciderRepository<D> {
    type Decider = D;

    fn cache_loaded(&self, id: &str, loaded: Loaded<D::State>) {
        self.cache_put(&self.stream_id(id), loaded.version, loaded.state);
    }

    fn evict(&self, id: &str) {
        self.forget_cached(id);
    }

    fn snapshot_loaded(
        &self,
        id: &str,
        loaded: &Loaded<D::State>,
    ) -> impl Future<Output = Result<()>> + Send {
        self.snapshot_state(id, loaded)
    }

    fn execute_inspecting(
        &self,
        id: &str,
        command: &D::Command,
        context: CommandContext,
        inspect: impl FnOnce(&D::State, u64) + Send,
    ) -> impl Future<Output = std::result::Result<Executed<D::Event>, CommandError<D::Error>>> + Send
    {
        self.execute_observed(id, command, context, inspect)
    }
}
