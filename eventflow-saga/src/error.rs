//! The saga crate's error type.

/// A `Result` whose error defaults to the saga [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while defining, running or querying a saga.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The saga definition is not valid (see [`SagaDefinitionBuilder::build`](crate::SagaDefinitionBuilder::build)).
    #[error("invalid saga definition: {0}")]
    Definition(String),

    /// The event store or the bus failed. Transient failures and conflicts are worth retrying
    /// ([`eventflow_core::Error::is_retryable`]).
    #[error(transparent)]
    Core(#[from] eventflow_core::Error),

    /// Saga data, a command or a reply could not be (de)serialised.
    #[error("could not (de)serialise {what}")]
    Serialization {
        /// What was being (de)serialised.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A bus message is not a saga command or reply (a routing attribute is missing or malformed).
    #[error("message {message_id} is not a valid saga message: {reason}")]
    InvalidMessage {
        /// The message's id.
        message_id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No saga with this id exists.
    #[error("saga {saga_id:?} does not exist")]
    UnknownSaga {
        /// The saga id asked for.
        saga_id: String,
    },

    /// The operation does not apply to the saga in its current state (e.g. retrying the
    /// compensation of a saga that is not in `NeedsAttention`).
    #[error("saga {saga_id:?} is {status}: {reason}")]
    InvalidState {
        /// The saga id.
        saga_id: String,
        /// Its status.
        status: crate::SagaStatus,
        /// Why the operation was refused.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn serialization(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Serialization {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid_message(message_id: &str, reason: impl Into<String>) -> Self {
        Error::InvalidMessage {
            message_id: message_id.to_owned(),
            reason: reason.into(),
        }
    }

    /// True for failures that a retry may cure (store conflicts and transient backend errors).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Core(e) if e.is_retryable())
    }
}
