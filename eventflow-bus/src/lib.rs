#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "sqs")]
mod aws;
#[cfg(any(feature = "sqs", feature = "pubsub"))]
mod batch;
pub mod config;
#[cfg(feature = "eventbridge")]
#[cfg_attr(docsrs, doc(cfg(feature = "eventbridge")))]
pub mod eventbridge;
#[cfg(feature = "pubsub")]
#[cfg_attr(docsrs, doc(cfg(feature = "pubsub")))]
pub mod pubsub;
#[cfg(feature = "sqs")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqs")))]
pub mod sqs;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod wire;
pub mod work_queue;

pub use config::{
    Adapter, AnyBus, ConfigError, Redelivery, from_env, from_lookup, work_queue_from_env,
    work_queue_from_lookup,
};
#[cfg(feature = "eventbridge")]
pub use eventbridge::{EventBridgeBus, EventBridgeConfig};
#[cfg(feature = "pubsub")]
pub use pubsub::{PubSubBus, PubSubConfig};
#[cfg(feature = "sqs")]
pub use sqs::{SqsQueueOptions, SqsWorkQueue};
pub use work_queue::{
    DeadLetterQueue, InMemoryWorkQueue, QueueSettings, Settlement, WorkQueue, Worker, WorkerOptions,
};

/// Types users move across tasks must stay `Send + Sync`; this fails to compile if one stops being so.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AnyBus>();
    assert_send_sync::<InMemoryWorkQueue>();
    assert_send_sync::<Worker>();
    assert_send_sync::<ConfigError>();
    #[cfg(feature = "eventbridge")]
    assert_send_sync::<EventBridgeBus>();
    #[cfg(feature = "pubsub")]
    assert_send_sync::<PubSubBus>();
    #[cfg(feature = "sqs")]
    assert_send_sync::<SqsWorkQueue>();
};
