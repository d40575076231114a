#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aggregate;
pub mod backoff;
pub mod bus;
pub mod decider;
mod dispatcher;
pub mod documents;
pub mod error;
pub mod event;
mod event_id;
pub mod extension;
pub mod feed;
pub mod limits;
pub mod memory;
pub mod metadata;
mod mutex;
pub mod outbox;
pub mod projection;
pub mod repository;
mod scratch;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
pub mod work_queue;

/// Moved to [`extension`]: `Dispatcher` and `Settle` are for bus adapter authors.
#[deprecated(since = "0.3.0", note = "use `eventflow_core::extension`")]
pub mod dispatch {
    pub use crate::dispatcher::{Dispatcher, Settle};
}

/// Moved to [`extension`]: `lock` is for crates that extend eventflow.
#[deprecated(since = "0.3.0", note = "use `eventflow_core::extension::lock`")]
pub mod sync {
    pub use crate::mutex::lock;
}

pub use aggregate::Aggregate;
pub use backoff::{Backoff, Jitter};
pub use bus::{
    DeadLetter, DeadLetters, Delivery, EventBus, Filter, HandlerError, Message, MessageHandler,
    Subscription, SubscriptionHandle, handler_fn,
};
pub use decider::{AggregateDecider, Decider};
pub use documents::{Collection, Document, DocumentStore, ExpectedDocument};
pub use error::{Error, Result};
pub use event::{DomainEvent, Envelope, Upcaster, Upcasters};
pub use feed::GlobalFeed;
pub use limits::StoreLimits;
pub use memory::{
    InMemoryBus, InMemoryBusOptions, InMemoryCheckpointStore, InMemoryDocumentStore,
    InMemoryEventStore, InMemorySnapshotStore, InMemoryWorkQueue,
};
pub use metadata::Metadata;
pub use outbox::{Outbox, OutboxRelay, ParkedEntries, ParkedEntry};
pub use projection::{Applied, CheckpointStore, Projection, ProjectionRunner, Projector};
pub use repository::{
    CommandContext, CommandError, DeciderRepository, Executed, Loaded, Repository,
};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{
    AppendRequest, AppendResult, EventStore, EventStoreExt, ExpectedVersion, NewEvent,
    RecordedEvent, StreamAppend, StreamId,
};
pub use work_queue::{
    DeadLetterQueue, QueueSettings, Settlement, WorkQueue, Worker, WorkerOptions,
};

/// The names an application needs to write an aggregate, run commands, project events and wire a
/// bus: `use eventflow_core::prelude::*;`. Traits are included so their methods are in scope.
pub mod prelude {
    pub use crate::aggregate::Aggregate;
    pub use crate::bus::{
        Delivery, EventBus, Filter, HandlerError, MessageHandler, Subscription, handler_fn,
    };
    pub use crate::documents::{Collection, DocumentStore};
    pub use crate::error::Error;
    pub use crate::event::{DomainEvent, Envelope, Upcasters};
    pub use crate::feed::GlobalFeed;
    pub use crate::memory::{InMemoryBus, InMemoryCheckpointStore, InMemoryEventStore};
    pub use crate::metadata::Metadata;
    pub use crate::outbox::OutboxRelay;
    pub use crate::projection::{Projection, ProjectionRunner, Projector};
    pub use crate::repository::{CommandContext, CommandError, Executed, Repository};
    pub use crate::store::{EventStore, EventStoreExt};
}

/// Types users move across tasks must stay `Send + Sync`; this fails to compile if one stops being so.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<InMemoryEventStore>();
    assert_send_sync::<InMemoryBus>();
    assert_send_sync::<InMemorySnapshotStore>();
    assert_send_sync::<InMemoryCheckpointStore>();
    assert_send_sync::<InMemoryDocumentStore>();
    assert_send_sync::<Collection<std::cell::Cell<u8>>>();
    assert_send_sync::<OutboxRelay>();
    assert_send_sync::<InMemoryWorkQueue>();
    assert_send_sync::<Worker>();
    assert_send_sync::<Error>();
    assert_send_sync::<RecordedEvent>();
    assert_send_sync::<Message>();
};
