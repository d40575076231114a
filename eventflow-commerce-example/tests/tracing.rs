//! Trace export in the distributed mode: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each of the
//! eight processes exports its spans over OTLP/HTTP, and one order is one trace across them (the
//! `traceparent` travels in HTTP headers, bus attributes and saga commands). The collector is a
//! few lines here: an HTTP server that keeps what it is sent. Needs the `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use support::{App, USER, order};

/// Where the test runs.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("eventbridge");

const TRACE_ID: &str = "5af7183fb1d4cf5f4bf92f3577b34da6";

/// What the collector received: one OTLP/JSON `ExportTraceServiceRequest` per export.
type Received = Arc<Mutex<Vec<Value>>>;

async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Received>, Json(body): Json<Value>| async move {
                    received.lock().unwrap().push(body);
                    Json(json!({}))
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// The services that exported at least one span of `trace_id`.
fn services_in_trace(received: &Received, trace_id: &str) -> BTreeSet<String> {
    let mut services = BTreeSet::new();
    for request in received.lock().unwrap().iter() {
        for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource_spans["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("?")
                .to_owned();
            let in_trace = resource_spans["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|scope| scope["spans"].as_array().into_iter().flatten())
                .any(|span| {
                    span["traceId"]
                        .as_str()
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                        == Some(trace_id)
                });
            if in_trace {
                services.insert(service);
            }
        }
    }
    services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_the_services() {
    let (endpoint, received) = collector().await;
    let Some(app) = App::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await
    else {
        return;
    };
    let token = app.login(USER).await;
    let response = app
        .http
        .post(app.url("ordering", "/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&order("prod-1", 1, "98101"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let order_id = accepted["orderId"].as_str().unwrap();
    assert_eq!(app.settled(&token, order_id).await["status"], "COMPLETED");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let services = services_in_trace(&received, TRACE_ID);
        let expected = ["ordering", "saga", "inventory", "payment", "shipping"];
        if expected.iter().all(|s| services.contains(*s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {TRACE_ID} came from {services:?} only; expected at least {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
