//! Trace export: with the `cloud` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, every span (an
//! HTTP request, a bus delivery, and everything inside them) is exported over OTLP/HTTP, and each
//! request or delivery continues the trace its `traceparent` names, so one order is one trace
//! across every process it touches. Without the variable nothing is installed: no exporter, no
//! layer, no cost.

/// The trace exporter, when one is installed: [`shutdown`](Telemetry::shutdown) flushes the
/// spans still batched.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "cloud")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is batched and stops the exporter (at the end of `main`).
    pub fn shutdown(self) {
        #[cfg(feature = "cloud")]
        if let Some(Err(error)) = self.provider.map(|provider| provider.shutdown()) {
            eprintln!("trace export: {error}");
        }
    }
}

/// Makes `span` continue the trace `traceparent` names (a W3C `traceparent` header value); does
/// nothing when no exporter is installed or the value is not a trace context.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: &str) {
    #[cfg(feature = "cloud")]
    otlp::continue_trace(span, traceparent);
    #[cfg(not(feature = "cloud"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "cloud")]
pub(crate) mod otlp {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Subscriber;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::registry::LookupSpan;

    use super::Telemetry;

    /// The variable that turns export on.
    const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

    /// The export layer for `service` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads
    /// it and the other `OTEL_*` variables itself); `None` otherwise or when the exporter cannot
    /// be built (said on stderr: logging is not up yet).
    pub(crate) fn layer<S>(
        service: &str,
        telemetry: &mut Telemetry,
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        std::env::var(ENDPOINT)
            .ok()
            .filter(|v| !v.trim().is_empty())?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .build();
        let exporter = match exporter {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("trace export is off: {error}");
                return None;
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("eventflow-commerce-example");
        telemetry.provider = Some(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub(super) fn continue_trace(span: &tracing::Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        // Fails only when no export layer is installed: then there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}
