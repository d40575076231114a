//! The aggregate: a consistency boundary that decides on commands and evolves by events.

use crate::event::DomainEvent;

/// A consistency boundary that decides on commands and evolves by applying its own events.
///
/// `handle` is pure (no I/O, no clock: put times and ids in the command) so it can be retried on a
/// conflict and tested with [`given/when/then`](crate::testkit); `apply` is infallible because an
/// event is a fact that already happened.
///
/// ```
/// use eventflow_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Counter { value: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Incremented { by: u64 } }
///
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &'static str { "Incremented" }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("increment must be positive")]
/// struct ZeroIncrement;
///
/// impl Aggregate for Counter {
///     const STREAM_TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = ZeroIncrement;
///
///     fn handle(&self, by: &u64) -> Result<Vec<CounterEvent>, ZeroIncrement> {
///         if *by == 0 { return Err(ZeroIncrement); }
///         Ok(vec![CounterEvent::Incremented { by: *by }])
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Incremented { by } => self.value += by }
///     }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// Names this aggregate's streams: the stream of aggregate `42` is `"{STREAM_TYPE}-42"`.
    const STREAM_TYPE: &'static str;
    /// What the aggregate is asked to do.
    type Command: Send + Sync;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides on a command given the current state: the events to record, or a refusal.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);
}
