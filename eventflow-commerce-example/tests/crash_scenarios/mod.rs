//! Crashes that must not cancel anyone's order: the PlaceOrder saga's promise, on eight
//! processes. Each root test file (`crashes_eventbridge.rs`, `crashes_pubsub.rs`) runs all of them
//! on its bus.
//!
//! A service is killed with SIGKILL (nothing flushed, messages it held stay leased until the bus
//! gives them to someone else) while ten orders are in flight, and started again later with the
//! same settings. A step's deadline then means "outcome unknown": the saga resends, and every
//! order completes exactly once (stock exact, each payment captured once, no shipment cancelled,
//! no saga needing attention). An order the payment declines is compensated exactly once even when
//! the orchestrator dies mid-compensation.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{App, USER, history_count as count, order};

/// Plenty of stock (200) and one price, so ten orders never run out and amounts are known.
const PRODUCT: &str = "prod-3";
const PRICE_CENTS: u64 = 4_950;
/// Orders in flight per crash.
const ORDERS: usize = 10;
/// The participants, killed in turn.
const PARTICIPANTS: [&str; 4] = ["inventory", "payment", "shipping", "ordering"];

/// Places `n` orders of one `PRODUCT` each, all at once.
async fn place(app: &App, token: &str, n: usize) -> Vec<String> {
    let body = order(PRODUCT, 1, "98101");
    futures::future::join_all((0..n).map(|_| app.place_ok(token, &body))).await
}

/// Where each saga is: the step it waits on, or its end.
async fn positions(app: &App, orders: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in orders {
        let (_, saga) = app.get("saga", &format!("/sagas/{id}"), None).await;
        let pending = saga["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["status"] == "PENDING"))
            .and_then(|s| s["name"].as_str());
        out.push(match pending {
            Some(step) => step.to_owned(),
            None => saga["status"].as_str().unwrap_or("NOT STARTED").to_owned(),
        });
    }
    out
}

/// Waits (at most 5 s) until the sagas of `orders` are spread over three steps or more, so that
/// a crash hits them at different points; returns where they are.
async fn spread_over_steps(app: &App, orders: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let at = positions(app, orders).await;
        let steps: std::collections::BTreeSet<&String> = at.iter().collect();
        if steps.len() >= 3 || Instant::now() >= deadline {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every order completed exactly once: order and saga COMPLETED with each step's success recorded
/// once and no compensation, its payment captured for one unit, its shipment not cancelled; the
/// stock moved by exactly the orders; no saga needs attention.
async fn all_completed_once(app: &App, token: &str, orders: &[String], stock_before: (u64, u64)) {
    for id in orders {
        let settled = app.settled(token, id).await;
        assert_eq!(settled["status"], "COMPLETED", "order {id}: {settled}");
        let saga = app.saga(id).await;
        assert_eq!(saga["status"], "COMPLETED", "{saga}");
        assert_eq!(
            count(&saga, "SagaStepSucceeded"),
            4,
            "each step once: {saga}"
        );
        assert_eq!(count(&saga, "SagaCompensationStarted"), 0, "{saga}");
        let payment = app
            .eventually(
                "payment",
                &format!("/payments/{id}"),
                Some(token),
                |s, p| s == 200 && p["status"] == "CAPTURED",
            )
            .await;
        assert_eq!(
            payment["amountCents"], PRICE_CENTS,
            "captured once: {payment}"
        );
        let (status, shipment) = app
            .get("shipping", &format!("/shipments/{id}"), Some(token))
            .await;
        assert_eq!(
            (status, shipment["status"].as_str()),
            (200, Some("CREATED")),
            "{shipment}"
        );
    }
    let n = orders.len() as u64;
    assert_eq!(
        app.stock(PRODUCT).await,
        (stock_before.0 - n, stock_before.1 + n),
        "reserved once per order"
    );
    let (status, parked) = app.get("saga", "/sagas?status=NEEDS_ATTENTION", None).await;
    assert_eq!((status, &parked["sagas"]), (200, &Value::Array(Vec::new())));
}

/// Kills `service` with ten orders in flight, spread over the steps, starts it again `down`
/// after the kill, and checks that every order completed once.
async fn crash_round(app: &mut App, token: &str, service: &str, down: Duration) {
    let before = app.stock(PRODUCT).await;
    let orders = place(app, token, ORDERS).await;
    let at = spread_over_steps(app, &orders).await;
    let killed_at = Instant::now();
    app.kill(service);
    eprintln!("killed {service}; the sagas were at: {at:?}");
    tokio::time::sleep(down.saturating_sub(killed_at.elapsed())).await;
    app.restart(service).await;
    eprintln!(
        "restarted {service} {:.1?} after the kill",
        killed_at.elapsed()
    );
    all_completed_once(app, token, &orders, before).await;
}

/// The orchestrator dies with ten orders in flight and comes back 3 s later: it resumes every
/// saga from its store, and no order is lost or cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_cancels_no_order() {
    let Some(mut app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    crash_round(&mut app, &token, "saga", Duration::from_secs(3)).await;
}

/// Each participant in turn dies with ten orders in flight and is back `down` after the kill.
async fn kill_each_participant(down: Duration) {
    let Some(mut app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    for participant in PARTICIPANTS {
        crash_round(&mut app, &token, participant, down).await;
    }
}

/// A rolling deploy: each participant in turn is back 3 s after the kill; every order completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_killed_for_3_s_in_turn_cancel_no_order() {
    kill_each_participant(Duration::from_secs(3)).await;
}

/// Each participant in turn is down for 30 s, longer than a step's 10 s deadline: the steps are
/// resent within their budget, the orders wait, and every one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_killed_for_30_s_in_turn_cancel_no_order() {
    kill_each_participant(Duration::from_secs(30)).await;
}

/// A declined order is compensating (its stock release waits for inventory, which is down) when
/// the orchestrator dies; both come back: the order ends cancelled, each compensation ran once,
/// and the stock is exactly where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_mid_compensation_compensates_once() {
    let Some(mut app) = App::start().await else {
        return;
    };
    let token = app.login(USER).await;
    let before = app.stock("prod-2").await;
    // 6 x 399.00 is over the payment limit (2,000.00): declined.
    app.kill("payment");
    let id = app.place_ok(&token, &order("prod-2", 6, "98101")).await;
    let path = format!("/sagas/{id}");
    app.eventually("saga", &path, None, |status, saga| {
        status == 200 && count(saga, "SagaStepSucceeded") == 1
    })
    .await;
    app.kill("inventory");
    app.restart("payment").await;
    app.eventually("saga", &path, None, |status, saga| {
        status == 200 && saga["status"] == "COMPENSATING"
    })
    .await;
    app.kill("saga");
    app.restart("inventory").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.restart("saga").await;

    let settled = app.settled(&token, &id).await;
    assert_eq!(settled["status"], "CANCELLED", "{settled}");
    let saga = app.saga(&id).await;
    assert_eq!(saga["status"], "COMPENSATED", "{saga}");
    assert_eq!(
        saga["compensations"],
        serde_json::json!([
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]),
        "{saga}"
    );
    assert_eq!(count(&saga, "SagaCompensationSucceeded"), 2, "{saga}");
    assert_eq!(app.stock("prod-2").await, before, "released once");
    let (status, payment) = app
        .get("payment", &format!("/payments/{id}"), Some(&token))
        .await;
    assert_eq!(
        (status, payment["status"].as_str()),
        (200, Some("DECLINED")),
        "{payment}"
    );
}
