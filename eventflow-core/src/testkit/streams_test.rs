//! Given/when/then for a command over several streams of one aggregate type, decided the way
//! [`DeciderRepository::execute_all`](crate::DeciderRepository::execute_all) decides it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// Given/when/then for one command per stream, all or nothing: each stream's command is decided
/// on that stream's state, and a refusal of any is the outcome (nothing is recorded anywhere).
///
/// ```
/// # use eventflow_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Default)] struct Account { balance: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Moved { In(i64), Out(i64) }
/// # impl DomainEvent for Moved { fn event_type(&self) -> &'static str { "Moved" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("insufficient funds")] struct Insufficient;
/// # impl Aggregate for Account {
/// #     const STREAM_TYPE: &'static str = "account";
/// #     type Command = i64; type Event = Moved; type Error = Insufficient;
/// #     fn handle(&self, amount: &i64) -> Result<Vec<Moved>, Insufficient> {
/// #         if self.balance + amount < 0 { return Err(Insufficient) }
/// #         Ok(vec![if *amount < 0 { Moved::Out(-amount) } else { Moved::In(*amount) }]) }
/// #     fn apply(&mut self, e: &Moved) { match e { Moved::In(a) => self.balance += a, Moved::Out(a) => self.balance -= a } }
/// # }
/// use eventflow_core::testkit::StreamsTest;
///
/// // A transfer of 30 from a to b.
/// StreamsTest::<Account>::given([("a", vec![Moved::In(50)]), ("b", vec![])])
///     .when(&[("a", -30), ("b", 30)])
///     .then_expect(&[("a", vec![Moved::Out(30)]), ("b", vec![Moved::In(30)])]);
///
/// StreamsTest::<Account>::given([("a", vec![Moved::In(10)])])
///     .when(&[("a", -30), ("b", 30)])
///     .then_error(&Insufficient);
/// ```
#[derive(Debug)]
pub struct StreamsTest<A: Aggregate> {
    states: BTreeMap<String, A>,
}

/// Each stream's id with the events its command decided, in command order.
pub type Decided<E> = Vec<(String, Vec<E>)>;

/// The outcome of [`StreamsTest::when`], to assert on.
#[derive(Debug)]
#[must_use = "a ThenStreams asserts nothing until one of its methods is called"]
pub struct ThenStreams<A: Aggregate> {
    outcome: Result<Decided<A::Event>, A::Error>,
}

impl<A: Aggregate> StreamsTest<A> {
    /// Streams by id and the events each recorded before; a stream not named starts empty.
    pub fn given<I, S>(streams: impl IntoIterator<Item = (S, I)>) -> Self
    where
        S: Into<String>,
        I: IntoIterator<Item = A::Event>,
    {
        let states = streams
            .into_iter()
            .map(|(id, events)| {
                let mut state = A::default();
                for event in events {
                    state.apply(&event);
                }
                (id.into(), state)
            })
            .collect();
        StreamsTest { states }
    }

    /// Decides each command on its stream's state, in order.
    pub fn when<S: AsRef<str>>(self, commands: &[(S, A::Command)]) -> ThenStreams<A> {
        let empty = A::default();
        let mut decided = Vec::with_capacity(commands.len());
        for (id, command) in commands {
            let state = self.states.get(id.as_ref()).unwrap_or(&empty);
            match state.handle(command) {
                Ok(events) => decided.push((id.as_ref().to_owned(), events)),
                Err(refusal) => {
                    return ThenStreams {
                        outcome: Err(refusal),
                    };
                }
            }
        }
        ThenStreams {
            outcome: Ok(decided),
        }
    }
}

impl<A: Aggregate> ThenStreams<A>
where
    A::Event: Debug + PartialEq,
    A::Error: Debug,
{
    /// Asserts the events each stream's command decided, in command order.
    #[track_caller]
    pub fn then_expect<S: AsRef<str>>(self, expected: &[(S, Vec<A::Event>)]) {
        let expected: Vec<(&str, &[A::Event])> = expected
            .iter()
            .map(|(id, events)| (id.as_ref(), events.as_slice()))
            .collect();
        match self.outcome {
            Ok(decided) => {
                let decided: Vec<(&str, &[A::Event])> = decided
                    .iter()
                    .map(|(id, events)| (id.as_str(), events.as_slice()))
                    .collect();
                assert_eq!(decided, expected, "the commands decided other events");
            }
            Err(error) => {
                panic!("expected events {expected:?}, a command was rejected: {error:?}")
            }
        }
    }

    /// Asserts that a command was refused with `expected`, so nothing is recorded on any stream.
    #[track_caller]
    pub fn then_error(self, expected: &A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(decided) => {
                panic!("expected rejection {expected:?}, the commands decided {decided:?}")
            }
            Err(error) => assert_eq!(&error, expected, "a command was rejected differently"),
        }
    }

    /// The outcome: each stream's events, or the refusal.
    pub fn outcome(self) -> Result<Decided<A::Event>, A::Error> {
        self.outcome
    }
}
