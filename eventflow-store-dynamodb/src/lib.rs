#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod checkpoint;
mod config;
mod documents;
mod error;
mod items;
pub mod limits;
mod meta;
mod snapshot;
mod store;
mod tables;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use checkpoint::DynamoDbCheckpointStore;
pub use config::{
    DEFAULT_EVENTS_TABLE, DEFAULT_META_TABLE, DynamoDbConfig, EVENTS_TABLE_ENV, META_TABLE_ENV,
    OUTBOX_SHARDS_ENV,
};
pub use documents::DynamoDbDocuments;
pub use error::DynamoDbError;
pub use snapshot::DynamoDbSnapshotStore;
pub use store::DynamoDbEventStore;
pub use tables::{create_tables, delete_tables};

/// The backend name in [`eventflow_core::Error`] variants (`Transient`, `Backend`, `Unsupported`).
pub const BACKEND: &str = "dynamodb";
