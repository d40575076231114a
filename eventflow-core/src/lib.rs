#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aggregate;
pub mod bus;
pub mod error;
pub mod event;
pub mod memory;
pub mod metadata;
pub mod outbox;
pub mod projection;
pub mod repository;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use aggregate::Aggregate;
pub use bus::{
    DeadLetter, DeadLetters, Delivery, EventBus, Filter, HandlerError, Message, MessageHandler,
    RetryPolicy, Subscription, SubscriptionHandle,
};
pub use error::{Error, Result};
pub use event::{DomainEvent, Upcaster, Upcasters};
pub use memory::{InMemoryBus, InMemoryCheckpointStore, InMemoryEventStore, InMemorySnapshotStore};
pub use metadata::Metadata;
pub use outbox::{Outbox, OutboxRelay};
pub use projection::{CheckpointStore, Projection, ProjectionHandler, ProjectionRunner};
pub use repository::{CommandContext, CommandError, Envelope, Executed, Loaded, Repository};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{
    AppendRequest, AppendResult, EventStore, EventStoreExt, ExpectedVersion, NewEvent,
    RecordedEvent, StreamId,
};

/// Types users move across tasks must stay `Send + Sync`; this fails to compile if one stops being so.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<InMemoryEventStore>();
    assert_send_sync::<InMemoryBus>();
    assert_send_sync::<InMemorySnapshotStore>();
    assert_send_sync::<InMemoryCheckpointStore>();
    assert_send_sync::<OutboxRelay>();
    assert_send_sync::<ProjectionRunner>();
    assert_send_sync::<Error>();
    assert_send_sync::<RecordedEvent>();
    assert_send_sync::<Message>();
};
