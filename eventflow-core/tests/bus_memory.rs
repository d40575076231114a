//! The in-memory bus: the conformance suite, plus behaviour only the in-memory bus offers or that
//! is easier to pin down in memory.
#![cfg(feature = "testkit")]
// A failed unwrap is a failed test, with the error in the message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eventflow_core::bus::{
    Backoff, DeadLetters, Delivery, EventBus, HandlerError, Message, Subscription, handler_fn,
};
use eventflow_core::memory::InMemoryBusOptions;
use eventflow_core::testkit::{Recorder, bus_conformance, wait_until};
use eventflow_core::{Error, InMemoryBus};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn message(n: usize) -> Message {
    Message::new("TestEvent", "tests", json!({ "n": n }))
}

fn quick_retry(max_attempts: u32) -> Backoff {
    Backoff::new(
        max_attempts,
        Duration::from_millis(20),
        Duration::from_millis(100),
    )
}

/// A payload's `n`.
fn n_of(delivery: &Delivery) -> u64 {
    delivery.message.payload["n"].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_bus_passes_the_conformance_suite() {
    let report = bus_conformance("in-memory", || async { InMemoryBus::new() }).await;
    eprintln!("{report}");
    assert!(report.unsupported.is_empty(), "{report}");
    assert_eq!(report.passed.len(), 10, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_bus_with_duplicates_passes_the_conformance_suite() {
    let report = bus_conformance("in-memory, duplicate deliveries", || async {
        InMemoryBus::with_options(InMemoryBusOptions::new().duplicate_deliveries(true))
    })
    .await;
    assert!(report.unsupported.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_deliver_every_message_twice() {
    let bus = InMemoryBus::with_options(InMemoryBusOptions::new().duplicate_deliveries(true));
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("dup"), handler)
        .await
        .unwrap();
    let messages: Vec<Message> = (0..5).map(message).collect();
    bus.publish(messages.clone()).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { deliveries.len() >= 10 }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let deliveries = deliveries.deliveries();
    assert_eq!(deliveries.len(), 10);
    for message in &messages {
        let of_message: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| d.message.id == message.id)
            .collect();
        assert_eq!(of_message.len(), 2, "{}", message.id);
        assert!(of_message.iter().all(|d| d.attempt == 1));
    }
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_each_message_is_delivered_once() {
    let bus = InMemoryBus::new();
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("once"), handler)
        .await
        .unwrap();
    bus.publish((0..5).map(message).collect()).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { deliveries.len() >= 5 }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(deliveries.len(), 5);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_counts_as_an_error_and_ends_in_the_dead_letters() {
    let bus = InMemoryBus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let handler = {
        let calls = Arc::clone(&calls);
        let healthy = Arc::clone(&healthy);
        handler_fn(move |delivery: Delivery| {
            let calls = Arc::clone(&calls);
            let healthy = Arc::clone(&healthy);
            async move {
                if delivery.message.message_type == "Poison" {
                    calls.fetch_add(1, Ordering::SeqCst);
                    panic!("boom on attempt {}", delivery.attempt);
                }
                healthy.store(true, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let handle = bus
        .subscribe(
            Subscription::new("panics").with_retry(quick_retry(2)),
            handler,
        )
        .await
        .unwrap();
    let poison = Message::new("Poison", "tests", json!({}));
    bus.publish(vec![poison.clone()]).await.unwrap();

    assert!(
        wait_until(TIMEOUT, || {
            let bus = bus.clone();
            async move { !bus.dead_letters("panics", 10).await.unwrap().is_empty() }
        })
        .await
    );
    let letters = bus.dead_letters("panics", 10).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let letter = &letters[0];
    assert_eq!(letter.message, poison);
    assert_eq!(letter.subscription, "panics");
    assert_eq!(letter.attempts, 2);
    let last_error = letter.last_error.as_deref().unwrap();
    assert!(last_error.contains("panicked") && last_error.contains("boom on attempt 2"));
    assert!(letter.dead_lettered_at.is_some());

    // The subscription still delivers after the panics.
    bus.publish(vec![message(1)]).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { healthy.load(Ordering::SeqCst) }).await);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_name_used_twice_is_an_error_until_unsubscribed() {
    let bus = InMemoryBus::new();
    let handler = Recorder::default().acking();
    let first = bus
        .subscribe(Subscription::new("twice"), Arc::clone(&handler))
        .await
        .unwrap();
    let second = bus
        .subscribe(Subscription::new("twice"), Arc::clone(&handler))
        .await;
    assert!(
        matches!(second, Err(Error::InvalidRequest(_))),
        "{second:?}"
    );
    let other = bus
        .subscribe(Subscription::new("other"), Arc::clone(&handler))
        .await
        .unwrap();
    first.unsubscribe().await;
    let again = bus
        .subscribe(Subscription::new("twice"), handler)
        .await
        .unwrap();
    again.unsubscribe().await;
    other.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_handlers_run_at_once() {
    let bus = InMemoryBus::new();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (running, most, done) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&done));
        handler_fn(move |delivery: Delivery| {
            let (running, most, done) =
                (Arc::clone(&running), Arc::clone(&most), Arc::clone(&done));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                // Failures and retries must respect the limit too.
                if delivery.attempt == 1 && delivery.message.payload["n"].as_u64() == Some(3) {
                    return Err(HandlerError::msg("retry me"));
                }
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let handle = bus
        .subscribe(
            Subscription::new("limited")
                .with_max_in_flight(2)
                .with_retry(quick_retry(3)),
            handler,
        )
        .await
        .unwrap();
    bus.publish((0..20).map(message).collect()).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { done.load(Ordering::SeqCst) == 20 }).await);
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "unkeyed messages run concurrently, up to 2"
    );
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_refused_and_nothing_of_the_batch_is_published() {
    let bus = InMemoryBus::new();
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("strict"), handler)
        .await
        .unwrap();

    let empty_id = bus.publish(vec![message(0), message(1).with_id("")]).await;
    assert!(
        matches!(empty_id, Err(Error::InvalidRequest(_))),
        "{empty_id:?}"
    );
    let empty_type = bus
        .publish(vec![Message::new("", "tests", json!({}))])
        .await;
    assert!(
        matches!(empty_type, Err(Error::InvalidRequest(_))),
        "{empty_type:?}"
    );
    let empty_name = bus
        .subscribe(Subscription::new(""), Recorder::default().acking())
        .await;
    assert!(matches!(empty_name, Err(Error::InvalidRequest(_))));

    bus.publish(vec![message(2)]).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { !deliveries.is_empty() }).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got: Vec<u64> = deliveries.deliveries().iter().map(n_of).collect();
    assert_eq!(got, [2]);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_before_subscribing_are_not_delivered() {
    let bus = InMemoryBus::new();
    bus.publish(vec![message(0)]).await.unwrap();
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("late"), handler)
        .await
        .unwrap();
    bus.publish(vec![message(1)]).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { !deliveries.is_empty() }).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deliveries = deliveries.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].message.payload["n"], 1);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_wait_for_the_backoff() {
    let bus = InMemoryBus::new();
    let recorder = Recorder::default();
    let retry = Backoff::new(5, Duration::from_millis(100), Duration::from_secs(1));
    let handle = bus
        .subscribe(
            Subscription::new("backoff").with_retry(retry),
            recorder.handler(|delivery, _| delivery.attempt >= 3),
        )
        .await
        .unwrap();
    bus.publish(vec![message(0)]).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { recorder.len() >= 3 }).await);
    let times: Vec<_> = recorder.records().iter().map(|r| r.at).collect();
    assert!(times[1] - times[0] >= Duration::from_millis(100));
    assert!(times[2] - times[1] >= Duration::from_millis(200));
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_waits_while_its_previous_message_is_retried() {
    let bus = InMemoryBus::new();
    let recorder = Recorder::default();
    let handle = bus
        .subscribe(
            Subscription::new("keyed").with_retry(quick_retry(5)),
            recorder.handler(|delivery, _| n_of(delivery) != 0 || delivery.attempt >= 3),
        )
        .await
        .unwrap();
    bus.publish(vec![
        message(0).with_ordering_key("k"),
        message(1).with_ordering_key("k"),
        message(2).with_ordering_key("k"),
    ])
    .await
    .unwrap();
    assert!(wait_until(TIMEOUT, || async { recorder.len() >= 5 }).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let log: Vec<_> = recorder
        .deliveries()
        .iter()
        .map(|d| (n_of(d), d.attempt))
        .collect();
    assert_eq!(log, [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1)]);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_lets_its_key_go_on() {
    let bus = InMemoryBus::new();
    let recorder = Recorder::default();
    let handle = bus
        .subscribe(
            Subscription::new("keyed-dlq").with_retry(quick_retry(2)),
            recorder.handler(|delivery, _| n_of(delivery) != 0),
        )
        .await
        .unwrap();
    bus.publish(vec![
        message(0).with_ordering_key("k"),
        message(1).with_ordering_key("k"),
    ])
    .await
    .unwrap();
    assert!(wait_until(TIMEOUT, || async { recorder.len() >= 3 }).await);
    let log: Vec<_> = recorder.deliveries().iter().map(n_of).collect();
    assert_eq!(log, [0, 0, 1]);
    assert_eq!(bus.dead_letters("keyed-dlq", 10).await.unwrap().len(), 1);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_oldest_first_and_limited() {
    let bus = InMemoryBus::new();
    let handler = Recorder::default().handler(|_, _| false);
    let handle = bus
        .subscribe(
            Subscription::new("dlq-order")
                .with_retry(quick_retry(1))
                .with_max_in_flight(1),
            handler,
        )
        .await
        .unwrap();
    let messages: Vec<Message> = (0..3).map(|n| message(n).with_ordering_key("k")).collect();
    bus.publish(messages.clone()).await.unwrap();
    assert!(
        wait_until(TIMEOUT, || {
            let bus = bus.clone();
            async move { bus.dead_letters("dlq-order", 10).await.unwrap().len() == 3 }
        })
        .await
    );
    let letters = bus.dead_letters("dlq-order", 10).await.unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.message.id.as_str()).collect();
    let expected: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, expected);
    assert_eq!(bus.dead_letters("dlq-order", 2).await.unwrap().len(), 2);
    assert!(bus.dead_letters("unknown", 10).await.unwrap().is_empty());
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_needs_an_active_subscription_and_keeps_the_dead_letters_otherwise() {
    let bus = InMemoryBus::new();
    let handler = Recorder::default().handler(|_, _| false);
    let handle = bus
        .subscribe(
            Subscription::new("gone").with_retry(quick_retry(1)),
            handler,
        )
        .await
        .unwrap();
    bus.publish(vec![message(0)]).await.unwrap();
    assert!(
        wait_until(TIMEOUT, || {
            let bus = bus.clone();
            async move { !bus.dead_letters("gone", 10).await.unwrap().is_empty() }
        })
        .await
    );
    handle.unsubscribe().await;

    let redrive = bus.redrive("gone").await;
    assert!(
        matches!(redrive, Err(Error::InvalidRequest(_))),
        "{redrive:?}"
    );
    assert_eq!(bus.dead_letters("gone", 10).await.unwrap().len(), 1);

    // A new subscription of the same name takes them.
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("gone"), handler)
        .await
        .unwrap();
    assert_eq!(bus.redrive("gone").await.unwrap(), 1);
    assert!(wait_until(TIMEOUT, || async { deliveries.len() == 1 }).await);
    assert_eq!(deliveries.deliveries()[0].attempt, 1);
    assert!(bus.dead_letters("gone", 10).await.unwrap().is_empty());
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_waits_for_deliveries_in_flight_and_drops_the_rest() {
    let bus = InMemoryBus::new();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
        handler_fn(move |_: Delivery| {
            let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let handle = bus
        .subscribe(Subscription::new("slow").with_max_in_flight(1), handler)
        .await
        .unwrap();
    bus.publish((0..5).map(message).collect()).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { started.load(Ordering::SeqCst) == 1 }).await);
    handle.unsubscribe().await;
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the handler in flight finished"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "the queued messages were dropped"
    );

    // Publishing with no subscription is fine and goes nowhere.
    bus.publish(vec![message(9)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_interrupts_a_backoff() {
    let bus = InMemoryBus::new();
    let handler = Recorder::default().handler(|_, _| false);
    let retry = Backoff::new(5, Duration::from_secs(60), Duration::from_secs(60));
    let handle = bus
        .subscribe(Subscription::new("waiting").with_retry(retry), handler)
        .await
        .unwrap();
    bus.publish(vec![message(0)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), handle.unsubscribe())
        .await
        .expect("unsubscribe does not wait for a backoff");
    assert!(bus.dead_letters("waiting", 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_fan_out_route_by_type_and_source() {
    use eventflow_core::bus::Filter;
    let bus = InMemoryBus::new();
    let both = Recorder::default();
    let both_handler = both.acking();
    let typed = Recorder::default();
    let typed_handler = typed.acking();
    let h1 = bus
        .subscribe(
            Subscription::new("both").with_filter(Filter::all().message_type("A").source("s1")),
            both_handler,
        )
        .await
        .unwrap();
    let h2 = bus
        .subscribe(
            Subscription::new("typed").with_filter(Filter::all().message_type("A")),
            typed_handler,
        )
        .await
        .unwrap();
    bus.publish(vec![
        Message::new("A", "s1", json!(1)),
        Message::new("A", "s2", json!(2)),
        Message::new("B", "s1", json!(3)),
    ])
    .await
    .unwrap();
    assert!(wait_until(TIMEOUT, || async { !both.is_empty() && typed.len() >= 2 }).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let payloads = |d: &Recorder| {
        let mut p: Vec<i64> = d
            .deliveries()
            .iter()
            .filter_map(|d| d.message.payload.as_i64())
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(payloads(&both), [1]);
    assert_eq!(payloads(&typed), [1, 2]);
    h1.unsubscribe().await;
    h2.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_the_bus_and_debug_names_subscriptions() {
    let bus = InMemoryBus::new();
    let clone = bus.clone();
    let deliveries = Recorder::default();
    let handler = deliveries.acking();
    let handle = bus
        .subscribe(Subscription::new("shared"), handler)
        .await
        .unwrap();
    clone.publish(vec![message(0)]).await.unwrap();
    assert!(wait_until(TIMEOUT, || async { deliveries.len() == 1 }).await);
    assert!(format!("{clone:?}").contains("shared"));
    assert!(bus.capabilities().ordering_per_key && bus.capabilities().dead_letters);
    handle.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idle_returns_once_every_delivery_and_every_follow_up_is_settled() {
    let bus = InMemoryBus::new();
    let follow_ups = Recorder::default();
    let forwarding = bus.clone();
    let first = bus
        .subscribe(
            Subscription::new("first")
                .with_filter(eventflow_core::Filter::all().message_type("TestEvent")),
            handler_fn(move |delivery: Delivery| {
                let bus = forwarding.clone();
                async move {
                    // Slow enough that a poll-free read right after publishing would miss it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let next = Message::new("FollowUp", "tests", delivery.message.payload.clone());
                    bus.publish(vec![next]).await.map_err(HandlerError::from)
                }
            }),
        )
        .await
        .unwrap();
    let second = bus
        .subscribe(
            Subscription::new("second")
                .with_filter(eventflow_core::Filter::all().message_type("FollowUp")),
            follow_ups.acking(),
        )
        .await
        .unwrap();
    bus.publish((0..10).map(message).collect()).await.unwrap();
    bus.wait_idle().await;
    assert_eq!(
        follow_ups.len(),
        10,
        "every follow-up handled when wait_idle returns"
    );
    first.unsubscribe().await;
    second.unsubscribe().await;
}
