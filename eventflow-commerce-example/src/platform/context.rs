//! The request context every service carries along a flow: the correlation id (accepted or
//! generated, echoed on the response) and the W3C `traceparent`. Both go into event metadata, from
//! there into bus attributes, and into every log line through the request's span.
//!
//! The headers of Istio's tracing (`x-request-id` and B3's) are passed through: echoed on the
//! response as received, and recorded in the request's span (so in its log lines and exported
//! spans). A service makes no HTTP call of its own while handling a request (the contexts talk
//! only over the bus), so there is no outgoing request to carry them on.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use eventflow_core::Metadata;
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;

/// The correlation id header, read and echoed by every service.
pub(crate) const CORRELATION_ID: &str = "x-correlation-id";
/// The W3C trace context header.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The request id header of Envoy (Istio's sidecars and gateway).
pub(crate) const REQUEST_ID: &str = "x-request-id";
/// The headers Istio's tracing propagates, echoed as received: Envoy's request id, B3's
/// multi-header form and its single-header form.
pub(crate) const PASSED_THROUGH: [&str; 7] = [
    REQUEST_ID,
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
];

/// The correlation id and trace context of the request being handled.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    pub(crate) correlation_id: String,
    pub(crate) traceparent: String,
}

impl RequestContext {
    /// Event metadata carrying this context, and `actor` when a customer is known.
    pub(crate) fn metadata(&self, actor: Option<&str>) -> Metadata {
        let metadata = Metadata::new()
            .with_correlation_id(self.correlation_id.as_str())
            .with_traceparent(self.traceparent.as_str());
        match actor {
            Some(actor) => metadata.with_actor(actor),
            None => metadata,
        }
    }

    fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let correlation_id = header(CORRELATION_ID)
            .filter(|id| valid_correlation_id(id))
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
        let traceparent = child_traceparent(header(TRACEPARENT));
        RequestContext {
            correlation_id,
            traceparent,
        }
    }
}

/// Up to 128 visible ASCII characters: anything else is replaced, not echoed into logs.
fn valid_correlation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The `traceparent` of this service's work: the caller's trace id with a new span id, or a new
/// trace when the header is missing or malformed (`00-{32 hex}-{16 hex}-{2 hex}`).
pub(crate) fn child_traceparent(parent: Option<&str>) -> String {
    let span_id = &Uuid::new_v4().simple().to_string()[..16];
    let trace_id = parent
        .and_then(|p| {
            let parts: Vec<&str> = p.split('-').collect();
            let hex =
                |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
            (parts.len() == 4
                && hex(parts[0], 2)
                && hex(parts[1], 32)
                && hex(parts[2], 16)
                && hex(parts[3], 2)
                && parts[1].bytes().any(|b| b != b'0'))
            .then(|| parts[1].to_ascii_lowercase())
        })
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    format!("00-{trace_id}-{span_id}-01")
}

/// The [`PASSED_THROUGH`] headers a request carries: those of up to 256 visible ASCII
/// characters (anything else is not echoed into responses and logs).
fn passed_through(headers: &HeaderMap) -> Vec<(&'static str, HeaderValue)> {
    PASSED_THROUGH
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            let bytes = value.as_bytes();
            (!bytes.is_empty() && bytes.len() <= 256 && bytes.iter().all(u8::is_ascii_graphic))
                .then(|| (*name, value.clone()))
        })
        .collect()
}

/// The B3 trace id of a request: `x-b3-traceid`, or the first field of the single `b3` header.
fn b3_trace_id<'h>(headers: &'h [(&'static str, HeaderValue)]) -> Option<&'h str> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.to_str().ok())
    };
    value("x-b3-traceid").or_else(|| value("b3").and_then(|b3| b3.split('-').next()))
}

/// Middleware: builds the [`RequestContext`], runs the request in a span naming the service, the
/// correlation id and the Istio tracing ids it came with, and echoes the correlation id,
/// `traceparent` and the [`PASSED_THROUGH`] headers on the response.
pub(crate) async fn correlate(
    State(service): State<&'static str>,
    mut request: Request,
    next: Next,
) -> Response {
    let context = RequestContext::from_headers(request.headers());
    let passed = passed_through(request.headers());
    let span = tracing::info_span!(
        "request",
        service,
        correlation_id = %context.correlation_id,
        traceparent = %context.traceparent,
        method = %request.method(),
        path = %request.uri().path(),
        request_id = tracing::field::Empty,
        b3_trace_id = tracing::field::Empty,
    );
    if let Some((_, id)) = passed.iter().find(|(name, _)| *name == REQUEST_ID)
        && let Ok(id) = id.to_str()
    {
        span.record("request_id", id);
    }
    if let Some(trace_id) = b3_trace_id(&passed) {
        span.record("b3_trace_id", trace_id);
    }
    super::telemetry::continue_trace(&span, &context.traceparent);
    request.extensions_mut().insert(context.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(status = response.status().as_u16(), "request handled");
    });
    let headers = response.headers_mut();
    for (name, value) in [
        (CORRELATION_ID, &context.correlation_id),
        (TRACEPARENT, &context.traceparent),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    for (name, value) in passed {
        headers.insert(name, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext::from_headers(&parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_callers_trace_and_replaces_a_bad_one() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(Some(parent));
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(child, parent);
        let fresh = child_traceparent(Some("00-zz-00f067aa0ba902b7-01"));
        assert_eq!(fresh.len(), 55);
        assert!(!fresh.contains("zz"));
    }

    #[test]
    fn passes_istio_tracing_headers_through_and_finds_the_b3_trace() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        headers.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba8-e457b5a2e4d86bd1-1"),
        );
        headers.insert("x-b3-sampled", HeaderValue::from_static("two words"));
        let passed = passed_through(&headers);
        let names: Vec<&str> = passed.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["x-request-id", "b3"]);
        assert_eq!(b3_trace_id(&passed), Some("80f198ee56343ba8"));
        headers.insert("x-b3-traceid", HeaderValue::from_static("463ac35c9f6413ad"));
        assert_eq!(
            b3_trace_id(&passed_through(&headers)),
            Some("463ac35c9f6413ad")
        );
    }

    #[test]
    fn refuses_correlation_ids_that_would_pollute_logs() {
        assert!(valid_correlation_id("demo-123"));
        assert!(!valid_correlation_id("two words"));
        assert!(!valid_correlation_id(&"x".repeat(129)));
    }
}
