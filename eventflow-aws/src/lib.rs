#![doc = include_str!("../README.md")]

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use eventflow_core::Error;

/// Error codes that mean "slow down" or "try again", across the services eventflow uses.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KmsThrottled",
    // DynamoDB: a single-item write to an item a transaction is writing, or a transaction
    // whose idempotency token is still in flight.
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Whether an error code (of a whole call, or of one entry of a batch call) is worth retrying.
pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// The HTTP status of a raw response: a trait so that errors can be classified without a live
/// call (tests build `SdkError`s around a status alone).
pub trait HttpStatus {
    /// The response's status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Whether an SDK error is worth retrying: timeouts, connection failures, unparseable responses,
/// HTTP 5xx and the [transient codes](is_transient_code).
pub fn is_transient<E, R>(error: &SdkError<E, R>) -> bool
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
                || service.err().code().is_some_and(is_transient_code)
        }
        _ => false,
    }
}

/// A failed AWS call: the backend and operation, the service's error code when it answered, and
/// the SDK's error as [`source`](StdError::source). It is the source of the [`Error`] that
/// [`sdk_error`] builds; downcast to reach it.
#[derive(Debug)]
pub struct AwsError {
    backend: &'static str,
    operation: &'static str,
    code: Option<String>,
    detail: String,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl AwsError {
    /// The operation that failed, e.g. `"TransactWriteItems"`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The service's error code, when the service answered (e.g. `"ValidationException"`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed: {}",
            self.backend, self.operation, self.detail
        )
    }
}

impl StdError for AwsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Maps a failed SDK call to [`Error::Transient`] when [`is_transient`], else [`Error::Backend`],
/// with an [`AwsError`] as source. `backend` names the adapter (`"dynamodb"`, `"sqs"`).
pub fn sdk_error<E, R>(
    backend: &'static str,
    operation: &'static str,
    error: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: HttpStatus + fmt::Debug + Send + Sync + 'static,
{
    let transient = is_transient(&error);
    classified_sdk_error(backend, operation, error, transient)
}

/// Like [`sdk_error`], with the transient-or-not decision made by the caller (e.g. a transaction
/// cancelled for reasons that were retried until the attempts ran out).
pub fn classified_sdk_error<E, R>(
    backend: &'static str,
    operation: &'static str,
    error: SdkError<E, R>,
    transient: bool,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: HttpStatus + fmt::Debug + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    let detail = DisplayErrorContext(&error).to_string();
    wrap(backend, operation, code, detail, Box::new(error), transient)
}

/// A failure that is not an SDK error (e.g. a batch entry the service refused, or a transaction
/// cancelled for an unexpected reason), as the same [`AwsError`].
pub fn other_error(
    backend: &'static str,
    operation: &'static str,
    code: Option<&str>,
    message: impl Into<String>,
    transient: bool,
) -> Error {
    let message = message.into();
    let source = message.clone().into();
    wrap(
        backend,
        operation,
        code.map(str::to_owned),
        message,
        source,
        transient,
    )
}

fn wrap(
    backend: &'static str,
    operation: &'static str,
    code: Option<String>,
    detail: String,
    source: Box<dyn StdError + Send + Sync + 'static>,
    transient: bool,
) -> Error {
    let error = AwsError {
        backend,
        operation,
        code,
        detail,
        source,
    };
    if transient {
        Error::transient(backend, error)
    } else {
        Error::backend(backend, error)
    }
}

/// The service's error code inside an [`Error`] whose source is an [`AwsError`].
pub fn error_code(error: &Error) -> Option<&str> {
    let source = match error {
        Error::Backend { source, .. } | Error::Transient { source, .. } => source,
        _ => return None,
    };
    source.downcast_ref::<AwsError>().and_then(AwsError::code)
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::error::ErrorMetadata;
    use aws_sdk_sqs::operation::send_message::SendMessageError;

    use super::*;

    #[derive(Debug)]
    struct Status(u16);

    impl HttpStatus for Status {
        fn status_code(&self) -> u16 {
            self.0
        }
    }

    fn service(code: &str, status: u16) -> SdkError<SendMessageError, Status> {
        let error =
            SendMessageError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(error, Status(status))
    }

    #[test]
    fn throttling_and_5xx_are_transient() {
        assert!(is_transient(&service("ThrottlingException", 400)));
        assert!(is_transient(&service(
            "ProvisionedThroughputExceededException",
            400
        )));
        assert!(is_transient(&service("TransactionConflictException", 400)));
        assert!(is_transient(&service("Whatever", 503)));
        assert!(is_transient(&service("Whatever", 500)));
        assert!(!is_transient(&service("ValidationException", 400)));
        assert!(!is_transient(&service("ResourceNotFoundException", 400)));
        assert!(!is_transient(&service("AccessDenied", 403)));
    }

    #[test]
    fn timeouts_and_connection_failures_are_transient() {
        let timeout: SdkError<SendMessageError, Status> = SdkError::timeout_error("slow");
        assert!(is_transient(&timeout));
        let construction: SdkError<SendMessageError, Status> =
            SdkError::construction_failure("bad input");
        assert!(!is_transient(&construction));
    }

    #[test]
    fn errors_keep_operation_code_and_source() {
        let error = sdk_error("sqs", "SendMessage", service("ValidationException", 400));
        let Error::Backend { source, .. } = &error else {
            panic!("expected a backend error, got {error:?}");
        };
        let aws = source
            .downcast_ref::<AwsError>()
            .unwrap_or_else(|| panic!("source is an AwsError"));
        assert_eq!(aws.operation(), "SendMessage");
        assert_eq!(aws.code(), Some("ValidationException"));
        assert!(
            aws.to_string().starts_with("sqs SendMessage failed"),
            "{aws}"
        );
        assert!(aws.source().is_some());
        assert_eq!(error_code(&error), Some("ValidationException"));

        let error = sdk_error("sqs", "SendMessage", service("ThrottlingException", 400));
        assert!(matches!(error, Error::Transient { .. }));
        assert_eq!(error_code(&error), Some("ThrottlingException"));
    }

    #[test]
    fn other_errors_are_classified_by_the_caller() {
        let error = other_error(
            "sqs",
            "SendMessageBatch",
            Some("KmsThrottled"),
            "entry 3",
            true,
        );
        assert!(matches!(error, Error::Transient { .. }));
        assert_eq!(error_code(&error), Some("KmsThrottled"));
        assert_eq!(error_code(&Error::transient("x", "plain")), None);
    }
}
