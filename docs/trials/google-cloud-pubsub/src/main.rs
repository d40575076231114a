//! Hands-on probe of Google's official `google-cloud-pubsub` 1.7 against the local emulator.
//!
//! Usage: EMU=127.0.0.1:PORT cargo run -- [publish|ordering|nack|lease|shutdown|attempts|all]
//! Each test creates its own topic/subscription (names suffixed with a run id).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, Message};
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};
use tokio::sync::mpsc;

const P: &str = "trial";
type R<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

static START: OnceLock<Instant> = OnceLock::new();
fn t() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
macro_rules! log { ($($a:tt)*) => { println!("[{:7.3}s] {}", t(), format!($($a)*)) } }

fn emu() -> String {
    std::env::var("EMU")
        .or_else(|_| std::env::var("PUBSUB_EMULATOR_HOST"))
        .expect("set EMU=host:port")
}
fn endpoint() -> String {
    format!("http://{}", emu())
}
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{}", std::process::id()))
}
fn topic(n: &str) -> String {
    format!("projects/{P}/topics/{n}-{}", run_id())
}
fn sub(n: &str) -> String {
    format!("projects/{P}/subscriptions/{n}-{}", run_id())
}

/// Creates topic + subscription with the crate's admin clients.
async fn setup(name: &str, ordering: bool, dlq: bool) -> R<(String, String)> {
    let ta = TopicAdmin::builder()
        .with_endpoint(endpoint())
        .with_credentials(Anonymous::new().build())
        .build()
        .await?;
    let sa = SubscriptionAdmin::builder()
        .with_endpoint(endpoint())
        .with_credentials(Anonymous::new().build())
        .build()
        .await?;
    let (tp, sp) = (topic(name), sub(name));
    ta.create_topic().set_name(&tp).send().await?;
    let mut req = sa
        .create_subscription()
        .set_name(&sp)
        .set_topic(&tp)
        .set_ack_deadline_seconds(10)
        .set_enable_message_ordering(ordering);
    if dlq {
        let dead = topic(&format!("{name}-dead"));
        ta.create_topic().set_name(&dead).send().await?;
        req = req.set_dead_letter_policy(
            DeadLetterPolicy::new()
                .set_dead_letter_topic(dead)
                .set_max_delivery_attempts(5),
        );
    }
    let s = req.send().await?;
    log!(
        "setup: {} (ordering={}, ackDeadline={}, dlq={:?})",
        s.name,
        s.enable_message_ordering,
        s.ack_deadline_seconds,
        s.dead_letter_policy.map(|d| d.max_delivery_attempts)
    );
    Ok((tp, sp))
}

async fn publisher(tp: &str, zero_delay: bool) -> R<Publisher> {
    let mut b = Publisher::builder(tp.to_string())
        .with_endpoint(endpoint())
        .with_credentials(Anonymous::new().build());
    if zero_delay {
        b = b.set_delay_threshold(Duration::ZERO);
    }
    Ok(b.build().await?)
}

async fn subscriber() -> R<Subscriber> {
    Ok(Subscriber::builder()
        .with_endpoint(endpoint())
        .with_credentials(Anonymous::new().build())
        .build()
        .await?)
}

fn msg(data: &str, key: &str) -> Message {
    Message::new()
        .set_data(data.to_string())
        .set_attributes([("eventflow_type", "probe.v1"), ("payload", data)])
        .set_ordering_key(key)
}

struct Rx {
    at: f64,
    data: String,
    key: String,
    attempt: Option<i32>,
    attrs: HashMap<String, String>,
    h: Handler,
}

/// Drives `stream.next()` in a task and forwards every delivery.
fn reader(mut stream: MessageStream, tag: &'static str) -> (mpsc::UnboundedReceiver<Rx>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let j = tokio::spawn(async move {
        while let Some(r) = stream.next().await {
            match r {
                Ok((m, h)) => {
                    let rx = Rx {
                        at: t(),
                        data: String::from_utf8_lossy(&m.data).into_owned(),
                        key: m.ordering_key.clone(),
                        attempt: h.delivery_attempt(),
                        attrs: m.attributes.clone(),
                        h,
                    };
                    if tx.send(rx).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    log!("{tag}: stream error: {e}");
                }
            }
        }
        log!("{tag}: stream.next() returned None (stream ended)");
    });
    (rx, j)
}

async fn recv_for(rx: &mut mpsc::UnboundedReceiver<Rx>, d: Duration) -> Option<Rx> {
    tokio::time::timeout(d, rx.recv()).await.ok().flatten()
}

/// REST pull (a competing "other subscriber"), does not ack. Returns payloads.
fn rest_pull(sp: &str) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"maxMessages":100,"returnImmediately":true}"#,
            &format!("{}/v1/{sp}:pull", endpoint()),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    // crude: count "messageId" occurrences and extract attribute payloads
    body.split("\"payload\": \"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect()
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} min={:.2}ms p50={:.2}ms p95={:.2}ms max={:.2}ms",
        v.len(),
        p(0.0),
        p(0.5),
        p(0.95),
        p(1.0)
    )
}

// ---------------------------------------------------------------- 1. publish
async fn t_publish() -> R {
    log!("=== 1. publish: attributes, ordering key, latency");
    let (tp, sp) = setup("pub", true, false).await?;
    for zero in [true, false] {
        let p = publisher(&tp, zero).await?;
        let key = if zero { "k-zero" } else { "k-default" };
        let _ = p.publish(msg("warmup", key)).await?;
        let mut lat = vec![];
        for i in 0..50 {
            let s = Instant::now();
            p.publish(msg(&format!("{key}-{i}"), key)).await?;
            lat.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        log!(
            "publish latency (await each, delay_threshold={}): {}",
            if zero { "0" } else { "default 10ms" },
            stats(lat)
        );
    }
    // concurrency: 200 publishes in flight on one key
    let p = publisher(&tp, true).await?;
    let s = Instant::now();
    let futs: Vec<_> = (0..200).map(|i| p.publish(msg(&format!("burst-{i}"), "k-burst"))).collect();
    for f in futs {
        f.await?;
    }
    log!("200 concurrent publishes on one ordering key: {:.1} ms", s.elapsed().as_secs_f64() * 1000.0);

    let (mut rx, j) = reader(subscriber().await?.subscribe(&sp).build(), "pub-sub");
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut n = 0;
    let mut first = true;
    while let Some(r) = recv_for(&mut rx, Duration::from_secs(3)).await {
        if first {
            log!("first received: data={:?} key={:?} attrs={:?} attempt={:?}", r.data, r.key, r.attrs, r.attempt);
            first = false;
        }
        assert_eq!(r.attrs.get("eventflow_type").map(String::as_str), Some("probe.v1"));
        per_key.entry(r.key.clone()).or_default().push(r.data.clone());
        r.h.ack();
        n += 1;
    }
    log!("received {n} messages (expected 302)");
    for (k, v) in &per_key {
        let nums: Vec<i64> = v.iter().filter_map(|d| d.rsplit('-').next()?.parse().ok()).collect();
        let in_order = nums.windows(2).all(|w| w[0] < w[1]);
        log!("  key {k}: {} msgs, in publish order: {in_order}", v.len());
    }
    j.abort();
    Ok(())
}

// ---------------------------------------------------------------- 2a. ordering
async fn t_ordering() -> R {
    log!("=== 2a. ordering keys");
    let (tp, sp) = setup("ord", true, false).await?;
    let p = publisher(&tp, true).await?;
    for i in 0..5 {
        p.publish(msg(&format!("A{i}"), "A")).await?;
        p.publish(msg(&format!("B{i}"), "B")).await?;
    }
    let (mut rx, j) = reader(subscriber().await?.subscribe(&sp).build(), "ord");
    log!("phase 1: receive for 3 s WITHOUT acking");
    let mut held = vec![];
    let end = Instant::now() + Duration::from_secs(3);
    while let Some(r) = recv_for(&mut rx, end.saturating_duration_since(Instant::now())).await {
        log!("  got {} (key {}) attempt={:?}", r.data, r.key, r.attempt);
        held.push(r);
    }
    log!("phase 1: {} delivered while none acked: {:?}", held.len(), held.iter().map(|r| r.data.as_str()).collect::<Vec<_>>());
    log!("phase 2: ack one every 300 ms, log later arrivals");
    let mut order: Vec<String> = held.iter().map(|r| r.data.clone()).collect();
    let mut queue: std::collections::VecDeque<Rx> = held.into();
    loop {
        if let Some(r) = queue.pop_front() {
            log!("  ack {}", r.data);
            r.h.ack();
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Some(r) = recv_for(&mut rx, deadline.saturating_duration_since(Instant::now())).await {
            log!("  got {} (key {}) attempt={:?}", r.data, r.key, r.attempt);
            order.push(r.data.clone());
            queue.push_back(r);
        }
        if queue.is_empty() {
            break;
        }
    }
    for k in ["A", "B"] {
        let seq: Vec<&str> = order.iter().filter(|d| d.starts_with(k)).map(String::as_str).collect();
        log!("  key {k} delivery order: {seq:?}");
    }

    log!("phase 3: nack in the middle of a key: C0 ack, C1 nack (first time), rest ack");
    for i in 0..4 {
        p.publish(msg(&format!("C{i}"), "C")).await?;
    }
    let mut nacked = false;
    let mut seq = vec![];
    while let Some(r) = recv_for(&mut rx, Duration::from_secs(4)).await {
        seq.push(format!("{}#{:?}", r.data, r.attempt));
        if r.data == "C1" && !nacked {
            nacked = true;
            log!("  got C1 -> nack");
            r.h.nack();
        } else {
            log!("  got {} -> ack", r.data);
            r.h.ack();
        }
    }
    log!("  C delivery sequence: {seq:?}");
    j.abort();
    Ok(())
}

// ---------------------------------------------------------------- 2b. nack
async fn t_nack() -> R {
    log!("=== 2b. nack redelivery + delivery_attempt (no DLQ policy)");
    let (tp, sp) = setup("nack", false, false).await?;
    let p = publisher(&tp, true).await?;
    p.publish(msg("N", "")).await?;
    let (mut rx, j) = reader(subscriber().await?.subscribe(&sp).build(), "nack");
    let mut last_nack = None::<f64>;
    for n in 0..4 {
        let Some(r) = recv_for(&mut rx, Duration::from_secs(30)).await else {
            log!("  no redelivery within 30 s");
            break;
        };
        let gap = last_nack.map(|x| format!("{:.3}s after nack", r.at - x)).unwrap_or_default();
        log!("  delivery #{} of {} attempt={:?} {gap}", n + 1, r.data, r.attempt);
        if n < 3 {
            last_nack = Some(t());
            r.h.nack();
        } else {
            r.h.ack();
        }
    }
    log!("  dropping a Handler without ack/nack (implicit nack):");
    p.publish(msg("D", "")).await?;
    if let Some(r) = recv_for(&mut rx, Duration::from_secs(5)).await {
        let at = t();
        drop(r.h);
        if let Some(r2) = recv_for(&mut rx, Duration::from_secs(30)).await {
            log!("  {} redelivered {:.3}s after handler drop", r2.data, r2.at - at);
            r2.h.ack();
        }
    }
    j.abort();
    Ok(())
}

// ---------------------------------------------------------------- 3. lease
async fn t_lease() -> R {
    log!("=== 3. lease extension: subscription ackDeadline=10s, handler holds 15 s");
    let control = async {
        let (tp, sp) = setup("lctl", false, false).await?;
        publisher(&tp, true).await?.publish(msg("CTL", "")).await?;
        log!("  control: REST pull #1 (no ack): {:?}", rest_pull(&sp));
        tokio::time::sleep(Duration::from_secs(12)).await;
        log!("  control: REST pull #2 at +12 s (expect CTL redelivered => emulator expires 10 s leases): {:?}", rest_pull(&sp));
        R::Ok(())
    };
    let test = async {
        let (tp, sp) = setup("lease", false, false).await?;
        publisher(&tp, true).await?.publish(msg("L", "")).await?;
        let stream = subscriber()
            .await?
            .subscribe(&sp)
            .set_max_lease_extension(Duration::from_secs(10)) // stream ack deadline 10 s
            .build();
        let (mut rx, j) = reader(stream, "lease");
        let r = recv_for(&mut rx, Duration::from_secs(5)).await.expect("message");
        let t0 = r.at;
        let hold: u64 = std::env::var("LEASE_HOLD").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
        log!("  lease: got {} attempt={:?}; holding {hold} s", r.data, r.attempt);
        let watch = async {
            let mut dups = 0;
            let end = Instant::now() + Duration::from_secs(hold);
            while let Some(d) = recv_for(&mut rx, end.saturating_duration_since(Instant::now())).await {
                dups += 1;
                log!("  lease: REDELIVERED on same stream: {} at +{:.1}s", d.data, d.at - t0);
                std::mem::forget(d.h);
            }
            dups
        };
        let probe = async {
            for at in (12..hold).step_by(10) {
                tokio::time::sleep_until((Instant::now() - Duration::from_secs_f64(t() - t0) + Duration::from_secs(at)).into()).await;
                log!("  lease: REST pull at +{at} s by a competing client: {:?}", rest_pull(&sp));
            }
        };
        let (dups, ()) = tokio::join!(watch, probe);
        r.h.ack();
        log!("  lease: acked after {:.1}s, same-stream redeliveries: {dups}", t() - t0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        log!("  lease: REST pull after ack (expect []): {:?}", rest_pull(&sp));
        j.abort();
        R::Ok(())
    };
    let (a, b) = tokio::join!(control, test);
    a?;
    b?;
    Ok(())
}

// ---------------------------------------------------------------- 4. shutdown
async fn t_shutdown_variant(name: &str, how: &str) -> R {
    let (tp, sp) = setup(name, false, false).await?;
    let p = publisher(&tp, true).await?;
    for i in 0..10 {
        p.publish(msg(&format!("M{i}"), "")).await?;
    }
    let c1 = subscriber().await?; // kept alive throughout: only the stream is stopped
    let behavior = if how.starts_with("token-nack") { ShutdownBehavior::NackImmediately } else { ShutdownBehavior::WaitForProcessing };
    let mut s1 = Some(c1.subscribe(&sp).set_shutdown_behavior(behavior).build());
    let (m, h) = s1.as_mut().unwrap().next().await.unwrap()?;
    log!("  S1 got {} -> ack", String::from_utf8_lossy(&m.data));
    h.ack();
    let (m, held) = s1.as_mut().unwrap().next().await.unwrap()?;
    log!("  S1 got {} -> HOLD unacked", String::from_utf8_lossy(&m.data));
    tokio::time::sleep(Duration::from_millis(500)).await; // let the ack flush
    let t_stop = t();
    let token = s1.as_ref().unwrap().shutdown_token();
    let mut held = Some(held);
    match how {
        "drop" => {
            drop(s1.take());
            log!("  S1 MessageStream dropped (WaitForProcessing), handler still held");
        }
        "token-nack" | "token-nack-drop" => {
            let s = Instant::now();
            token.shutdown().await;
            log!("  S1 shutdown_token().shutdown() (NackImmediately) returned after {:.3}s", s.elapsed().as_secs_f64());
            log!("  S1 next() after shutdown: {:?}", s1.as_mut().unwrap().next().await.map(|r| r.map(|(m, _)| m.data)));
            held.take().unwrap().ack(); // must be ignored
            log!("  S1 held handler acked AFTER shutdown (should be ignored => M1 redelivered)");
        }
        "token-wait" => {
            let r = tokio::time::timeout(Duration::from_secs(3), token.shutdown()).await;
            log!("  S1 shutdown() (WaitForProcessing) while handler held: {}", if r.is_err() { "still pending after 3 s" } else { "returned" });
            log!("  S1 next() after shutdown: {:?}", s1.as_mut().unwrap().next().await.map(|r| r.map(|(m, _)| m.data)));
        }
        _ => unreachable!(),
    }
    // publish 5 more after stop: if S1's gRPC stream were still open, some could go to S1
    for i in 0..5 {
        p.publish(msg(&format!("P{i}"), "")).await?;
    }
    if std::env::var("DIAG").is_ok() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        log!("  DIAG: REST pull 1 s after stop (takes them for 10 s): {:?}", rest_pull(&sp));
    }
    if how == "token-nack-drop" {
        drop(s1.take());
        log!("  S1 MessageStream dropped after shutdown");
    }
    let c2 = subscriber().await?;
    let (mut rx, j) = reader(c2.subscribe(&sp).build(), "S2");
    let mut got = vec![];
    let wait: u64 = std::env::var("S2_WAIT").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let end = Instant::now() + Duration::from_secs(wait);
    let mut dropped_held_at = None;
    while Instant::now() < end {
        if held.is_some() && t() - t_stop > 5.0 {
            drop(held.take());
            dropped_held_at = Some(t());
            log!("  S1's held handler dropped now (+5 s)");
            if how == "token-wait" {
                let s = Instant::now();
                token.shutdown().await;
                log!("  S1 shutdown() completed {:.3}s after handler drop", s.elapsed().as_secs_f64());
            }
        }
        if let Some(r) = recv_for(&mut rx, Duration::from_millis(200)).await {
            got.push(format!("{}@+{:.1}s", r.data, r.at - t_stop));
            r.h.ack();
            if got.len() == 14 {
                break;
            }
        }
    }
    log!("  S2 received {} of 14 leftover (M1..M9 + P0..P4), times relative to S1 stop: {got:?}", got.len());
    if let Some(d) = dropped_held_at {
        log!("  (held handler was dropped at +{:.1}s)", d - t_stop);
    }
    j.abort();
    drop(c1);
    Ok(())
}

async fn t_shutdown() -> R {
    if std::env::var("ONLY_B").is_ok() {
        log!("=== 4b'. shutdown_token().shutdown() with NackImmediately, then drop MessageStream");
        t_shutdown_variant("shut-nackdrop", "token-nack-drop").await?;
        return Ok(());
    }
    log!("=== 4a. shutdown by dropping MessageStream (default WaitForProcessing)");
    t_shutdown_variant("shut-drop", "drop").await?;
    log!("=== 4b. shutdown_token().shutdown() with NackImmediately");
    t_shutdown_variant("shut-nack", "token-nack").await?;
    log!("=== 4c. shutdown_token().shutdown() with WaitForProcessing");
    t_shutdown_variant("shut-wait", "token-wait").await?;
    Ok(())
}

// ---------------------------------------------------------------- 5. attempts
async fn t_attempts() -> R {
    log!("=== 5. delivery_attempt with a dead-letter policy (maxDeliveryAttempts=5)");
    let (tp, sp) = match setup("att", false, true).await {
        Ok(x) => x,
        Err(e) => {
            log!("  creating subscription with DLQ policy failed: {e}");
            return Ok(());
        }
    };
    publisher(&tp, true).await?.publish(msg("X", "")).await?;
    let (mut rx, j) = reader(subscriber().await?.subscribe(&sp).build(), "att");
    for n in 0..6 {
        let Some(r) = recv_for(&mut rx, Duration::from_secs(15)).await else {
            log!("  no further delivery within 15 s");
            break;
        };
        log!("  delivery #{} attempt={:?}", n + 1, r.attempt);
        r.h.nack();
    }
    j.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> R {
    t();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    if all || what == "publish" { t_publish().await?; }
    if all || what == "ordering" { t_ordering().await?; }
    if all || what == "nack" { t_nack().await?; }
    if all || what == "lease" { t_lease().await?; }
    if all || what == "shutdown" { t_shutdown().await?; }
    if all || what == "attempts" { t_attempts().await?; }
    log!("done");
    Ok(())
}
