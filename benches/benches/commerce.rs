//! The commerce app end to end, in one process on in-memory backends, driven over loopback HTTP
//! by a bounded load generator in the same process (2 cores shared by both):
//!
//! 1. **Saturation**: `ORDERS` orders from `CONCURRENCY` concurrent clients, each `POST /orders`
//!    then waiting until the order is COMPLETED in ordering's read model; orders/s. The same
//!    requests against a handler that does nothing (the HTTP floor) in the same run give the ratio.
//! 2. **Latency at a fixed rate**: orders started at `RATE`/s for `LATENCY_SECONDS` (open loop),
//!    p50 / p99 from sending the POST to COMPLETED; the floor's POST round trip at the same rate.
//! 3. **Memory**: resident set growth over `MEMORY_ORDERS` completed orders, per order.
//!
//! Medians of `ROUNDS` rounds. Bounded: every phase has a count and a deadline, and only loopback
//! addresses are used. Completion is awaited on the read model's progress (no polling), through
//! `RunningApp::wait_until_settled`. Logs are off (no subscriber installed).
//!
//! `cargo bench -p eventflow-benches --bench commerce`; results in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use eventflow_commerce_example::{Config, RunningApp};
use serde_json::{Value, json};

const ROUNDS: usize = 5;
const ORDERS: usize = 2_000;
const CONCURRENCY: usize = 64;
const RATE: u64 = 1_000;
const LATENCY_SECONDS: u64 = 3;
const MEMORY_ORDERS: usize = 10_000;
const PHASE_DEADLINE: Duration = Duration::from_secs(120);

fn body() -> Value {
    json!({
        "items": [{ "productId": "prod-3", "quantity": 1 }],
        "shippingAddress": { "street": "1 Main St", "city": "Seattle", "state": "WA", "zip": "98101", "country": "US" }
    })
}

/// Where orders go: the app, or the floor (which answers 202 and does nothing).
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    token: String,
    app: Option<Arc<RunningApp>>,
}

impl Target {
    /// One order: POST, then (for the app) wait until it is COMPLETED. Returns the time taken.
    async fn order(&self) -> Duration {
        let started = Instant::now();
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&body())
            .send()
            .await
            .expect("POST /orders");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.expect("a JSON body");
        if let Some(app) = &self.app {
            let id = accepted["orderId"].as_str().expect("an order id");
            let status = app.wait_until_settled(id, Duration::from_secs(30)).await;
            assert_eq!(status, Some("COMPLETED"), "order {id}");
        }
        started.elapsed()
    }
}

/// `count` orders from `concurrency` clients; orders per second.
async fn saturate(target: &Target, count: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let target = target.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    target.order().await;
                }
            })
        })
        .collect();
    tokio::time::timeout(PHASE_DEADLINE, futures::future::join_all(clients))
        .await
        .expect("the saturation phase finished within its deadline");
    count as f64 / started.elapsed().as_secs_f64()
}

/// Orders started at `rate`/s for `seconds`, open loop; (p50, p99) of their durations.
async fn at_rate(target: &Target, rate: u64, seconds: u64) -> (Duration, Duration) {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut orders = Vec::new();
    for _ in 0..rate * seconds {
        ticker.tick().await;
        let target = target.clone();
        orders.push(tokio::spawn(async move { target.order().await }));
    }
    let mut times: Vec<Duration> =
        tokio::time::timeout(PHASE_DEADLINE, futures::future::join_all(orders))
            .await
            .expect("the latency phase finished within its deadline")
            .into_iter()
            .map(|t| t.unwrap())
            .collect();
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (pick(0.50), pick(0.99))
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn floor() -> SocketAddr {
    let router = Router::new().route(
        "/orders",
        post(|| async {
            (StatusCode::ACCEPTED, axum::Json(json!({ "orderId": "01a2293a-4931-705e-889b-21933dbd9c78", "status": "PENDING" })))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes this bench skips it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "commerce".contains(a.as_str())) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let mut config = Config::ephemeral();
    config.seed_stock = Some(1_000_000_000);
    let rss_before_start = rss_bytes();
    let app = Arc::new(RunningApp::start(&config).await.expect("the app starts"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let login: Value = client
        .post(format!(
            "http://{}/auth/login",
            app.address("identity").unwrap()
        ))
        .json(&json!({ "username": "user@example.com", "password": "password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let app_target = Target {
        client: client.clone(),
        url: format!("http://{}/orders", app.address("ordering").unwrap()),
        token: token.clone(),
        app: Some(Arc::clone(&app)),
    };
    let floor_target = Target {
        client,
        url: format!("http://{}/orders", floor().await),
        token,
        app: None,
    };
    // Warm both: connections, caches, allocator.
    saturate(&app_target, 500, CONCURRENCY).await;
    saturate(&floor_target, 500, CONCURRENCY).await;

    let (mut app_rates, mut floor_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        floor_rates.push(saturate(&floor_target, ORDERS, CONCURRENCY).await);
        app_rates.push(saturate(&app_target, ORDERS, CONCURRENCY).await);
    }
    let (app_rate, floor_rate) = (median(app_rates.clone()), median(floor_rates.clone()));
    println!("saturation ({ORDERS} orders x {ROUNDS} rounds, {CONCURRENCY} clients)");
    println!("  app   completed orders/s: median {app_rate:.0} (rounds {app_rates:.0?})");
    println!("  floor requests/s:         median {floor_rate:.0} (rounds {floor_rates:.0?})");
    println!("  app / floor: {:.3}", app_rate / floor_rate);

    let (mut p50s, mut p99s, mut floor_p50s, mut floor_p99s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (p50, p99) = at_rate(&app_target, RATE, LATENCY_SECONDS).await;
        p50s.push(p50.as_secs_f64() * 1e3);
        p99s.push(p99.as_secs_f64() * 1e3);
        let (p50, p99) = at_rate(&floor_target, RATE, LATENCY_SECONDS).await;
        floor_p50s.push(p50.as_secs_f64() * 1e3);
        floor_p99s.push(p99.as_secs_f64() * 1e3);
    }
    println!("latency at {RATE} orders/s for {LATENCY_SECONDS} s (median of 3 runs, ms)");
    println!(
        "  app   POST -> COMPLETED: p50 {:.2}  p99 {:.2}  (p99 runs {p99s:.2?})",
        median(p50s),
        median(p99s.clone())
    );
    println!(
        "  floor POST round trip:   p50 {:.2}  p99 {:.2}",
        median(floor_p50s),
        median(floor_p99s)
    );

    let before = rss_bytes();
    saturate(&app_target, MEMORY_ORDERS, CONCURRENCY).await;
    let after = rss_bytes();
    println!(
        "memory: resident {:.1} MiB at start (process before the app: {:.1} MiB), +{:.1} MiB over {MEMORY_ORDERS} more orders = {:.1} KiB per completed order",
        before as f64 / 1048576.0,
        rss_before_start as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / MEMORY_ORDERS as f64 / 1024.0
    );
    let orders = app.order_count().await;
    println!(
        "stored events after {orders} orders (context, events, per order, payload bytes per order):"
    );
    for (context, events, bytes) in app.stored_events().await {
        println!(
            "  {context:<13} {events:>8} {:>6.2} {:>8.0}",
            events as f64 / orders as f64,
            bytes as f64 / orders as f64
        );
    }
    drop((app_target, floor_target));
    Arc::into_inner(app).expect("no other owner").stop().await;
}
