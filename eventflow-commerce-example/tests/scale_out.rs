//! Scale out: two orchestrators and two instances of every participant service (ordering,
//! inventory, payment, shipping) and of notification, on the same tables and queues, take 50
//! concurrent orders over scarce and plentiful stock. Every order ends, every stock figure is
//! exact, nothing is paid or shipped twice, and both instances of each service did work. On
//! moto + EventBridge/SQS; needs the `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use serde_json::Value;
use support::{App, USER, order};

/// Where the test runs.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("eventbridge");

const SCALED: [&str; 6] = [
    "saga",
    "ordering",
    "inventory",
    "payment",
    "shipping",
    "notification",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_each_service_take_fifty_orders_exactly_once() {
    // Deadlines longer than the test: an order that waits for a busy moto is not a timeout.
    let Some(mut app) = App::start_with(&[("SAGA_STEP_TIMEOUT_MS", "300000")]).await else {
        return;
    };
    let mut second_ordering = String::new();
    for service in SCALED {
        let base = app.add_instance(service).await;
        if service == "ordering" {
            second_ordering = base;
        }
    }
    let app = Arc::new(app);
    let token = app.login(USER).await;
    // 25 orders for the 5 posters (scarce), 25 for two hubs each (plentiful: 200).
    let orders: Vec<(&str, i64)> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                ("prod-5", 1)
            } else {
                ("prod-3", 2)
            }
        })
        .collect();
    let placed =
        futures::future::join_all(orders.iter().enumerate().map(|(i, (product, quantity))| {
            let (app, token, second) = (Arc::clone(&app), token.clone(), second_ordering.clone());
            let body = order(product, *quantity, "98101");
            async move {
                // Half the orders go to the second ordering instance.
                let url = if i % 2 == 0 {
                    app.url("ordering", "/orders")
                } else {
                    format!("{second}/orders")
                };
                let response = app
                    .http
                    .post(url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let accepted: Value = response.json().await.unwrap();
                accepted["orderId"].as_str().unwrap().to_owned()
            }
        }))
        .await;

    let mut completed = [0u64; 2];
    for ((product, quantity), order_id) in orders.iter().zip(&placed) {
        let settled = app.settled(&token, order_id).await;
        let saga = app.saga(order_id).await;
        let (status, payment) = app
            .get("payment", &format!("/payments/{order_id}"), Some(&token))
            .await;
        let (shipped, shipment) = app
            .get("shipping", &format!("/shipments/{order_id}"), Some(&token))
            .await;
        match settled["status"].as_str().unwrap() {
            "COMPLETED" => {
                completed[usize::from(*product == "prod-3")] += 1;
                assert_eq!(saga["status"], "COMPLETED", "{saga}");
                assert_eq!(status, 200, "{payment}");
                assert_eq!(payment["status"], "CAPTURED", "{payment}");
                let price = if *product == "prod-3" { 4_950 } else { 1_999 };
                assert_eq!(payment["amountCents"], price * quantity, "{payment}");
                assert_eq!(shipped, 200, "{shipment}");
            }
            "CANCELLED" => {
                assert_eq!(*product, "prod-5", "plentiful stock never runs out");
                assert_eq!(saga["status"], "COMPENSATED", "{saga}");
                assert_eq!(
                    status, 404,
                    "an order out of stock is never charged: {payment}"
                );
                assert_eq!(shipped, 404, "nor shipped: {shipment}");
            }
            other => panic!("order {order_id} ended {other}"),
        }
    }
    assert_eq!(
        completed,
        [5, 25],
        "exactly the 5 posters sold, every hub order"
    );
    assert_eq!(app.stock("prod-5").await, (0, 5));
    assert_eq!(app.stock("prod-3").await, (200 - 2 * 25, 2 * 25));
    let captured: usize = app
        .work_per_instance("payment", "\"payment captured\"")
        .iter()
        .sum();
    assert_eq!(captured, 30, "one capture per completed order");
    for service in SCALED {
        let message = match service {
            "saga" => "\"saga finished\"",
            "notification" => "\"email sent\"",
            _ => "\"saga command handled\"",
        };
        let work = app.work_per_instance(service, message);
        assert!(
            work.len() == 2 && work.iter().all(|n| *n > 0),
            "both instances of {service} did work: {work:?}"
        );
    }
}
