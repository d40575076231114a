//! The decider: the general shape of everything that keeps its state in a stream.
//!
//! An [`Aggregate`] is the easy form (its state is itself, it decides without context). A decider
//! is the general one: a value that carries what deciding needs (a saga definition, say), an
//! initial state per stream, a decision and an evolution. The
//! [`DeciderRepository`](crate::repository::DeciderRepository) runs either: load, decide, append
//! with an exact version, retry on conflict, cache, snapshot, idempotency keys.

use std::marker::PhantomData;

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;

/// Decides on commands against a state folded from a stream's events.
///
/// `decide` and `evolve` are pure: anything that varies (the time, a definition, configuration)
/// is either in the command or in the decider value itself, so a decision can be retried after a
/// conflict and tested without a store.
pub trait Decider: Send + Sync + 'static {
    /// The state folded from a stream's events.
    type State: Send + Sync + 'static;
    /// What it is asked to do.
    type Command: Send + Sync;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses a command (or, for a process manager, why an input changes nothing).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Names its streams: the stream of `id` is `"{stream_type}-{id}"`.
    fn stream_type(&self) -> &str;

    /// The state of a stream without events.
    fn initial_state(&self, id: &str) -> Self::State;

    /// The events `command` records in `state`, or why it refuses.
    fn decide(
        &self,
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one recorded event.
    fn evolve(&self, state: &mut Self::State, event: &Self::Event);
}

/// The decider of aggregate type `A`: stateless, `A` is its own state.
pub struct AggregateDecider<A>(PhantomData<fn() -> A>);

impl<A> AggregateDecider<A> {
    /// The decider of `A`.
    pub const fn new() -> Self {
        AggregateDecider(PhantomData)
    }
}

impl<A> Default for AggregateDecider<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> std::fmt::Debug for AggregateDecider<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregateDecider")
    }
}

impl<A: Aggregate> Decider for AggregateDecider<A> {
    type State = A;
    type Command = A::Command;
    type Event = A::Event;
    type Error = A::Error;

    fn stream_type(&self) -> &str {
        A::STREAM_TYPE
    }

    fn initial_state(&self, _id: &str) -> A {
        A::default()
    }

    fn decide(&self, state: &A, command: &A::Command) -> Result<Vec<A::Event>, A::Error> {
        state.handle(command)
    }

    fn evolve(&self, state: &mut A, event: &A::Event) {
        state.apply(event);
    }
}
