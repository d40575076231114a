//! In-memory backends with the same semantics as the real ones: conflicts, atomic batches,
//! idempotency keys, outbox, redelivery, dead letters, ordering per key. Use them in tests and in
//! single-process deployments; they pass the same conformance suites as the cloud backends.

mod bus;
mod checkpoint;
mod documents;
mod snapshot;
mod store;
mod work_queue;

pub use bus::{InMemoryBus, InMemoryBusOptions};
pub use checkpoint::InMemoryCheckpointStore;
pub use documents::InMemoryDocumentStore;
pub use snapshot::InMemorySnapshotStore;
pub use store::InMemoryEventStore;
pub use work_queue::InMemoryWorkQueue;
