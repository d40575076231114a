//! The one error type every eventflow backend speaks.

use crate::documents::ExpectedDocument;
use crate::store::{AppendResult, ExpectedVersion, StreamId};

/// A `Result` whose error defaults to eventflow's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend or a user callback, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store, a bus, a projection or the repository.
///
/// Backends convert their own failures into these variants, so code that matches
/// [`Error::Conflict`] works the same on the in-memory store and on DynamoDB.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the expected version: another writer got there first.
    /// Nothing of the append was written.
    #[error("conflict on stream {stream}: expected {expected}, stream is at version {actual}")]
    Conflict {
        /// The stream that was written to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: the stream has no events).
        actual: u64,
    },

    /// A document was not as its writer expected: another writer put or deleted it first.
    /// Nothing was written; read it again and retry.
    #[error(
        "conflict on document {id:?} of {collection}: expected {expected}, it is at version {actual}"
    )]
    DocumentConflict {
        /// The document's collection.
        collection: String,
        /// The document's id.
        id: String,
        /// What the writer expected.
        expected: ExpectedDocument,
        /// The document's version when the put was refused (0: there is no document).
        actual: u64,
    },

    /// An append carried an idempotency key that an earlier append already recorded.
    /// Nothing was written; `original` is what the first append produced.
    #[error("idempotency key {key:?} was already used by an append to stream {}", original.stream)]
    DuplicateIdempotencyKey {
        /// The repeated key.
        key: String,
        /// The result of the append that first recorded the key.
        original: Box<AppendResult>,
    },

    /// An event, snapshot or message could not be serialised or deserialised.
    #[error("could not (de)serialise {what}")]
    Serialization {
        /// What was being (de)serialised, e.g. the event type name.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// An event reached a projection before its predecessor in the stream; nothing was applied
    /// and it should be delivered again once the gap is filled.
    #[error("event {actual} of stream {stream} arrived before event {expected}")]
    OutOfOrder {
        /// The stream.
        stream: StreamId,
        /// The version that must come next.
        expected: u64,
        /// The version that came.
        actual: u64,
    },

    /// A stored event could not be decoded into its Rust type.
    #[error(
        "could not decode event {event_type} (schema version {schema_version}) at version {version} of stream {stream}: {source}"
    )]
    Decode {
        /// The stream the event belongs to.
        stream: StreamId,
        /// Its version in the stream.
        version: u64,
        /// The stored event type.
        event_type: String,
        /// The schema version the payload had after upcasting.
        schema_version: u32,
        /// Why serde refused it.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event of an old schema version could not be migrated.
    #[error(
        "could not upcast {event_type} at version {version} of stream {stream} from schema version {from_version}: {reason}"
    )]
    Upcast {
        /// The stream the event belongs to.
        stream: StreamId,
        /// Its version in the stream.
        version: u64,
        /// The stored event type.
        event_type: String,
        /// The schema version the failing upcaster starts from.
        from_version: u32,
        /// Why the upcaster refused.
        reason: String,
    },

    /// A request broke a limit of the backend (item size, items per transaction, message size, ...).
    /// It was refused before anything was sent or written.
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        /// Which limit, e.g. `"DynamoDB items per transaction"`.
        limit: &'static str,
        /// The size or count of the refused request.
        actual: u64,
        /// The most the backend accepts.
        max: u64,
    },

    /// The backend does not support the operation (e.g. a global feed on DynamoDB).
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
    },

    /// A request was malformed (an empty stream id, a subscription name used twice, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A failure of the backend that may go away on retry (throttling, a timeout, a 5xx).
    #[error("transient backend failure in {backend}")]
    Transient {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// Any other failure of the backend, with its cause.
    #[error("backend failure in {backend}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A [`Error::Backend`] from any error.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// A [`Error::Transient`] from any error.
    pub fn transient(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Transient {
            backend,
            source: source.into(),
        }
    }

    /// True for failures that a retry may cure: conflicts (of streams and documents), transient
    /// backend errors, events that arrived early.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::DocumentConflict { .. }
                | Error::Transient { .. }
                | Error::OutOfOrder { .. }
        )
    }

    /// A [`Error::Serialization`] naming what failed to (de)serialise.
    pub fn serialization(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Serialization {
            what: what.into(),
            source,
        }
    }
}
