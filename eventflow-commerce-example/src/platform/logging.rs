//! Logs: one JSON object per line by default, `{timestamp, level, service, correlationId,
//! traceId, message, target, ...fields}`, with `service`, `correlationId` and `traceId` (of the
//! W3C `traceparent`) taken from the spans the line was written in (an HTTP request's, a bus
//! delivery's, a saga's); a request that came through Istio adds `requestId` (Envoy's
//! `x-request-id`) and `b3TraceId`. `--log-format pretty` prints
//! tracing's human format instead.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::telemetry::Telemetry;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// tracing's human format.
    Pretty,
}

/// Installs the global tracing subscriber; `RUST_LOG` overrides the default filter (`info`).
/// With the `cloud` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over
/// OTLP, as `service` ([`Telemetry`] flushes them at the end).
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    #[allow(unused_mut)] // Only the `cloud` feature installs an exporter.
    let mut telemetry = Telemetry::default();
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(feature = "cloud")]
    let registry = registry.with(super::telemetry::otlp::layer(service, &mut telemetry));
    #[cfg(not(feature = "cloud"))]
    let _ = service;
    let installed = match format {
        LogFormat::Json => registry
            .with(SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(installed);
    telemetry
}

/// The span fields the JSON lines lift to the top level.
#[derive(Debug, Default, Clone)]
struct SpanFields {
    service: Option<String>,
    correlation_id: Option<String>,
    trace_id: Option<String>,
    request_id: Option<String>,
    b3_trace_id: Option<String>,
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl SpanFields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "service" | "participant" if self.service.is_none() => self.service = Some(value),
            "correlation_id" if !value.is_empty() => self.correlation_id = Some(value),
            "traceparent" => {
                if let Some(trace_id) = value.split('-').nth(1).filter(|t| t.len() == 32) {
                    self.trace_id = Some(trace_id.to_owned());
                }
            }
            "request_id" => self.request_id = Some(value),
            "b3_trace_id" => self.b3_trace_id = Some(value),
            _ => {}
        }
    }
}

/// Keeps each span's [`SpanFields`] in its extensions.
struct SpanFieldsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFieldsLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(fields);
        }
    }
}

/// An event's own fields as JSON.
#[derive(Default)]
struct EventFields(Map<String, Value>);

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

/// Formats events as JSON lines, lifting the innermost `service` and `correlationId` of the span
/// scope to the top level.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut scope = SpanFields::default();
        if let Some(spans) = ctx.event_scope() {
            for span in spans {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    if scope.service.is_none() {
                        scope.service.clone_from(&fields.service);
                    }
                    if scope.correlation_id.is_none() {
                        scope.correlation_id.clone_from(&fields.correlation_id);
                    }
                    if scope.trace_id.is_none() {
                        scope.trace_id.clone_from(&fields.trace_id);
                    }
                    if scope.request_id.is_none() {
                        scope.request_id.clone_from(&fields.request_id);
                    }
                    if scope.b3_trace_id.is_none() {
                        scope.b3_trace_id.clone_from(&fields.b3_trace_id);
                    }
                }
            }
        }
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or(Value::Null);
        // An event's own `service` or `correlation_id` wins over its spans'.
        let service = fields
            .0
            .remove("service")
            .unwrap_or_else(|| scope.service.into());
        let correlation_id = fields
            .0
            .remove("correlation_id")
            .unwrap_or_else(|| scope.correlation_id.into());
        // The fixed keys first, in this order, then Istio's ids when the request had them, then
        // the event's own fields.
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let head: [(&str, Value); 7] = [
            ("timestamp", timestamp.into()),
            ("level", event.metadata().level().as_str().into()),
            ("service", service),
            ("correlationId", correlation_id),
            ("traceId", scope.trace_id.into()),
            ("message", message),
            ("target", event.metadata().target().into()),
        ];
        let istio: Vec<(&str, Value)> = [
            ("requestId", scope.request_id),
            ("b3TraceId", scope.b3_trace_id),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, Value::from(value?))))
        .collect();
        let mut text = String::from("{");
        for (i, (key, value)) in head
            .iter()
            .chain(&istio)
            .map(|(k, v)| (*k, v))
            .chain(fields.0.iter().map(|(k, v)| (k.as_str(), v)))
            .enumerate()
        {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
            text.push(':');
            text.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
        }
        text.push('}');
        writeln!(writer, "{text}")
    }
}
