//! How DynamoDB failures become eventflow's [`Error`] variants.
//!
//! | DynamoDB says | eventflow error |
//! | --- | --- |
//! | `TransactionCanceledException`, `ConditionalCheckFailed` on the idempotency key item | [`Error::DuplicateIdempotencyKey`] |
//! | `TransactionCanceledException`, `ConditionalCheckFailed` on an event item | [`Error::Conflict`] (actual version read back) |
//! | `TransactionCanceledException`, `TransactionConflict` / `ThrottlingError` / `ProvisionedThroughputExceeded` | retried with backoff, then [`Error::Transient`] |
//! | throttling error codes, HTTP 5xx, timeouts, connection failures (after the SDK's own retries) | [`Error::Transient`] |
//! | anything else | [`Error::Backend`] |
//!
//! The source of a transient or backend error is a [`DynamoDbError`] naming the operation, whose
//! own source is the SDK's `SdkError`.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use eventflow_core::Error;

use crate::BACKEND;

/// A failed DynamoDB call: the operation's name and the SDK's error, kept as the `source` of an
/// [`Error::Transient`] or [`Error::Backend`]. Downcast the source to reach it.
#[derive(Debug)]
pub struct DynamoDbError {
    operation: &'static str,
    message: String,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl DynamoDbError {
    /// The DynamoDB operation that failed, e.g. `"TransactWriteItems"`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl fmt::Display for DynamoDbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynamoDB {} failed: {}", self.operation, self.message)
    }
}

impl StdError for DynamoDbError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Error codes that mean "slow down" or "try again".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionInProgressException",
    // A single-item write (`PutItem`) to an item a transaction is writing.
    "TransactionConflictException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "LimitExceededException",
];

/// Cancellation reason codes of `TransactWriteItems` that a retry may cure.
pub(crate) const TRANSIENT_REASONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Whether an SDK error is worth retrying: throttling, 5xx, timeouts and connection failures.
pub(crate) fn is_transient<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HttpStatus,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            service.raw().status_code() >= 500
                || service
                    .err()
                    .code()
                    .is_some_and(|code| TRANSIENT_CODES.contains(&code))
        }
        _ => false,
    }
}

/// The HTTP status of a raw response (a trait so tests can classify errors without a live call).
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_dynamodb::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Converts a failed SDK call into a transient or backend error, keeping the SDK error as source.
pub(crate) fn sdk_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: HttpStatus + fmt::Debug + Send + Sync + 'static,
{
    let transient = is_transient(&error);
    classified_sdk_error(operation, error, transient)
}

/// Like [`sdk_error`], with the transient-or-not decision made by the caller (e.g. a transaction
/// cancelled for reasons that were retried until the attempts ran out).
pub(crate) fn classified_sdk_error<E, R>(
    operation: &'static str,
    error: SdkError<E, R>,
    transient: bool,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: HttpStatus + fmt::Debug + Send + Sync + 'static,
{
    let wrapped = DynamoDbError {
        operation,
        message: DisplayErrorContext(&error).to_string(),
        source: Box::new(error),
    };
    if transient {
        Error::transient(BACKEND, wrapped)
    } else {
        Error::backend(BACKEND, wrapped)
    }
}

/// A failure that is not an SDK error (e.g. a transaction cancelled for an unexpected reason).
pub(crate) fn other_error(
    operation: &'static str,
    message: impl Into<String>,
    transient: bool,
) -> Error {
    let message = message.into();
    let wrapped = DynamoDbError {
        operation,
        source: message.clone().into(),
        message,
    };
    if transient {
        Error::transient(BACKEND, wrapped)
    } else {
        Error::backend(BACKEND, wrapped)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::query::QueryError;

    use super::*;

    #[derive(Debug)]
    struct Status(u16);

    impl HttpStatus for Status {
        fn status_code(&self) -> u16 {
            self.0
        }
    }

    fn service(code: &str, status: u16) -> SdkError<QueryError, Status> {
        let error = QueryError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(error, Status(status))
    }

    #[test]
    fn throttling_and_5xx_are_transient() {
        assert!(is_transient(&service("ThrottlingException", 400)));
        assert!(is_transient(&service(
            "ProvisionedThroughputExceededException",
            400
        )));
        assert!(is_transient(&service("Whatever", 503)));
        assert!(!is_transient(&service("ValidationException", 400)));
        assert!(!is_transient(&service("ResourceNotFoundException", 400)));
    }

    #[test]
    fn errors_keep_their_source() {
        let error = sdk_error("Query", service("ValidationException", 400));
        let Error::Backend { source, .. } = &error else {
            panic!("expected a backend error, got {error:?}");
        };
        let dynamo = source
            .downcast_ref::<DynamoDbError>()
            .unwrap_or_else(|| panic!("source is a DynamoDbError"));
        assert_eq!(dynamo.operation(), "Query");
        assert!(
            dynamo.to_string().contains("ValidationException"),
            "{dynamo}"
        );
        assert!(dynamo.source().is_some());
        let error = sdk_error("Query", service("ThrottlingException", 400));
        assert!(matches!(error, Error::Transient { .. }));
    }
}
