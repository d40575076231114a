//! What an attacker tries first, against the app binary with every service in one process, over
//! real sockets: login floods, slow and idle clients, open admin endpoints, loose tokens, and the
//! specification's own calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{App, JWT_SECRET, USER};

/// Where the app runs.
const DEPLOYMENT: support::Deployment = support::Deployment::OneProcess;

async fn app() -> App {
    App::start()
        .await
        .expect("the one-process app needs no emulator")
}

#[tokio::test]
async fn the_specifications_order_call_works_verbatim() {
    let app = app().await;
    let token = app.login(USER).await;
    // The EventFlowCommerce specification's body, as it is written there: no `country`.
    let body = r#"{"items":[{"productId":"prod-1","quantity":2}],"customerId":"customer-1",
       "shippingAddress":{"street":"123 Main St","city":"Seattle","state":"WA","zip":"98101"}}"#;
    let response = app
        .http
        .post(app.url("ordering", "/orders"))
        .header("content-type", "application/json")
        .header("x-correlation-id", "5f0c6f52-6a43-4d0e-9d55-3c8e1f0b7a11")
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let order_id = accepted["orderId"].as_str().unwrap();
    let order = app.settled(&token, order_id).await;
    assert_eq!(order["status"], "COMPLETED", "{order}");
}

#[tokio::test]
async fn sagas_and_dead_letters_are_for_operators_and_a_customer_sees_only_their_own() {
    let app = app().await;
    let customer = app.login(USER).await;
    let other = app.login("other@example.com").await;
    let operator = app.operator_token().await.to_owned();
    let mine = app
        .place_ok(&customer, &support::order("prod-1", 1, "98101"))
        .await;
    app.settled(&customer, &mine).await;
    let path = format!("/sagas/{mine}");

    assert_eq!(app.get("saga", &path, Some(&customer)).await.0, 200);
    assert_eq!(app.get("saga", &path, Some(&operator)).await.0, 200);
    let (status, body) = app.get("saga", &path, Some(&other)).await;
    assert_eq!(
        status, 404,
        "another customer's saga is not theirs to see: {body}"
    );
    let anonymous = app.http.get(app.url("saga", &path)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    assert_eq!(app.get("saga", "/sagas", Some(&customer)).await.0, 403);
    assert_eq!(
        app.get(
            "notification",
            "/notifications/dead-letters",
            Some(&customer)
        )
        .await
        .0,
        403
    );
    let dead = app
        .http
        .get(app.url("notification", "/notifications/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), 401);
    assert_eq!(
        app.get(
            "notification",
            "/notifications/dead-letters",
            Some(&operator)
        )
        .await
        .0,
        200
    );

    // Pages: a second order, one saga a page, the cursor leads to the next.
    let second = app
        .place_ok(&other, &support::order("prod-2", 1, "98101"))
        .await;
    app.settled(&other, &second).await;
    let (status, first_page) = app.get("saga", "/sagas?limit=1", Some(&operator)).await;
    assert_eq!(status, 200, "{first_page}");
    assert_eq!(first_page["sagas"].as_array().unwrap().len(), 1);
    let cursor = first_page["nextCursor"].as_str().expect("a next page");
    let (_, second_page) = app
        .get(
            "saga",
            &format!("/sagas?limit=1&cursor={cursor}"),
            Some(&operator),
        )
        .await;
    assert_eq!(second_page["sagas"].as_array().unwrap().len(), 1);
    assert_ne!(first_page["sagas"][0], second_page["sagas"][0]);
    assert_eq!(
        app.get("saga", "/sagas?limit=0", Some(&operator)).await.0,
        422
    );
    assert_eq!(
        app.get("saga", "/sagas?cursor=nobody", Some(&operator))
            .await
            .0,
        422
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the app's own secret: only the claims or header are wrong.
fn signed(claims: &Value, crit: bool) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let mut header = Header::new(Algorithm::HS256);
    if crit {
        header.crit = Some(vec!["exp".to_owned()]);
    }
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn loose_tokens_are_refused_with_one_generic_401() {
    let app = app().await;
    let t = now();
    let claims = |sub: &str, iat: u64, exp: u64| json!({"sub": sub, "iss": "eventflow-commerce", "iat": iat, "exp": exp});
    let mut future_nbf = claims("customer-1", t, t + 60);
    future_nbf["nbf"] = (t + 3600).into();
    let mut padded = claims("customer-1", t, t + 60);
    padded["pad"] = "x".repeat(100 * 1024).into();
    let cases = [
        ("nbf in the future", signed(&future_nbf, false)),
        (
            "iat 100 years ahead",
            signed(
                &claims("customer-1", t + 3_153_600_000, t + 3_153_600_060),
                false,
            ),
        ),
        (
            "a year's lifetime",
            signed(&claims("customer-1", t, t + 365 * 86_400), false),
        ),
        (
            "a crit header",
            signed(&claims("customer-1", t, t + 60), true),
        ),
        ("an empty subject", signed(&claims("", t, t + 60), false)),
        ("100 KB", signed(&padded, false)),
        (
            "no exp",
            signed(
                &json!({"sub": "customer-1", "iss": "eventflow-commerce", "iat": t}),
                false,
            ),
        ),
        (
            "another issuer",
            signed(
                &json!({"sub": "customer-1", "iss": "elsewhere", "iat": t, "exp": t + 60}),
                false,
            ),
        ),
    ];
    let mut bodies = Vec::new();
    for (case, token) in &cases {
        let response = app
            .http
            .get(app.url("ordering", "/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        // A 100 KB header may be refused by the HTTP layer itself (431) before any check.
        assert!(status == 401 || status == 431, "{case}: {status}");
        if status == 401 {
            bodies.push(response.text().await.unwrap());
        }
    }
    assert!(bodies.len() >= cases.len() - 1);
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every refusal reads the same: {bodies:?}"
    );
    assert!(!bodies[0].contains("Issuer") && !bodies[0].contains("exp"));
    let good = app.login(USER).await;
    assert_eq!(app.get("ordering", "/orders", Some(&good)).await.0, 200);

    // Signed with the key, for a customer identity never registered: no order.
    let stranger = signed(&claims("customer-404", t, t + 60), false);
    let (status, body) = app
        .place(&stranger, &support::order("prod-1", 1, "98101"))
        .await;
    assert_eq!(status, 403, "{body}");
}

/// A login's status and `Retry-After`.
async fn login(app: &App, username: &str, password: &str) -> (u16, Option<u64>) {
    let response = app
        .http
        .post(app.url("identity", "/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (response.status().as_u16(), retry)
}

#[tokio::test]
async fn logins_are_throttled_per_account_and_the_right_user_gets_back_in() {
    let app = App::start_with(&[("LOGIN_ATTEMPTS_PER_ACCOUNT", "5")])
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(login(&app, USER, "wrong").await);
    }
    assert_eq!(statuses[0], (401, None));
    let (status, retry_after) = statuses[7];
    assert_eq!(status, 429, "{statuses:?}");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{statuses:?}"
    );
    // Another account is not affected.
    assert_eq!(login(&app, "other@example.com", "password").await.0, 200);
    // The wait ends: the right password works again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match login(&app, USER, "password").await {
            (200, _) => break,
            (429, Some(wait)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => panic!("the user is locked out: {other:?}"),
        }
    }
}

/// Whether the server closed `stream` (read returns 0 or fails) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0_u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_and_the_app_keeps_serving() {
    let app = app().await;
    let address = format!("127.0.0.1:{}", app.port_of("ordering"));

    // A body announced at 100 MB is refused at once, before it is read.
    let mut oversized = TcpStream::connect(&address).await.unwrap();
    oversized
        .write_all(b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n{\"items")
        .await
        .unwrap();
    let mut head = [0_u8; 12];
    tokio::time::timeout(Duration::from_secs(5), oversized.read_exact(&mut head))
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let mut slow_headers = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        slow_headers.push(stream);
    }
    let mut slow_body = TcpStream::connect(&address).await.unwrap();
    slow_body
        .write_all(b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    // One header line every 2 s keeps no connection past the header timeout.
    let dripping = tokio::spawn(async move {
        for i in 0..20 {
            for stream in &mut slow_headers {
                if stream
                    .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        false
    });
    // Meanwhile, the app answers.
    assert_eq!(app.get("ordering", "/health", None).await.0, 200);
    for stream in &mut idle {
        assert!(
            closed_within(stream, Duration::from_secs(20)).await,
            "an idle connection stayed open"
        );
    }
    assert!(
        dripping.await.unwrap(),
        "a connection dripping headers stayed open"
    );
    assert!(
        closed_within(&mut slow_body, Duration::from_secs(20)).await,
        "a body that never arrives kept its connection"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(app.get("ordering", "/health", None).await.0, 200);
}

/// The process's resident memory, in MiB (Linux).
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_login_flood_stays_within_memory() {
    // Throttling off, so every one of the logins reaches a password check.
    let app = App::start_with(&[
        ("LOGIN_ATTEMPTS_PER_ACCOUNT", "100000"),
        ("LOGIN_ATTEMPTS_PER_ADDRESS", "100000"),
    ])
    .await
    .unwrap();
    let pid = app.pid(0);
    let before = resident_mib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(resident_mib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..3 {
        let logins = (0..64).map(|i| {
            let app = &app;
            async move {
                login(app, &format!("flood-{round}-{i}@example.com"), "wrong")
                    .await
                    .0
            }
        });
        for status in futures::future::join_all(logins).await {
            *statuses.entry(status).or_default() += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.abort();
    let after = resident_mib(pid);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "login flood: {before} MiB before, {peak} MiB at the peak, {after} MiB after; {statuses:?}"
    );
    assert!(peak < 300, "peak {peak} MiB");
    assert!(
        after < before + 64,
        "{after} MiB after, {before} MiB before"
    );
    // Every login was answered: refused (401) or told to come back (503).
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
}
