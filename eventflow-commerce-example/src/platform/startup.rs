//! Why the app could not start: the error every context's `start` returns.

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A service could not listen on its address.
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    /// Settings that cannot work together (each named in the message).
    #[error("{0}")]
    Settings(String),
    /// A part could not be wired or seeded.
    #[error("{what}: {cause}")]
    Wiring {
        /// The part.
        what: &'static str,
        /// Why.
        cause: String,
    },
}

impl StartError {
    pub(crate) fn wiring(what: &'static str, cause: impl std::fmt::Display) -> Self {
        StartError::Wiring {
            what,
            cause: cause.to_string(),
        }
    }
}
