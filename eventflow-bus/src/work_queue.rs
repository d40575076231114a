//! The work queue traits and their in-memory twin, re-exported from `eventflow-core` (where they
//! moved in 0.3, beside [`EventBus`](eventflow_core::EventBus)), so that paths through this crate
//! keep compiling. This crate adds the SQS implementation,
//! [`SqsWorkQueue`](crate::sqs::SqsWorkQueue) (feature `sqs`).
//!
//! The semantics are described in [`eventflow_core::work_queue`].

pub use eventflow_core::memory::InMemoryWorkQueue;
pub use eventflow_core::work_queue::{
    DeadLetterQueue, QueueSettings, Receipt, ReceivedMessage, Settlement, WorkQueue, Worker,
    WorkerOptions,
};
