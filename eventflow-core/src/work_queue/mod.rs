//! A work queue: competing consumers, a visibility timeout, and a dead-letter queue after N
//! receives. `SqsWorkQueue` (in `eventflow-bus`) is the cloud implementation,
//! [`InMemoryWorkQueue`](crate::InMemoryWorkQueue) its twin with the same semantics; [`Worker`]
//! runs a [`MessageHandler`](crate::MessageHandler) over either. The traits live here, beside
//! [`EventBus`](crate::EventBus), so that an application and a backend crate depend on the core
//! only; the `testkit` feature's `work_queue_conformance` checks a backend against them.
//!
//! The model is SQS's, because that is what the notification context runs on in AWS:
//!
//! - [`send`](WorkQueue::send) enqueues messages. Each is received by **one** consumer at a time
//!   (competing consumers), not fanned out.
//! - [`receive`](WorkQueue::receive) hands out up to `max` visible messages and hides each for the
//!   queue's visibility timeout, counting the receive. It waits up to `wait` for the first one.
//! - [`ack`](WorkQueue::ack) deletes a message; [`change_visibility`](WorkQueue::change_visibility)
//!   hides it for a new duration from now (0 makes it visible at once: a *nack*; a longer one
//!   extends a lease or delays the retry).
//! - A message received `max_receives` times without being deleted moves to the dead-letter queue
//!   when it would be received once more. [`dead_letters`](DeadLetterQueue::dead_letters) lists
//!   them without removing them; [`redrive`](DeadLetterQueue::redrive) sends them back as new
//!   messages.
//!
//! Delivery is at least once: a consumer that crashes, or is slower than the visibility timeout
//! without extending it, lets the message go to another consumer.

mod worker;

use std::fmt;
use std::time::Duration;

use crate::bus::{DeadLetter, Message};
use crate::error::Result;
use async_trait::async_trait;

pub use worker::{Worker, WorkerOptions};

/// Settings a queue reports about itself; the [`Worker`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueSettings {
    /// The queue's logical name: [`Delivery::subscription`](crate::Delivery) and
    /// [`DeadLetter::subscription`] carry it.
    pub name: String,
    /// How long a received message stays hidden unless acknowledged or changed.
    pub visibility_timeout: Duration,
    /// Receives after which a message goes to the dead-letter queue; `None`: no dead-letter queue,
    /// a failing message is retried for as long as the queue keeps it.
    pub max_receives: Option<u32>,
}

impl QueueSettings {
    /// Settings with a 30 s visibility timeout and dead-lettering after 5 receives.
    pub fn new(name: impl Into<String>) -> Self {
        QueueSettings {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receives: Some(5),
        }
    }

    /// Sets the visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Sets the receives before dead-lettering (`None`: no dead-letter queue). Values below 1
    /// become 1.
    pub fn with_max_receives(mut self, max_receives: Option<u32>) -> Self {
        self.max_receives = max_receives.map(|n| n.max(1));
        self
    }
}

/// [`QueueSettings::new`]: a queue with the default settings.
impl From<&str> for QueueSettings {
    fn from(name: &str) -> Self {
        QueueSettings::new(name)
    }
}

/// The handle of one receive of a message: acknowledge or change the visibility with it. A later
/// receive of the same message gets a new receipt.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Receipt(String);

impl Receipt {
    /// A receipt from the queue's own handle (used by queue implementations).
    pub fn new(handle: impl Into<String>) -> Self {
        Receipt(handle.into())
    }

    /// The queue's handle.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SQS receipt handles are hundreds of characters long: show the start only.
        let short: String = self.0.chars().take(16).collect();
        write!(f, "Receipt({short}…)")
    }
}

/// A message handed out by [`WorkQueue::receive`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// The message as sent.
    pub message: Message,
    /// The handle of this receive.
    pub receipt: Receipt,
    /// How many times the message was received, this time included (1 the first time).
    pub receive_count: u32,
}

impl ReceivedMessage {
    /// Builds a received message (used by queue implementations).
    pub fn new(message: Message, receipt: Receipt, receive_count: u32) -> Self {
        ReceivedMessage {
            message,
            receipt,
            receive_count,
        }
    }
}

/// What becomes of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Done: delete it.
    Ack,
    /// Hide it for this long from now: `Duration::ZERO` makes it visible at once (a nack), a
    /// longer time delays the retry or extends the lease.
    Hide(Duration),
}

/// A queue of work items with competing consumers; see the [module docs](self) for the semantics.
///
/// Object-safe (`Arc<dyn WorkQueue>`), because the implementation is chosen by configuration. A
/// queue with a dead-letter queue is also a [`DeadLetterQueue`].
#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// The queue's settings.
    fn settings(&self) -> &QueueSettings;

    /// Enqueues messages; returns once the queue accepted every one.
    async fn send(&self, messages: Vec<Message>) -> Result<()>;

    /// Up to `max` visible messages, hidden for the visibility timeout; waits up to `wait` for the
    /// first one and returns an empty list if none came.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>>;

    /// Settles a received message: deletes it, or hides it for a while. Settling a message that
    /// is already gone is not an error.
    async fn settle(&self, receipt: &Receipt, settlement: Settlement) -> Result<()>;

    /// Deletes a received message ([`Settlement::Ack`]).
    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.settle(receipt, Settlement::Ack).await
    }

    /// Hides a received message for `timeout` from now ([`Settlement::Hide`]; `Duration::ZERO`:
    /// visible at once).
    async fn change_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        self.settle(receipt, Settlement::Hide(timeout)).await
    }

    /// Whether the queue answers: a cheap read of the service (a readiness probe), sending
    /// nothing. The default, for queues inside the process, is always `Ok`.
    async fn health_check(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`WorkQueue`] whose messages go to a dead-letter queue after
/// [`max_receives`](QueueSettings::max_receives), where they can be inspected and sent back.
#[async_trait]
pub trait DeadLetterQueue: WorkQueue {
    /// Up to `max` dead letters, oldest first, without removing them.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>>;

    /// Sends every dead letter back to the queue as a new message (receive count from 0 again);
    /// returns how many.
    async fn redrive(&self) -> Result<usize>;
}
