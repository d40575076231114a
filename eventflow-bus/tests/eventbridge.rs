//! EventBridge adapter behaviour beyond the conformance suite, on moto: partial `PutEvents`
//! failures are retried, an oversized event is refused, a poison message ends in the DLQ after the
//! configured attempts.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_eventbridge::config::interceptors::BeforeSerializationInterceptorContextMut;
use aws_sdk_eventbridge::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_eventbridge::error::BoxError;
use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
use eventflow_bus::eventbridge::{EventBridgeBus, EventBridgeConfig};
use eventflow_bus::testkit;
use eventflow_core::bus::{Backoff, DeadLetters, EventBus, Message, Subscription};
use eventflow_core::{Error, testkit::wait_until};
use serde_json::json;
use support::Recorder;

/// Makes moto reject chosen entries: replaces their `Detail` with text that is not JSON, which
/// moto (like EventBridge) answers with a per-entry `MalformedDetail` error in an otherwise
/// successful call. Records the entry count of every call.
#[derive(Debug, Clone, Default)]
struct RejectEntries {
    /// `(call number from 0, entry index)` pairs to corrupt; `usize::MAX` as the call: every call.
    reject: Vec<(usize, usize)>,
    calls: Arc<AtomicUsize>,
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Intercept for RejectEntries {
    fn name(&self) -> &'static str {
        "RejectEntries"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(input) = context.input_mut().downcast_mut::<PutEventsInput>() else {
            return Ok(());
        };
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let entries = input.entries.get_or_insert_with(Vec::new);
        support::lock(&self.sizes).push(entries.len());
        for (reject_call, index) in &self.reject {
            if (*reject_call == call || *reject_call == usize::MAX)
                && let Some(entry) = entries.get_mut(*index)
            {
                entry.detail = Some("this is not JSON".to_owned());
            }
        }
        Ok(())
    }
}

async fn bus_with(interceptor: RejectEntries, config: EventBridgeConfig) -> Option<EventBridgeBus> {
    let endpoint = testkit::moto_endpoint()?;
    let events = aws_sdk_eventbridge::Client::from_conf(
        testkit::eventbridge_config(endpoint)
            .interceptor(interceptor)
            .build(),
    );
    let bus = EventBridgeBus::new(events, testkit::sqs_client(endpoint), config);
    bus.ensure_event_bus().await.expect("event bus");
    Some(bus)
}

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::new("PartialTest", "eventflow.test", json!({ "n": i })))
        .collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_fail_in_a_partially_failed_put_events_are_retried_not_dropped() {
    let interceptor = RejectEntries {
        reject: vec![(0, 3), (0, 7)],
        ..RejectEntries::default()
    };
    let sizes = Arc::clone(&interceptor.sizes);
    let Some(bus) = bus_with(interceptor, testkit::unique_eventbridge_config()).await else {
        return;
    };
    let recorder = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new("partial"), recorder.acking())
        .await
        .expect("subscribe");

    let published = messages(10);
    bus.publish(published.clone())
        .await
        .expect("publish succeeds after the retry");
    assert_eq!(
        *support::lock(&sizes),
        [10, 2],
        "one call with 10 entries, then one with the 2 that failed"
    );
    let ids = ids(&published);
    assert!(
        recorder
            .wait_for_delivered(&ids, Duration::from_secs(30))
            .await,
        "delivered: {:?}",
        recorder.counts()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = recorder.counts();
    assert!(
        ids.iter().all(|id| counts[id] == 1),
        "each exactly once: {counts:?}"
    );
    handle.unsubscribe().await;
    bus.delete_subscription("partial").await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_keeps_failing_fails_the_publish_with_its_error_code() {
    let interceptor = RejectEntries {
        reject: vec![(usize::MAX, 0)],
        ..RejectEntries::default()
    };
    let calls = Arc::clone(&interceptor.calls);
    let config = testkit::unique_eventbridge_config().with_publish_retry(Backoff::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(50),
    ));
    let Some(bus) = bus_with(interceptor, config).await else {
        return;
    };
    let error = bus
        .publish(messages(4))
        .await
        .expect_err("the entry never succeeds");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three attempts, as configured"
    );
    let Error::Backend { source, .. } = &error else {
        panic!("a permanent entry error is Error::Backend, got {error:?}");
    };
    assert!(source.to_string().contains("MalformedDetail"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_is_a_typed_error_and_nothing_is_sent() {
    let interceptor = RejectEntries::default();
    let calls = Arc::clone(&interceptor.calls);
    let Some(bus) = bus_with(interceptor, testkit::unique_eventbridge_config()).await else {
        return;
    };
    let big = Message::new(
        "Big",
        "eventflow.test",
        json!({ "blob": "x".repeat(300 * 1024) }),
    );
    let small = Message::new("Small", "eventflow.test", json!({}));
    let error = bus.publish(vec![small, big]).await.expect_err("too big");
    assert!(
        matches!(error, Error::LimitExceeded { max: 262_144, .. }),
        "{error:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing of the publish was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_type_over_128_characters_is_a_typed_error_and_nothing_is_sent() {
    let interceptor = RejectEntries::default();
    let calls = Arc::clone(&interceptor.calls);
    let Some(bus) = bus_with(interceptor, testkit::unique_eventbridge_config()).await else {
        return;
    };
    let long = Message::new("E".repeat(129), "eventflow.test", json!({}));
    let error = bus.publish(vec![long]).await.expect_err("too long");
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                actual: 129,
                max: 128,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dlq_after_the_configured_attempts() {
    let Some(bus) = testkit::fresh_eventbridge_bus().await else {
        return;
    };
    let recorder = Recorder::default();
    let retry = Backoff::new(2, Duration::from_millis(100), Duration::from_secs(1));
    let handle = bus
        .subscribe(
            Subscription::new("poison").with_retry(retry),
            recorder.handler(|d, _| d.message.message_type != "Poison"),
        )
        .await
        .expect("subscribe");
    let poison = Message::new("Poison", "eventflow.test", json!({}));
    let fine = Message::new("Fine", "eventflow.test", json!({}));
    bus.publish(vec![poison.clone(), fine.clone()])
        .await
        .expect("publish");

    let dead = wait_until(Duration::from_secs(60), || async {
        let letters = bus.dead_letters("poison", 10).await.expect("list");
        letters.iter().any(|l| l.message.id == poison.id)
    })
    .await;
    assert!(
        dead,
        "dead-lettered; deliveries {:?}",
        recorder.attempts_of(&poison.id)
    );
    assert_eq!(
        recorder.attempts_of(&poison.id),
        [1, 2],
        "exactly the configured attempts"
    );
    assert_eq!(recorder.attempts_of(&fine.id), [1]);
    let letters = bus.dead_letters("poison", 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(letters[0].subscription, "poison");
    assert_eq!(letters[0].message, poison, "the message as published");
    handle.unsubscribe().await;
    bus.delete_subscription("poison").await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_durable_across_unsubscribe() {
    let Some(bus) = testkit::fresh_eventbridge_bus().await else {
        return;
    };
    let first = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new("durable"), first.acking())
        .await
        .expect("subscribe");
    handle.unsubscribe().await;
    let while_away = Message::new("WhileAway", "eventflow.test", json!({}));
    bus.publish(vec![while_away.clone()])
        .await
        .expect("publish");
    let second = Recorder::default();
    let handle = bus
        .subscribe(Subscription::new("durable"), second.acking())
        .await
        .expect("subscribe again");
    assert!(
        second
            .wait_for_delivered(
                std::slice::from_ref(&while_away.id),
                Duration::from_secs(30)
            )
            .await,
        "the queue kept the message for the next consumer"
    );
    assert!(first.is_empty());
    handle.unsubscribe().await;
    bus.delete_subscription("durable").await.expect("cleanup");
}
