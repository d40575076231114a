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
//! The classification is `eventflow-aws`'s, which the EventBridge and SQS adapters share. The
//! source of a transient or backend error is a [`DynamoDbError`] (an [`eventflow_aws::AwsError`])
//! naming the operation, whose own source is the SDK's `SdkError`.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use eventflow_aws::HttpStatus;
use eventflow_core::Error;

use crate::BACKEND;

/// A failed DynamoDB call: the operation's name, the service's error code and the SDK's error,
/// kept as the `source` of an [`Error::Transient`] or [`Error::Backend`]. Downcast the source to
/// reach it.
pub type DynamoDbError = eventflow_aws::AwsError;

/// Cancellation reason codes of `TransactWriteItems` that a retry may cure.
pub(crate) const TRANSIENT_REASONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Converts a failed SDK call into a transient or backend error, keeping the SDK error as source.
pub(crate) fn sdk_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: HttpStatus + fmt::Debug + Send + Sync + 'static,
{
    eventflow_aws::sdk_error(BACKEND, operation, error)
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
    eventflow_aws::classified_sdk_error(BACKEND, operation, error, transient)
}

/// A failure that is not an SDK error (e.g. a transaction cancelled for an unexpected reason).
pub(crate) fn other_error(
    operation: &'static str,
    message: impl Into<String>,
    transient: bool,
) -> Error {
    eventflow_aws::other_error(BACKEND, operation, None, message, transient)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::query::QueryError;

    use super::*;

    /// The classification itself is tested in `eventflow-aws`; this checks the store's errors
    /// carry it, with the operation and the SDK error reachable.
    #[test]
    fn errors_keep_their_source() {
        #[derive(Debug)]
        struct Status(u16);
        impl HttpStatus for Status {
            fn status_code(&self) -> u16 {
                self.0
            }
        }
        let service = |code: &str, status| {
            let error =
                QueryError::generic(ErrorMetadata::builder().code(code).message("m").build());
            SdkError::service_error(error, Status(status))
        };
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
        assert!(matches!(
            sdk_error("Query", service("ThrottlingException", 400)),
            Error::Transient { .. }
        ));
        assert!(matches!(
            sdk_error("Query", service("Whatever", 503)),
            Error::Transient { .. }
        ));
    }
}
