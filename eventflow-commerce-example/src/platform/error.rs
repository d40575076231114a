//! Errors as every service answers them: a status code and a JSON body `{error, message, details?}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code to branch on, e.g. `validation_failed`.
    error: &'static str,
    /// What went wrong, for a person.
    message: String,
    /// Data to act on, e.g. `{"field": "items[0].quantity"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

/// An error a handler returns; it becomes the status and the JSON body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                details: None,
            },
            retry_after: None,
        }
    }

    /// Tells the client when to try again (`Retry-After`, whole seconds, at least 1).
    pub(crate) fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// 429: too many requests; try again after `wait`.
    pub(crate) fn too_many_requests(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message).retry_after(wait)
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.body.details = Some(details);
        self
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422 naming the field at fault.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_details(json!({ "field": field }))
    }

    /// 500; the cause is logged, and only a generic message leaves the service.
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed; it is safe to retry",
        )
    }

    /// A read or write of the context's own data failed: 503 when it is worth retrying (the
    /// database is unreachable or throttling), 500 otherwise.
    pub(crate) fn store(error: &eventflow_core::Error) -> Self {
        if matches!(error, eventflow_core::Error::Transient { .. }) {
            tracing::warn!(%error, "the context's data store is unavailable");
            Self::unavailable("the service's data store is unavailable; retry shortly")
        } else {
            Self::internal(error)
        }
    }

    /// 413: the body is larger than any service reads.
    pub(crate) fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is larger than {} bytes",
                super::server::BODY_LIMIT_BYTES
            ),
        )
    }

    /// 503: a dependency did not answer in time.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            // A client's mistake is not the service's error: logged below error level.
            tracing::info!(status = self.status.as_u16(), error = self.body.error, message = %self.body.message, "request refused");
        }
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let (field, reason) = field_of(&text);
                let message = if reason.starts_with("missing field") {
                    reason
                } else {
                    format!("{field}: {reason}")
                };
                Self::invalid(&field, message)
            }
            status if status.is_client_error() => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                super::text::truncate(&text, 300),
            ),
            _ => Self::internal(text),
        }
    }
}

/// The field a serde error is about, and its reason. axum reports
/// `Failed to deserialize the JSON body into the target type: items[0].quantity: invalid value...`;
/// a missing field is reported at its parent (`.`), naming it in the reason.
fn field_of(text: &str) -> (String, String) {
    let detail = text
        .split_once("target type: ")
        .map_or(text, |(_, detail)| detail);
    let (path, reason) = detail.split_once(": ").unwrap_or((".", detail));
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    // serde quotes the offending value, which may be the whole of a large body.
    let reason = super::text::truncate(reason.split(" at line ").next().unwrap_or(reason), 200);
    let path = &super::text::truncate(path, 100);
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    };
    (field, reason)
}

/// A JSON body whose rejections are [`ApiError`]s: 400 malformed, 413 too large, 415 not JSON,
/// 422 naming the field.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

/// Query parameters whose rejection is a 400 JSON error naming the problem.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => Err(query_error(&rejection)),
        }
    }
}

fn query_error(rejection: &QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}

/// Answers routes that do not exist with the JSON error shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Answers a known route called with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn names_the_field_of_a_serde_error() {
        let (field, reason) = field_of(
            "Failed to deserialize the JSON body into the target type: items[0].quantity: invalid value: integer `-1`, expected u32 at line 1 column 42",
        );
        assert_eq!(field, "items[0].quantity");
        assert_eq!(reason, "invalid value: integer `-1`, expected u32");
        let (field, _) = field_of(
            "Failed to deserialize the JSON body into the target type: missing field `items` at line 1 column 2",
        );
        assert_eq!(field, "items");
        let (field, _) = field_of(
            "Failed to deserialize the JSON body into the target type: shippingAddress: missing field `zip` at line 1 column 80",
        );
        assert_eq!(field, "shippingAddress.zip");
    }
}
