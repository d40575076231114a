//! What the AWS adapters share: SDK error mapping and resource naming.

use std::fmt;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use eventflow_core::Error;

/// Error codes a retry may cure (throttling, the service's own failures).
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "InternalFailure",
    "InternalError",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KmsThrottled",
];

/// Whether an error code (of a whole call or of one batch entry) is worth retrying.
pub(crate) fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// An SDK failure with its full context (`DisplayErrorContext`), as the source of an [`Error`].
#[derive(Debug)]
pub(crate) struct AwsError {
    operation: &'static str,
    code: Option<String>,
    detail: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl AwsError {
    /// The service's error code, when the service answered.
    pub(crate) fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.detail)
    }
}

impl std::error::Error for AwsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Maps an SDK error: timeouts, connection failures, 5xx and throttling are
/// [`Error::Transient`], everything else [`Error::Backend`].
pub(crate) fn sdk_error<E, R>(
    backend: &'static str,
    operation: &'static str,
    error: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: std::error::Error,
{
    let (code, transient) = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (None, true)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let transient = code.as_deref().is_some_and(is_transient_code);
            (code, transient)
        }
        _ => (error.code().map(str::to_owned), false),
    };
    let source = AwsError {
        operation,
        code,
        detail: DisplayErrorContext(&error).to_string(),
        source: Box::new(error),
    };
    if transient {
        Error::transient(backend, source)
    } else {
        Error::backend(backend, source)
    }
}

/// The service error code inside an [`Error`] built by [`sdk_error`].
pub(crate) fn error_code(error: &Error) -> Option<&str> {
    let source = match error {
        Error::Backend { source, .. } | Error::Transient { source, .. } => source,
        _ => return None,
    };
    source.downcast_ref::<AwsError>().and_then(AwsError::code)
}

/// A resource name from `parts`: characters outside `[A-Za-z0-9_-]` (plus `.` where `dots`)
/// become `-`; a name longer than `max` is cut and ends with a hash of the whole, so distinct
/// long names stay distinct and the mapping is stable across releases.
pub(crate) fn resource_name(parts: &[&str], max: usize, dots: bool) -> String {
    let full: String = parts.concat();
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dots && c == '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let keep = max.saturating_sub(hash.len() + 1);
    format!("{}-{hash}", &clean[..keep])
}

/// 64-bit FNV-1a: stable, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_cleaned() {
        assert_eq!(resource_name(&["app-", "orders"], 80, false), "app-orders");
        assert_eq!(resource_name(&["a.b c"], 80, false), "a-b-c");
        assert_eq!(resource_name(&["a.b c"], 64, true), "a.b-c");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let long = "x".repeat(100);
        let a = resource_name(&[&long, "-1"], 64, true);
        let b = resource_name(&[&long, "-2"], 64, true);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, resource_name(&[&long, "-1"], 64, true));
    }
}
