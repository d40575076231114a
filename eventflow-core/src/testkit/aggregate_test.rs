use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// Given/when/then for an aggregate's decision logic, without a store.
///
/// ```
/// # use eventflow_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Default)] struct Counter { value: u64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Incremented { by: u64 } }
/// # impl DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "Incremented" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("zero")] struct ZeroIncrement;
/// # impl Aggregate for Counter {
/// #     const STREAM_TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = ZeroIncrement;
/// #     fn handle(&self, by: &u64) -> Result<Vec<CounterEvent>, ZeroIncrement> {
/// #         if *by == 0 { Err(ZeroIncrement) } else { Ok(vec![CounterEvent::Incremented { by: *by }]) } }
/// #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
/// # }
/// use eventflow_core::testkit::AggregateTest;
///
/// AggregateTest::<Counter>::given([CounterEvent::Incremented { by: 2 }])
///     .when(&3)
///     .then_expect(&[CounterEvent::Incremented { by: 3 }]);
///
/// AggregateTest::<Counter>::given_no_events()
///     .when(&0)
///     .then_error(&ZeroIncrement);
/// ```
#[derive(Debug)]
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

/// The outcome of [`AggregateTest::when`], to assert on.
#[derive(Debug)]
#[must_use = "a Then asserts nothing until one of its methods is called"]
pub struct Then<A: Aggregate> {
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateTest<A> {
    /// An aggregate that has already recorded `events`.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply(&event);
        }
        AggregateTest { state }
    }

    /// A new aggregate.
    pub fn given_no_events() -> Self {
        Self::given(Vec::new())
    }

    /// Runs the command.
    pub fn when(self, command: &A::Command) -> Then<A> {
        Then {
            outcome: self.state.handle(command),
        }
    }
}

impl<A: Aggregate> Then<A>
where
    A::Event: Debug + PartialEq,
    A::Error: Debug,
{
    /// Asserts the command recorded exactly `expected`.
    #[track_caller]
    pub fn then_expect(self, expected: &[A::Event]) {
        match self.outcome {
            Ok(events) => assert_eq!(events, expected, "the command recorded other events"),
            Err(error) => {
                panic!("expected events {expected:?}, the command was rejected: {error:?}")
            }
        }
    }

    /// Asserts the command was rejected with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: &A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(events) => {
                panic!("expected rejection {expected:?}, the command recorded {events:?}")
            }
            Err(error) => assert_eq!(&error, expected, "the command was rejected differently"),
        }
    }

    /// Asserts the command was rejected with an error that satisfies `check`.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.outcome {
            Ok(events) => panic!("expected a rejection, the command recorded {events:?}"),
            Err(error) => assert!(check(&error), "unexpected rejection: {error:?}"),
        }
    }

    /// The raw outcome, for assertions the other methods do not cover.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}
