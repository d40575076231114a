//! Pub/Sub adapter behaviour beyond the conformance suite, on Google's emulator; and what the
//! emulator does not implement, said out loud.

mod support;

use std::time::Duration;

use eventflow_bus::pubsub::PubSubConfig;
use eventflow_bus::testkit;
use eventflow_core::Error;
use eventflow_core::bus::{Backoff, EventBus, Filter, Message, Subscription};
use serde_json::json;
use support::Recorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribed_consumer_gets_what_was_published_meanwhile() {
    let Some(bus) = testkit::fresh_pubsub_bus().await else {
        return;
    };
    let name = testkit::unique_name("ef-resub");
    let first = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new(&name), first.acking())
        .await
        .expect("subscribe");
    let before = Message::new("Before", "eventflow.test", json!({}));
    bus.publish(vec![before.clone()]).await.expect("publish");
    assert!(
        first
            .wait_for_delivered(std::slice::from_ref(&before.id), Duration::from_secs(30))
            .await
    );
    handle.unsubscribe().await;

    // The stopped consumer's stream is closed on the server too: the next one gets everything.
    let meanwhile = Message::new("Meanwhile", "eventflow.test", json!({}));
    bus.publish(vec![meanwhile.clone()]).await.expect("publish");
    let second = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new(&name), second.acking())
        .await
        .expect("subscribe again");
    let after = Message::new("After", "eventflow.test", json!({}));
    bus.publish(vec![after.clone()]).await.expect("publish");
    assert!(
        second
            .wait_for_delivered(
                &[meanwhile.id.clone(), after.id.clone()],
                Duration::from_secs(20)
            )
            .await,
        "got {:?}",
        second.counts()
    );
    assert_eq!(first.len(), 1);
    handle.unsubscribe().await;
    bus.delete_subscription(&name).await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_ack_deadline_keeps_its_message() {
    let config = PubSubConfig::new(testkit::unique_name("ef-lease"))
        .with_ack_deadline(Duration::from_secs(10));
    let Some(bus) = testkit::fresh_pubsub_bus_with(config).await else {
        return;
    };
    let name = testkit::unique_name("ef-lease");
    let recorder = Recorder::default();
    let inner = recorder.acking();
    let handler = eventflow_core::bus::handler_fn(move |d: eventflow_core::Delivery| {
        let inner = std::sync::Arc::clone(&inner);
        async move {
            tokio::time::sleep(Duration::from_secs(14)).await;
            inner.handle(d).await
        }
    });
    let handle = bus
        .subscribe(Subscription::new(&name), handler)
        .await
        .expect("subscribe");
    let slow = Message::new("Slow", "eventflow.test", json!({}));
    bus.publish(vec![slow.clone()]).await.expect("publish");
    assert!(
        recorder
            .wait_for_delivered(std::slice::from_ref(&slow.id), Duration::from_secs(40))
            .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    handle.unsubscribe().await;
    assert_eq!(
        recorder.attempts_of(&slow.id),
        [1],
        "the consumer extended the ack deadline, so Pub/Sub did not redeliver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_a_typed_error() {
    let Some(bus) = testkit::fresh_pubsub_bus().await else {
        return;
    };
    let big = Message::new(
        "Big",
        "eventflow.test",
        json!({ "blob": "x".repeat(10_500_000) }),
    );
    let error = bus.publish(vec![big]).await.expect_err("too big");
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                max: 10_000_000,
                ..
            }
        ),
        "{error:?}"
    );
}

/// The emulator stores a subscription's filter but does not apply it. The adapter filters in the
/// consumer as well, which is what the conformance suite's filter checks exercise on the emulator;
/// on Google Cloud the server filters first. This test says which one it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_filtering_is_reported() {
    let Some(bus) = testkit::fresh_pubsub_bus().await else {
        return;
    };
    let name = testkit::unique_name("ef-filter");
    let subscription = Subscription::new(&name).with_filter(Filter::all().message_type("Wanted"));
    bus.provision_subscription(&subscription)
        .await
        .expect("provision");
    let (_, config) = bus
        .client()
        .subscription(&name)
        .config(None)
        .await
        .expect("read back");
    assert_eq!(config.filter, r#"attributes.eventflow_type = "Wanted""#);
    assert!(config.enable_message_ordering);

    bus.publish(vec![
        Message::new("Unwanted", "eventflow.test", json!({})),
        Message::new("Wanted", "eventflow.test", json!({})),
    ])
    .await
    .expect("publish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pulled = bus
        .client()
        .subscription(&name)
        .pull(10, None)
        .await
        .expect("pull");
    match pulled.len() {
        1 => eprintln!("pubsub emulator: server-side filters applied"),
        2 => eprintln!(
            "pubsub emulator: server-side filters NOT APPLIED by this emulator; the consumer-side \
             filter is what the conformance suite's filter checks verified here (Google Cloud \
             applies the subscription filter on the server)"
        ),
        n => panic!("pulled {n} messages, expected 1 or 2"),
    }
    bus.delete_subscription(&name).await.expect("cleanup");
}

/// A server-side dead-letter policy is provisioned as configured, but its forwarding is not
/// exercised: the emulator (0.8.x) fails with a NullPointerException when it forwards, and then
/// refuses pulls on that subscription. Client-side dead-lettering, which the conformance suite
/// checks, works the same on the emulator and on Google Cloud.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dead_letter_policy_is_provisioned_but_not_exercised_on_the_emulator() {
    let config =
        PubSubConfig::new(testkit::unique_name("ef-dlp")).with_server_dead_letter_policy(true);
    let Some(bus) = testkit::fresh_pubsub_bus_with(config).await else {
        return;
    };
    let name = testkit::unique_name("ef-dlp");
    let subscription = Subscription::new(&name).with_retry(Backoff::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(10),
    ));
    bus.provision_subscription(&subscription)
        .await
        .expect("provision");
    let (_, config) = bus
        .client()
        .subscription(&name)
        .config(None)
        .await
        .expect("read back");
    let policy = config.dead_letter_policy.expect("a dead-letter policy");
    assert_eq!(
        policy.max_delivery_attempts, 5,
        "3 attempts, raised to Pub/Sub's minimum of 5"
    );
    assert!(
        policy
            .dead_letter_topic
            .ends_with(&format!("/topics/{name}.dead-letters"))
    );
    eprintln!(
        "pubsub emulator: server-side dead-letter forwarding NOT CHECKED (the emulator does not \
         support it); client-side dead-lettering is checked by the conformance suite"
    );
    bus.delete_subscription(&name).await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_another_filter_is_refused() {
    let Some(bus) = testkit::fresh_pubsub_bus().await else {
        return;
    };
    let name = testkit::unique_name("ef-refilter");
    bus.provision_subscription(
        &Subscription::new(&name).with_filter(Filter::all().message_type("A")),
    )
    .await
    .expect("provision");
    let error = bus
        .subscribe(
            Subscription::new(&name).with_filter(Filter::all().message_type("B")),
            Recorder::default().acking(),
        )
        .await
        .expect_err("filters are immutable");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    bus.delete_subscription(&name).await.expect("cleanup");
}
