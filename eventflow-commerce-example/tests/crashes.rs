//! The distributed mode survives processes killed with SIGKILL (no shutdown, nothing flushed):
//! the orchestrator mid-saga, a participant between its append and its relay, and the
//! notification worker holding a message. Eight processes
//! on moto + EventBridge/SQS, as in `e2e_eventbridge.rs`. Needs the `cloud` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{App, USER, history_count as count, order};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the tests run.
const DEPLOYMENT: support::Deployment = support::Deployment::Services("eventbridge");

/// The order and its saga completed, and the saga recorded each of its four steps' success once.
async fn completed_each_step_once(app: &App, token: &str, order_id: &str) {
    let saga = app.saga(order_id).await;
    assert_eq!(saga["status"], "COMPLETED", "{saga}");
    assert_eq!(
        count(&saga, "SagaStepSucceeded"),
        4,
        "each step once: {saga}"
    );
    assert_eq!(app.settled(token, order_id).await["status"], "COMPLETED");
}

/// The orchestrator dies after sending a step's command and before the reply comes back; a new
/// one resumes the saga from its store and its queue: the order completes and every step ran
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_is_replaced_and_no_step_runs_twice() {
    // A step deadline longer than the test, so that nothing here is a timeout.
    let Some(mut app) = App::start_with(&[("SAGA_STEP_TIMEOUT_MS", "120000")]).await else {
        return;
    };
    let token = app.login(USER).await;
    let (available, reserved) = app.stock("prod-1").await;
    // Payment is down: the saga's AuthorizePayment waits in payment's queue.
    app.kill("payment");
    let order_id = app.place_ok(&token, &order("prod-1", 2, "98101")).await;
    app.eventually(
        "saga",
        &format!("/sagas/{order_id}"),
        None,
        |status, saga| status == 200 && count(saga, "SagaStepSent") == 2,
    )
    .await;
    app.kill("saga");
    // Payment handles the command and replies into the orchestrator's queue, with no
    // orchestrator running.
    app.restart("payment").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.restart("saga").await;

    completed_each_step_once(&app, &token, &order_id).await;
    assert_eq!(
        app.stock("prod-1").await,
        (available - 2, reserved + 2),
        "reserved once"
    );
    let (status, payment) = app
        .get("payment", &format!("/payments/{order_id}"), Some(&token))
        .await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["status"], "CAPTURED", "{payment}");
    assert_eq!(
        payment["amountCents"],
        2 * 8_999,
        "authorized once: {payment}"
    );
}

/// The notification worker dies while it holds the order's message (its email half sent): the
/// queue hands the message out again after the visibility timeout, and the restarted worker sends
/// the email once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_holding_a_message_sends_the_email_once_after_restart() {
    let Some(mut app) = App::start_with(&[
        ("EMAIL_LATENCY_MS", "3000"),
        ("NOTIFICATION_VISIBILITY_SECONDS", "5"),
    ])
    .await
    else {
        return;
    };
    let token = app.login(USER).await;
    let order_id = app.place_ok(&token, &order("prod-3", 1, "98101")).await;
    assert_eq!(app.settled(&token, &order_id).await["status"], "COMPLETED");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while app.work_per_instance("notification", "sending email") == [0] {
        assert!(std::time::Instant::now() < deadline, "no email was started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.kill("notification");
    assert_eq!(app.work_per_instance("notification", "\"email sent\""), [0]);
    app.restart("notification").await;

    let path = format!("/notifications?orderId={order_id}");
    let sent = app
        .eventually("notification", &path, Some(&token), |status, body| {
            status == 200
                && body
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n["status"] == "SENT"))
        })
        .await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(
        app.work_per_instance("notification", "\"email sent\"")
            .iter()
            .sum::<usize>(),
        1,
        "the email went out once"
    );
}

/// A loopback forwarder to moto's EventBridge and SQS that refuses `PutEvents` while `blocked`:
/// the service behind it receives and records, but cannot publish. moto answers one request per
/// connection, so the first request's headers say what the connection is for.
async fn publish_blocker(upstream: &str) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let blocked = Arc::new(AtomicBool::new(true));
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let gate = Arc::clone(&blocked);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, gate) = (upstream.clone(), Arc::clone(&gate));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let publishing = String::from_utf8_lossy(&head).contains("AWSEvents.PutEvents");
                if publishing && gate.load(Ordering::SeqCst) {
                    return; // The connection closes unanswered: a network failure.
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (format!("http://{address}"), blocked)
}

/// A participant dies after recording its step and before its relay published the reply; its
/// restart relays the reply from the outbox and the saga finishes, the step applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_before_relaying_its_reply_relays_it_after_restart() {
    let Some(mut app) = App::start_with(&[("SAGA_STEP_TIMEOUT_MS", "120000")]).await else {
        return;
    };
    let (blocker, blocked) = publish_blocker(app.setting("AWS_ENDPOINT_URL").unwrap()).await;
    app.kill("payment");
    app.restart_with("payment", &[("AWS_ENDPOINT_URL", blocker.as_str())])
        .await;
    let token = app.login(USER).await;
    let order_id = app.place_ok(&token, &order("prod-1", 1, "98101")).await;
    // Payment authorized (recorded in its store, the reply in its outbox) but not published.
    let payment = app
        .eventually(
            "payment",
            &format!("/payments/{order_id}"),
            Some(&token),
            |status, _| status == 200,
        )
        .await;
    assert_eq!(payment["status"], "AUTHORIZED", "{payment}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, saga) = app.get("saga", &format!("/sagas/{order_id}"), None).await;
    assert_eq!(
        count(&saga, "SagaStepSucceeded"),
        1,
        "the reply is not out: {saga}"
    );
    app.kill("payment");
    blocked.store(false, Ordering::SeqCst);
    app.restart("payment").await;

    completed_each_step_once(&app, &token, &order_id).await;
    let payment = app
        .eventually(
            "payment",
            &format!("/payments/{order_id}"),
            Some(&token),
            |status, payment| status == 200 && payment["status"] == "CAPTURED",
        )
        .await;
    assert_eq!(payment["amountCents"], 8_999, "authorized once: {payment}");
}
