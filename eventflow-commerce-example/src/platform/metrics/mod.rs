//! Prometheus metrics. Each service keeps its own registry (a `metrics-exporter-prometheus`
//! recorder that is never installed as the global one), so `GET /metrics` on a service's port
//! shows that service's series only, also when all eight run in one process, and two apps in one
//! process (tests) never mix their counts.
//!
//! What is counted where:
//! - `http`: every request, by method, matched route template and status;
//! - `store`: what commands write (every write of the app is a command's), and version conflicts;
//! - `projection`: events applied by each bus-fed projection, and how late they arrived;
//! - [`ContextInfra`](super::messaging::ContextInfra): dead letters, and on each scrape the
//!   outbox's pending and parked entries;
//! - the orchestration context: saga outcomes and step durations.
//!
//! The family names and labels are the constants below; the deploy README's runbook queries them.

mod http;
mod projection;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::server::Shutdown;

pub(crate) use http::measure;
pub(crate) use projection::MeasuredProjector;
pub(crate) use store::MeteredStore;

/// `http_requests_total{method, route, status}`: requests answered. `route` is the matched route
/// template (`/orders/{orderId}`), `unmatched` for a path no route has; `method` is one of the
/// standard methods or `OTHER`.
pub(crate) const HTTP_REQUESTS: &str = "http_requests_total";
/// `http_request_duration_seconds{method, route, status}`: from the request reaching the service
/// to its response's head.
pub(crate) const HTTP_DURATION: &str = "http_request_duration_seconds";
/// `eventflow_commands_total{outcome}`: commands that wrote to the event store; `recorded`
/// (their events appended), `duplicate` (the append found its idempotency key already used:
/// nothing written) or `failed` (the store failed). Commands refused by the domain write
/// nothing and are not counted here (they are 4xx answers or saga step failures).
pub(crate) const COMMANDS: &str = "eventflow_commands_total";
/// `eventflow_command_conflicts_total`: appends refused by the optimistic version check. The
/// repository catches up and decides again, so a conflict costs a retry, not the command.
pub(crate) const CONFLICTS: &str = "eventflow_command_conflicts_total";
/// `eventflow_sagas_started_total{saga}`: sagas this orchestrator started.
pub(crate) const SAGAS_STARTED: &str = "eventflow_sagas_started_total";
/// `eventflow_saga_outcomes_total{saga, outcome}`: `completed`, `compensated` (the order was
/// cancelled) or `needs_attention` (a compensation could not finish: an operator must look).
pub(crate) const SAGA_OUTCOMES: &str = "eventflow_saga_outcomes_total";
/// `eventflow_saga_step_duration_seconds{saga, step, outcome}`: from a step's first send to the
/// reply that settled it (`succeeded`, `failed`), or to its compensation when it timed out
/// (`timed_out`).
pub(crate) const SAGA_STEP_DURATION: &str = "eventflow_saga_step_duration_seconds";
/// `eventflow_projection_events_total{projection, outcome}`: events delivered to a projection,
/// `applied` or `duplicate` (applied before: a redelivery, or the writer applied its own event).
pub(crate) const PROJECTION_EVENTS: &str = "eventflow_projection_events_total";
/// `eventflow_projection_lag_seconds{projection}`: from an event being recorded to its delivery
/// reaching the projection: how far behind the event log the read model runs.
pub(crate) const PROJECTION_LAG: &str = "eventflow_projection_lag_seconds";
/// `eventflow_outbox_pending`: outbox entries not yet relayed to the bus (counted up to
/// [`OUTBOX_COUNT_LIMIT`]), read on each scrape.
pub(crate) const OUTBOX_PENDING: &str = "eventflow_outbox_pending";
/// `eventflow_outbox_parked`: outbox entries the bus refused for good, set aside until an
/// operator redrives them (counted up to [`OUTBOX_COUNT_LIMIT`]), read on each scrape.
pub(crate) const OUTBOX_PARKED: &str = "eventflow_outbox_parked";
/// `eventflow_dead_letters_total{subscription}`: deliveries whose last attempt failed, so the bus
/// or queue dead-letters the message (counted by the consumer that gave up).
pub(crate) const DEAD_LETTERS: &str = "eventflow_dead_letters_total";
/// `eventflow_build_info{service, app_version}`: always 1; `app_version` is `APP_VERSION`.
pub(crate) const BUILD_INFO: &str = "eventflow_build_info";

/// How many outbox entries a scrape counts at most: a backlog larger than this reads as this.
pub(crate) const OUTBOX_COUNT_LIMIT: usize = 1_000;

/// The bucket bounds of every duration histogram, in seconds: milliseconds for HTTP and
/// projections, up to two minutes for saga steps (a step's default budget is 91 s).
const SECONDS_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often histogram samples are folded into their buckets between scrapes, so that a service
/// nobody scrapes does not keep every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What kind of series a family has, for its `# TYPE` line.
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family with its help text (the `# HELP` line).
const FAMILIES: [(&str, Kind, &str); 13] = [
    (HTTP_REQUESTS, Kind::Counter, "HTTP requests answered"),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "Time from an HTTP request reaching the service to its response",
    ),
    (
        COMMANDS,
        Kind::Counter,
        "Commands that wrote to the event store, by outcome",
    ),
    (
        CONFLICTS,
        Kind::Counter,
        "Appends refused by the optimistic version check (retried by the repository)",
    ),
    (SAGAS_STARTED, Kind::Counter, "Sagas started"),
    (
        SAGA_OUTCOMES,
        Kind::Counter,
        "Sagas ended or parked, by outcome",
    ),
    (
        SAGA_STEP_DURATION,
        Kind::Histogram,
        "Time from a saga step's first send to the reply that settled it",
    ),
    (
        PROJECTION_EVENTS,
        Kind::Counter,
        "Events delivered to a projection, by outcome",
    ),
    (
        PROJECTION_LAG,
        Kind::Histogram,
        "Time from an event being recorded to its delivery to a projection",
    ),
    (
        OUTBOX_PENDING,
        Kind::Gauge,
        "Outbox entries not yet relayed to the bus",
    ),
    (
        OUTBOX_PARKED,
        Kind::Gauge,
        "Outbox entries the bus refused for good, awaiting a redrive",
    ),
    (
        DEAD_LETTERS,
        Kind::Counter,
        "Deliveries whose last attempt failed (the message is dead-lettered)",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "The service and the version it reports",
    ),
];

/// The metadata every series is registered with (the exporter does not use it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Refreshes gauges that are read rather than counted (the outbox), run before each render.
type Sample = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One service's metrics: its registry, and what is sampled when it is scraped. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    samples: Mutex<Vec<Sample>>,
}

impl Metrics {
    /// The registry of `service`, reporting `app_version` in `eventflow_build_info`.
    pub(crate) fn new(service: &'static str, app_version: &str) -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets(&SECONDS_BUCKETS)
            .unwrap_or_else(|_| unreachable!("the bucket list is not empty"));
        let recorder = builder.build_recorder();
        for (name, kind, help) in FAMILIES {
            let (name, unit) = (KeyName::from_const_str(name), None::<Unit>);
            match kind {
                Kind::Counter => recorder.describe_counter(name, unit, help.into()),
                Kind::Gauge => recorder.describe_gauge(name, unit, help.into()),
                Kind::Histogram => recorder.describe_histogram(name, unit, help.into()),
            }
        }
        let handle = recorder.handle();
        let metrics = Metrics(Arc::new(Inner {
            recorder,
            handle,
            samples: Mutex::new(Vec::new()),
        }));
        metrics
            .gauge(
                BUILD_INFO,
                &[("service", service), ("app_version", app_version)],
            )
            .set(1.0);
        metrics
    }

    /// The counter of `family` with `labels`, created at zero the first time.
    pub(crate) fn counter(&self, family: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.0
            .recorder
            .register_counter(&key(family, labels), &METADATA)
    }

    /// The gauge of `family` with `labels`.
    pub(crate) fn gauge(&self, family: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.0
            .recorder
            .register_gauge(&key(family, labels), &METADATA)
    }

    /// The histogram of `family` with `labels` (seconds).
    pub(crate) fn histogram(
        &self,
        family: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        self.0
            .recorder
            .register_histogram(&key(family, labels), &METADATA)
    }

    /// Runs `sample` before each render: for gauges read from elsewhere (a store's outbox).
    pub(crate) fn sample_on_scrape<F, Fut>(&self, sample: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sample: Sample = Arc::new(move || Box::pin(sample()));
        self.samples().push(sample);
    }

    /// The Prometheus text exposition of every series, after the samples ran.
    pub(crate) async fn render(&self) -> String {
        let samples = self.samples().clone();
        for sample in samples {
            sample().await;
        }
        self.0.handle.render()
    }

    /// Folds histogram samples into their buckets every few seconds until `shutdown` (the
    /// exporter's own HTTP listener would do this; the app serves `/metrics` itself).
    pub(crate) fn keep_up(&self, shutdown: Shutdown) {
        let handle = self.0.handle.clone();
        tokio::spawn(async move {
            let stop = shutdown.wait();
            tokio::pin!(stop);
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => handle.run_upkeep(),
                    () = &mut stop => return,
                }
            }
        });
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, Vec<Sample>> {
        // A list only pushed to and cloned: a poisoned one is still whole.
        self.0.samples.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(family: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(name, value)| Label::new(*name, (*value).to_owned()))
        .collect();
    Key::from_parts(family, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_service_renders_its_own_series_with_help_and_type() {
        let ordering = Metrics::new("ordering", "v2");
        let payment = Metrics::new("payment", "1.0.0");
        ordering.counter(CONFLICTS, &[]).increment(2);
        ordering
            .histogram(PROJECTION_LAG, &[("projection", "order-views")])
            .record(0.02);
        let text = ordering.render().await;
        assert!(
            text.contains("# TYPE eventflow_command_conflicts_total counter"),
            "{text}"
        );
        assert!(
            text.contains("eventflow_command_conflicts_total 2"),
            "{text}"
        );
        assert!(
            text.contains("# HELP eventflow_projection_lag_seconds "),
            "{text}"
        );
        assert!(
            text.contains(
                r#"eventflow_projection_lag_seconds_bucket{projection="order-views",le="0.025"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"eventflow_build_info{service="ordering",app_version="v2"} 1"#),
            "{text}"
        );
        let other = payment.render().await;
        assert!(!other.contains("conflicts_total"), "{other}");
    }
}
