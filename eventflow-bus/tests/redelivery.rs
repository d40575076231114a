//! How long a message waits when the process holding it is killed with SIGKILL, on each cloud
//! adapter: the number a saga's step deadline must exceed (`AnyBus::redelivery`).
//!
//! The test binary runs itself again as the holder process (the ignored test `holder`): it
//! subscribes through `from_env`; its handler acknowledges `Acked` messages and holds any other
//! (announces it and never returns), so the message stays leased (its visibility or ack deadline
//! extended) until the process dies. The tests kill it, subscribe the same subscription in their
//! own process, and measure the time from the kill to the delivery, or check that every ordering
//! key flows again (the Pub/Sub emulator 0.8.20 lost keys for good until eventflow-testkit fixed
//! its gRPC classes).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eventflow_bus::{Adapter, config, testkit};
use eventflow_core::bus::{EventBus, Message, MessageHandler, Subscription, handler_fn};
use serde_json::json;
use support::Recorder;

/// Set in the holder process: the subscription to hold a message of.
const HOLDER: &str = "EVENTFLOW_REDELIVERY_HOLDER";

/// The holder process (run by the tests below, not alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the holder process of the redelivery tests: they run it"]
async fn holder() {
    let subscription = std::env::var(HOLDER).expect("run by the redelivery tests");
    let bus = eventflow_bus::from_env().await.expect("the bus");
    let handler: Arc<dyn MessageHandler> = handler_fn(|delivery| async move {
        if delivery.message.message_type == "Acked" {
            return Ok(());
        }
        println!("HOLDING {}", delivery.message.id);
        std::future::pending::<()>().await;
        Ok(())
    });
    let _handle = bus
        .subscribe(Subscription::new(subscription), handler)
        .await
        .expect("subscribe");
    println!("SUBSCRIBED");
    std::future::pending::<()>().await;
}

/// Starts the holder process on `subscription`; the lines it prints arrive on the receiver.
fn start_holder(
    env: &HashMap<&'static str, String>,
    subscription: &str,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["holder", "--exact", "--ignored", "--nocapture"])
        .envs(env)
        .env(HOLDER, subscription)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the holder starts");
    let stdout = child.stdout.take().expect("piped");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Waits for a line starting with `prefix` from the holder.
fn expect_line(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(_) => panic!("the holder never printed {prefix}"),
        }
    }
}

async fn sigkill_to_redelivery(adapter: Adapter) {
    let Some(env) = testkit::adapter_settings(adapter) else {
        return;
    };
    let bus = config::from_lookup(|name| env.get(name).cloned())
        .await
        .expect("the bus");
    let redelivery = bus.redelivery().expect("a cloud bus redelivers");
    let subscription = testkit::unique_name("ef-held");
    let (mut holder, lines) = start_holder(&env, &subscription);
    expect_line(&lines, "SUBSCRIBED");
    let message = Message::new("Held", "eventflow.test", json!({"n": 1})).with_ordering_key("k-1");
    bus.publish(vec![message.clone()]).await.expect("publish");
    let held = expect_line(&lines, "HOLDING");
    assert_eq!(held, format!("HOLDING {}", message.id));
    // Held past a lease extension, so the measured wait is the deadline, not a first lease.
    tokio::time::sleep(redelivery.after / 2 + Duration::from_secs(1)).await;
    holder.kill().expect("SIGKILL");
    let killed = Instant::now();
    holder.wait().expect("reaped");

    let recorder = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new(&subscription), recorder.acking())
        .await
        .expect("subscribe again");
    let limit = redelivery.after + Duration::from_secs(20);
    assert!(
        recorder
            .wait_for_delivered(std::slice::from_ref(&message.id), limit)
            .await,
        "not redelivered within {limit:?} of the SIGKILL"
    );
    let waited = killed.elapsed();
    eprintln!(
        "{adapter:?}: SIGKILL to redelivery {:.1} s ({}={} s)",
        waited.as_secs_f64(),
        redelivery.setting,
        redelivery.after.as_secs()
    );
    assert!(
        waited <= redelivery.after + Duration::from_secs(15),
        "{waited:?} is far past {}={:?}",
        redelivery.setting,
        redelivery.after
    );
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_sigkill_to_redelivery() {
    sigkill_to_redelivery(Adapter::EventBridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_sigkill_to_redelivery() {
    sigkill_to_redelivery(Adapter::PubSub).await;
}

/// Ten keys, a message on each every 100 ms; the subscriber is killed mid-stream and another
/// takes over 3 s later: every message published after that arrives, on every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_every_ordering_key_flows_again_after_a_subscriber_is_killed() {
    let Some(env) = testkit::adapter_settings(Adapter::PubSub) else {
        return;
    };
    let bus = config::from_lookup(|name| env.get(name).cloned())
        .await
        .expect("the bus");
    let subscription = testkit::unique_name("ef-keys");
    let (mut holder, lines) = start_holder(&env, &subscription);
    expect_line(&lines, "SUBSCRIBED");
    let round = |n: usize| -> Vec<Message> {
        (0..10)
            .map(|key| {
                Message::new("Acked", "eventflow.test", json!({"round": n, "key": key}))
                    .with_ordering_key(format!("key-{key}"))
            })
            .collect()
    };
    for n in 0..10 {
        bus.publish(round(n)).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reaped");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recorder = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new(&subscription), recorder.acking())
        .await
        .expect("subscribe again");
    let mut after = Vec::new();
    for n in 10..20 {
        let messages = round(n);
        after.extend(messages.iter().map(|m| m.id.clone()));
        bus.publish(messages).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = recorder
        .wait_for_delivered(&after, Duration::from_secs(60))
        .await;
    let seen: std::collections::HashSet<String> = recorder
        .deliveries()
        .iter()
        .map(|d| d.message.id.clone())
        .collect();
    let missing: Vec<usize> = (0..after.len())
        .filter(|i| !seen.contains(&after[*i]))
        .map(|i| i % 10)
        .collect();
    assert!(delivered, "keys never delivered again: {missing:?}");
    handle.unsubscribe().await;
}
