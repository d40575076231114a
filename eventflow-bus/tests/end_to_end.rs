//! Through `from_lookup` (what `from_env` reads) to every adapter on its emulator: an event relayed
//! from a store arrives in the handler with its correlation id, causation id, `traceparent`, actor
//! and headers (publisher attributes in, handler context out), and a poison message is
//! dead-lettered after exactly the configured attempts.

mod support;

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use eventflow_bus::{Adapter, AnyBus, config, testkit};
use eventflow_core::bus::{Backoff, DeadLetters, EventBus, Message, Subscription};
use eventflow_core::outbox::{event_to_message, message_to_event};
use eventflow_core::testkit::wait_until;
use eventflow_core::{Metadata, NewEvent, RecordedEvent, StreamId};
use serde_json::json;
use support::Recorder;

async fn bus(adapter: Adapter) -> Option<AnyBus> {
    let env = testkit::adapter_settings(adapter)?;
    let bus = config::from_lookup(|name| env.get(name).cloned())
        .await
        .expect("from_lookup builds the bus");
    assert_eq!(bus.adapter(), adapter);
    Some(bus)
}

fn recorded_event() -> RecordedEvent {
    let metadata = Metadata::new()
        .with_correlation_id("corr-8f14e45f")
        .with_causation_id("cmd-42")
        .with_actor("user-7")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_header("tenant", "acme");
    let new = NewEvent::new(
        "OrderPlaced",
        2,
        Bytes::from_static(br#"{"total":42}"#),
        metadata,
    );
    RecordedEvent::from_new(new, StreamId::new("order-1"), 3, Some(17), Utc::now())
}

async fn relayed_event_metadata_arrives_in_the_handler(bus: AnyBus) {
    let recorder = Recorder::default();
    let name = testkit::unique_name("ef-e2e-meta");
    let handle = bus
        .subscribe(Subscription::new(&name), recorder.acking())
        .await
        .expect("subscribe");
    let event = recorded_event();
    let message = event_to_message(&event, "ordering").expect("to message");
    bus.publish(vec![message.clone()]).await.expect("publish");
    assert!(
        recorder
            .wait_for_delivered(std::slice::from_ref(&message.id), Duration::from_secs(30))
            .await
    );
    let delivery = recorder.deliveries().remove(0);
    assert_eq!(delivery.message.correlation_id(), Some("corr-8f14e45f"));
    assert_eq!(
        delivery.message.traceparent(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(delivery.message.ordering_key.as_deref(), Some("order-1"));
    let back = message_to_event(&delivery.message).expect("back to the event");
    assert_eq!(back.metadata, event.metadata, "metadata end to end");
    assert_eq!(back.event_id, event.event_id);
    assert_eq!(
        (back.version, back.position, back.schema_version),
        (3, Some(17), 2)
    );
    handle.unsubscribe().await;
}

async fn poison_dead_lettered_after_exactly_the_configured_attempts(bus: AnyBus) {
    let recorder = Recorder::default();
    let name = testkit::unique_name("ef-e2e-poison");
    let retry = Backoff::new(2, Duration::from_millis(50), Duration::from_millis(200));
    let handle = bus
        .subscribe(
            Subscription::new(&name).with_retry(retry),
            recorder.handler(|d, _| d.message.message_type != "Poison"),
        )
        .await
        .expect("subscribe");
    let poison = Message::new("Poison", "eventflow.test", json!({"n": 1}));
    bus.publish(vec![poison.clone()]).await.expect("publish");
    let dead = wait_until(Duration::from_secs(60), || async {
        bus.dead_letters(&name, 10)
            .await
            .expect("list")
            .iter()
            .any(|l| l.message.id == poison.id)
    })
    .await;
    assert!(
        dead,
        "attempts so far {:?}",
        recorder.attempts_of(&poison.id)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recorder.attempts_of(&poison.id), [1, 2]);
    let letters = bus.dead_letters(&name, 10).await.expect("list");
    assert_eq!(letters[0].attempts, 2);
    handle.unsubscribe().await;
}

macro_rules! on_every_adapter {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn local() {
                    let Some(bus) = bus(Adapter::Local).await else { return };
                    super::$name(bus).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn eventbridge() {
                    let Some(bus) = bus(Adapter::EventBridge).await else { return };
                    super::$name(bus).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pubsub() {
                    let Some(bus) = bus(Adapter::PubSub).await else { return };
                    super::$name(bus).await;
                }
            }
        )*
    };
}

on_every_adapter!(
    relayed_event_metadata_arrives_in_the_handler,
    poison_dead_lettered_after_exactly_the_configured_attempts,
);
