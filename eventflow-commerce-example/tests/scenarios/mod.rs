//! The end-to-end scenarios, over real sockets against the app binary. Each root test file
//! (`e2e.rs`, `e2e_eventbridge.rs`, `e2e_pubsub.rs`) runs all of them on its deployment.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{App, JWT_SECRET, USER, order};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const OTHER: &str = "other@example.com";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn notifications(app: &App, token: &str, order_id: &str) -> Value {
    app.eventually(
        "notification",
        &format!("/notifications?orderId={order_id}"),
        Some(token),
        |status, body| {
            status == 200
                && body
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n["status"] == "SENT"))
        },
    )
    .await
}

fn compensations_of(saga: &Value) -> Vec<&str> {
    saga["compensations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn happy_path_completes_captures_ships_and_confirms() {
    let Some(app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    let (status, catalog) = app.get("catalog", "/catalog", None).await;
    assert_eq!(status, 200);
    assert_eq!(catalog.as_array().unwrap().len(), 5);
    assert_eq!(
        catalog[0],
        json!({"productId": "prod-1", "name": "Mechanical Keyboard", "priceCents": 8999, "currency": "USD"})
    );

    let mut body = order("prod-1", 2, "98101");
    body["customerId"] = json!("customer-1");
    let response = app
        .http
        .post(app.url("ordering", "/orders"))
        .bearer_auth(&token)
        .header("x-correlation-id", "e2e-happy-1")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("idempotency-key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-correlation-id"], "e2e-happy-1");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let order_id = accepted["orderId"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/orders/{order_id}"));

    // Read-your-writes: the very next GET finds it in the read model.
    let (status, placed) = app.get("ordering", &location, Some(&token)).await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["customerId"], "customer-1");
    assert_eq!(
        placed["items"],
        json!([{"productId": "prod-1", "quantity": 2, "unitPriceCents": 8999}])
    );
    assert_eq!(placed["totalCents"], 17998);

    let done = app.settled(&token, &order_id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(done.get("cancellationReason").is_none());

    let payment = app
        .eventually(
            "payment",
            &format!("/payments/{order_id}"),
            Some(&token),
            |s, b| s == 200 && b["status"] == "CAPTURED",
        )
        .await;
    assert_eq!(payment["amountCents"], 17998);
    assert_eq!(app.stock("prod-1").await, (98, 2));
    let (status, shipment) = app
        .get("shipping", &format!("/shipments/{order_id}"), Some(&token))
        .await;
    assert_eq!(
        (status, shipment["status"].as_str()),
        (200, Some("CREATED"))
    );
    let sent = notifications(&app, &token, &order_id).await;
    assert_eq!(sent.as_array().unwrap().len(), 1);
    assert_eq!(sent[0]["kind"], "ORDER_CONFIRMATION");
    // To the address identity published for the customer, not to the customer id.
    assert_eq!(sent[0]["recipient"], USER);
    assert_eq!(sent[0]["orderId"], order_id.as_str());
    let saga = app.saga(&order_id).await;
    assert_eq!(saga["status"], "COMPLETED");
    assert!(
        saga["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "SUCCEEDED")
    );
    assert_eq!(saga["correlationId"], "e2e-happy-1");

    // A retry with the same key is the same order; the same key for another order is refused.
    let retry = app
        .http
        .post(app.url("ordering", "/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(
        retry.json::<Value>().await.unwrap()["orderId"],
        order_id.as_str()
    );
    let reused = app
        .http
        .post(app.url("ordering", "/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "key-1")
        .json(&order("prod-3", 1, "98101"))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 409);
    assert_eq!(
        app.stock("prod-1").await,
        (98, 2),
        "the retry reserved nothing"
    );

    let (status, mine) = app
        .get("ordering", "/orders?pageSize=10", Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0]["orderId"], order_id.as_str());

    // The correlation id and the caller's W3C trace reached every context the order touched,
    // through event metadata, bus attributes and saga commands, into their log lines.
    for (field, value) in [("correlationId", "e2e-happy-1"), ("traceId", TRACE_ID)] {
        let services: BTreeSet<String> = app
            .logs()
            .iter()
            .filter(|l| l[field] == value)
            .filter_map(|l| l["service"].as_str().map(str::to_owned))
            .collect();
        for service in [
            "ordering",
            "saga",
            "inventory",
            "payment",
            "shipping",
            "notification",
        ] {
            assert!(
                services.contains(service),
                "no log line of {service} carries {field} {value}; saw {services:?}"
            );
        }
    }

    // Graceful shutdown on SIGTERM: exit 0.
    assert!(app.terminate().success());
}

/// The value of the series of `family` whose labels include every one of `labels` in the
/// Prometheus text `metrics`; the first such line wins.
fn sample(metrics: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (name, label_text) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let has = |(label, value): &(&str, &str)| {
            label_text
                .split("\",")
                .map(|pair| pair.trim_end_matches('"'))
                .any(|pair| pair == format!("{label}=\"{value}"))
        };
        (name == family && labels.iter().all(has)).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_an_order_on_every_service_and_responses_name_the_version() {
    let Some(app) = App::start_with(&[("APP_VERSION", "canary-7")]).await else {
        return;
    };
    let token = app.login(USER).await;
    let response = app
        .http
        .post(app.url("ordering", "/orders"))
        .bearer_auth(&token)
        .header("x-request-id", "req-metrics-1")
        .header("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
        .json(&order("prod-4", 1, "98101"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The version that answered, and Istio's tracing headers echoed as received.
    assert_eq!(response.headers()["x-app-version"], "canary-7");
    assert_eq!(response.headers()["x-request-id"], "req-metrics-1");
    assert_eq!(
        response.headers()["b3"],
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    );
    let order_id = response.json::<Value>().await.unwrap()["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.settled(&token, &order_id).await["status"], "COMPLETED");
    assert_eq!(app.saga(&order_id).await["status"], "COMPLETED");
    let placed = app
        .logs()
        .into_iter()
        .find(|l| l["message"] == "order placed" && l["order_id"] == order_id.as_str())
        .expect("ordering logged the order");
    assert_eq!(placed["requestId"], "req-metrics-1");
    assert_eq!(placed["b3TraceId"], "80f198ee56343ba864fe8b2a57d3eff7");

    // Every service: its own registry, with the families every service has.
    for service in crate::support::SERVICES {
        let response = app
            .http
            .get(app.url(service, "/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{service}");
        assert_eq!(response.headers()["x-app-version"], "canary-7", "{service}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "{service}"
        );
        let text = response.text().await.unwrap();
        let info = [("service", service), ("app_version", "canary-7")];
        assert_eq!(
            sample(&text, "eventflow_build_info", &info),
            Some(1.0),
            "{text}"
        );
        let ready = [("method", "GET"), ("route", "/ready"), ("status", "200")];
        assert!(
            sample(&text, "http_requests_total", &ready) >= Some(1.0),
            "{service}: {text}"
        );
        for family in [
            "http_request_duration_seconds_count",
            "eventflow_commands_total",
            "eventflow_command_conflicts_total",
            "eventflow_outbox_pending",
            "eventflow_outbox_parked",
            "eventflow_dead_letters_total",
        ] {
            if service == "identity" && family == "eventflow_dead_letters_total" {
                continue; // identity consumes nothing from the bus
            }
            assert!(
                sample(&text, family, &[]).is_some(),
                "{service} has no {family}: {text}"
            );
            let base = family.trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{service}: no TYPE line for {base}"
            );
        }
    }

    // What the order did, where it did it: polled, since a reply is counted once handled.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ordering = app
            .http
            .get(app.url("ordering", "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let saga = app
            .http
            .get(app.url("saga", "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let placed = [("method", "POST"), ("route", "/orders"), ("status", "202")];
        let by_template = [("route", "/orders/{orderId}"), ("status", "200")];
        let completed = [("saga", "PlaceOrder"), ("outcome", "completed")];
        // The order views: the projection this order certainly went through (the price list
        // was fed before the order, in another process when distributed).
        let views = [("projection", "order-views")];
        let views_applied = [("projection", "order-views"), ("outcome", "applied")];
        let mut missing: Vec<&str> = [
            (
                sample(&ordering, "http_requests_total", &placed) == Some(1.0),
                "POST /orders 202 counted once",
            ),
            (
                sample(&ordering, "http_request_duration_seconds_count", &placed) == Some(1.0),
                "POST /orders timed",
            ),
            (
                sample(&ordering, "http_requests_total", &by_template) >= Some(1.0),
                "GET /orders/{orderId} under its template",
            ),
            (
                sample(
                    &ordering,
                    "eventflow_commands_total",
                    &[("outcome", "recorded")],
                ) >= Some(2.0),
                "ordering's commands",
            ),
            (
                sample(
                    &ordering,
                    "eventflow_projection_events_total",
                    &views_applied,
                ) >= Some(1.0),
                "events applied by the order views",
            ),
            (
                sample(&ordering, "eventflow_projection_lag_seconds_count", &views) >= Some(1.0),
                "the order views' lag",
            ),
            (
                sample(
                    &saga,
                    "eventflow_sagas_started_total",
                    &[("saga", "PlaceOrder")],
                ) >= Some(1.0),
                "saga started",
            ),
            (
                sample(&saga, "eventflow_saga_outcomes_total", &completed) >= Some(1.0),
                "saga completed",
            ),
            (
                sample(
                    &saga,
                    "eventflow_saga_outcomes_total",
                    &[("outcome", "compensated")],
                ) == Some(0.0),
                "no saga compensated",
            ),
            (
                sample(
                    &saga,
                    "eventflow_saga_outcomes_total",
                    &[("outcome", "needs_attention")],
                ) == Some(0.0),
                "no saga needing attention",
            ),
        ]
        .into_iter()
        .filter_map(|(ok, what)| (!ok).then_some(what))
        .collect();
        for step in [
            "ReserveInventory",
            "AuthorizePayment",
            "CreateShipment",
            "CompleteOrder",
        ] {
            let labels = [("step", step), ("outcome", "succeeded")];
            if sample(&saga, "eventflow_saga_step_duration_seconds_count", &labels) != Some(1.0) {
                missing.push(step);
            }
        }
        if sample(&saga, "eventflow_dead_letters_total", &[]) != Some(0.0) {
            missing.push("no dead letter");
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in /metrics yet: {missing:?}\nordering:\n{ordering}\nsaga:\n{saga}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places `body` and checks what every cancelled order leaves: CANCELLED with `reason`, the saga
/// compensated with exactly `compensations` (in this order), no shipment, the cancellation email.
/// Returns the token and the order id for the checks particular to a case.
async fn cancelled(
    app: &App,
    body: &Value,
    reason: &str,
    compensations: &[&str],
) -> (String, String) {
    let token = app.login(USER).await;
    let order_id = app.place_ok(&token, body).await;
    let done = app.settled(&token, &order_id).await;
    assert_eq!(done["status"], "CANCELLED");
    assert!(
        done["cancellationReason"]
            .as_str()
            .unwrap()
            .contains(reason),
        "{done}"
    );
    let saga = app.saga(&order_id).await;
    assert_eq!(saga["status"], "COMPENSATED");
    assert_eq!(compensations_of(&saga), compensations);
    let shipment = app
        .get("shipping", &format!("/shipments/{order_id}"), Some(&token))
        .await;
    assert_eq!(shipment.0, 404, "no shipment is left: {}", shipment.1);
    assert_eq!(
        notifications(app, &token, &order_id).await[0]["kind"],
        "ORDER_CANCELLATION"
    );
    (token, order_id)
}

async fn payment_of(app: &App, token: &str, order_id: &str) -> (u16, Option<String>) {
    let (status, payment) = app
        .get("payment", &format!("/payments/{order_id}"), Some(token))
        .await;
    (status, payment["status"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_declined_payment_releases_the_stock_and_cancels() {
    let Some(app) = App::start().await else {
        return;
    };
    // 6 x 399.00 = 2,394.00, above the 2,000.00 limit.
    let (token, order_id) = cancelled(
        &app,
        &order("prod-2", 6, "98101"),
        "declined",
        &[
            "compensation of ReserveInventory",
            "final command CancelOrder",
        ],
    )
    .await;
    let declined = (200, Some("DECLINED".to_owned()));
    assert_eq!(
        payment_of(&app, &token, &order_id).await,
        declined,
        "never authorized"
    );
    assert_eq!(app.stock("prod-2").await, (50, 0));
}

#[tokio::test]
async fn out_of_stock_cancels_without_touching_payment() {
    let Some(app) = App::start().await else {
        return;
    };
    let (token, order_id) = cancelled(
        &app,
        &order("prod-5", 6, "98101"),
        "insufficient stock",
        &["final command CancelOrder"],
    )
    .await;
    assert_eq!(payment_of(&app, &token, &order_id).await.0, 404);
    assert_eq!(app.stock("prod-5").await, (5, 0));
}

#[tokio::test]
async fn an_undeliverable_address_undoes_payment_and_stock_in_reverse_order() {
    let Some(app) = App::start().await else {
        return;
    };
    let (token, order_id) = cancelled(
        &app,
        &order("prod-1", 1, "00000"),
        "undeliverable",
        &[
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder",
        ],
    )
    .await;
    let voided = (200, Some("VOIDED".to_owned()));
    assert_eq!(payment_of(&app, &token, &order_id).await, voided);
    assert_eq!(app.stock("prod-1").await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_orders_for_five_posters_complete_exactly_five() {
    let Some(app) = App::start().await else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let token = app.login(USER).await;
    let watcher = {
        let app = std::sync::Arc::clone(&app);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..200 {
                seen.push(app.stock("prod-5").await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let orders: Vec<_> = (0..20)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            let token = token.clone();
            tokio::spawn(async move {
                let id = app.place_ok(&token, &order("prod-5", 1, "98101")).await;
                app.settled(&token, &id).await["status"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut completed = 0;
    for task in orders {
        let status = task.await.unwrap();
        assert!(status == "COMPLETED" || status == "CANCELLED", "{status}");
        completed += usize::from(status == "COMPLETED");
    }
    assert_eq!(completed, 5);
    assert_eq!(app.stock("prod-5").await, (0, 5));
    for (available, reserved) in watcher.await.unwrap() {
        assert_eq!(available + reserved, 5, "stock is conserved at every read");
    }
}

fn token_with(secret: &[u8], algorithm: Algorithm, subject: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        json!({ "sub": subject, "iss": "eventflow-commerce", "iat": now, "exp": now + exp_offset });
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_are_verified_and_orders_are_private() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let Some(app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    let order_id = app.place_ok(&token, &order("prod-3", 1, "98101")).await;
    let path = format!("/orders/{order_id}");

    let valid = token_with(JWT_SECRET.as_bytes(), Algorithm::HS256, "customer-1", 600);
    assert_eq!(
        app.get("ordering", &path, Some(&valid)).await.0,
        200,
        "a token signed with the secret works"
    );

    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let unsigned = {
        let parts: Vec<&str> = token.split('.').collect();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1])
    };
    let cases = [
        ("no token", None),
        ("forged signature", Some(forged)),
        (
            "expired",
            Some(token_with(
                JWT_SECRET.as_bytes(),
                Algorithm::HS256,
                "customer-1",
                -600,
            )),
        ),
        ("alg none", Some(unsigned)),
        (
            "another secret",
            Some(token_with(
                b"another-secret-another-secret-another",
                Algorithm::HS256,
                "customer-1",
                600,
            )),
        ),
        (
            "another algorithm",
            Some(token_with(
                JWT_SECRET.as_bytes(),
                Algorithm::HS512,
                "customer-1",
                600,
            )),
        ),
        ("garbage", Some("not.a.token".to_owned())),
    ];
    for (case, bad) in cases {
        let (status, body) = app.get("ordering", &path, bad.as_deref()).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "unauthorized", "{case}");
    }
    let response = app
        .http
        .post(app.url("identity", "/auth/login"))
        .json(&json!({"username": USER, "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let other = app.login(OTHER).await;
    let (status, body) = app.get("ordering", &path, Some(&other)).await;
    assert_eq!(status, 404, "another customer's order is not found: {body}");
    assert_eq!(
        app.get("payment", &format!("/payments/{order_id}"), Some(&other))
            .await
            .0,
        404
    );
    let mut theirs = order("prod-3", 1, "98101");
    theirs["customerId"] = json!("customer-1");
    let (status, body) = app.place(&other, &theirs).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_json_body_naming_the_problem() {
    let Some(app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    let post = |body: String, content_type: &'static str| {
        app.http
            .post(app.url("ordering", "/orders"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json = "application/json";
    let with_quantity = |q: &str| {
        order("prod-1", 1, "98101")
            .to_string()
            .replace("\"quantity\":1", &format!("\"quantity\":{q}"))
    };
    let cases: Vec<(&str, String, &str, u16, Option<&str>)> = vec![
        ("malformed JSON", "{\"items\": [".into(), json, 400, None),
        (
            "quantity 0",
            with_quantity("0"),
            json,
            422,
            Some("items[0].quantity"),
        ),
        (
            "negative quantity",
            with_quantity("-1"),
            json,
            422,
            Some("items[0].quantity"),
        ),
        (
            "quantity above u32",
            with_quantity("4294967296"),
            json,
            422,
            Some("items[0].quantity"),
        ),
        (
            "empty items",
            order("prod-1", 1, "98101")
                .to_string()
                .replace(r#"[{"productId":"prod-1","quantity":1}]"#, "[]"),
            json,
            422,
            Some("items"),
        ),
        (
            "unknown product",
            order("prod-404", 1, "98101").to_string(),
            json,
            422,
            Some("items[0].productId"),
        ),
        (
            "missing address",
            r#"{"items":[{"productId":"prod-1","quantity":1}]}"#.into(),
            json,
            422,
            Some("shippingAddress"),
        ),
        (
            "empty zip",
            order("prod-1", 1, " ").to_string(),
            json,
            422,
            Some("shippingAddress.zip"),
        ),
        (
            "2 MB body",
            format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024)),
            json,
            413,
            None,
        ),
        (
            "wrong content type",
            order("prod-1", 1, "98101").to_string(),
            "text/plain",
            415,
            None,
        ),
    ];
    for (case, body, content_type, expected, field) in cases {
        // The server answers 413 as soon as it knows the body is too large and closes the
        // connection without reading the rest: a client still writing may see the reset before
        // the answer, so a transport error is retried (never a wrong status).
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            match post(body.clone(), content_type).await {
                Ok(response) => break response,
                Err(error) if attempts < 10 => eprintln!("{case}: {error}; sending again"),
                Err(error) => panic!("{case}: {error}"),
            }
        };
        assert_eq!(response.status().as_u16(), expected, "{case}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].is_string() && error["message"].is_string(),
            "{case}: {error}"
        );
        if let Some(field) = field {
            assert_eq!(error["details"]["field"], field, "{case}: {error}");
        }
    }
    assert_eq!(app.get("catalog", "/catalog/prod-404", None).await.0, 404);
    assert_eq!(
        app.get("ordering", "/orders?page=0", Some(&token)).await.0,
        400
    );
    assert_eq!(app.get("saga", "/sagas?status=bogus", None).await.0, 400);
    assert_eq!(app.stock("prod-1").await, (100, 0), "nothing was reserved");

    // A client's mistakes are not the service's errors.
    let errors: Vec<Value> = app
        .logs()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(
        errors.is_empty(),
        "error-level lines for client mistakes: {errors:?}"
    );
}
