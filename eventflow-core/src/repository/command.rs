//! What a command is given and what it returns.

use crate::error::Error;
use crate::event::Envelope;
use crate::metadata::Metadata;
use crate::store::StreamId;

/// Per-command options: metadata to record and an optional idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandContext {
    /// Recorded with every event the command produces.
    pub metadata: Metadata,
    /// When set, a command with the same key returns the first one's result and appends nothing.
    pub idempotency_key: Option<String>,
}

impl CommandContext {
    /// No metadata and no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed<E> {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream's version after the command.
    pub version: u64,
    /// The events the command recorded (for a duplicate, those the first command recorded).
    pub events: Vec<Envelope<E>>,
    /// True when the idempotency key had been seen: nothing new was appended.
    pub deduplicated: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed, or conflicts persisted after every retry ([`Error::Conflict`]).
    #[error(transparent)]
    Store(#[from] Error),
}

/// A stream's state and the version it reflects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// How many events it reflects (0 for a new stream).
    pub version: u64,
}
