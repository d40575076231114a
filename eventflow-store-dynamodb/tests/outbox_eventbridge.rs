//! The outbox on DynamoDB relayed to EventBridge (both on moto): what EventBridge cannot carry is
//! refused at append, or, when the store was told to accept it, parked by the relay, and the
//! entries of other streams behind it are published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventflow_core::outbox::message_to_event;
use eventflow_core::testkit::wait_until;
use eventflow_core::{
    AppendRequest, Delivery, Error, EventBus, EventStore, ExpectedVersion, HandlerError, Metadata,
    NewEvent, Outbox, OutboxRelay, ParkedEntries, StreamId, Subscription, handler_fn,
};
use eventflow_store_dynamodb::testkit;

fn event(event_type: &str, payload: Vec<u8>) -> NewEvent {
    NewEvent::new(
        event_type.to_owned(),
        1,
        Bytes::from(payload),
        Metadata::new(),
    )
}

/// A JSON string payload of `bytes` bytes.
fn json_of(bytes: usize) -> Vec<u8> {
    format!("\"{}\"", "x".repeat(bytes - 2)).into_bytes()
}

fn with_outbox(stream: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(StreamId::new(stream), ExpectedVersion::Any, events).with_outbox(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_eventbridge_refuses_are_refused_at_append_or_parked() {
    let Some(strict) = testkit::fresh_store().await else {
        return;
    };
    let Some(bus) = eventflow_bus::testkit::fresh_eventbridge_bus().await else {
        return;
    };
    // By default the store refuses, at append, what EventBridge would refuse.
    let refused = strict
        .append(with_outbox(
            "big-1",
            vec![event("Big", json_of(300 * 1024))],
        ))
        .await;
    assert!(
        matches!(refused, Err(Error::LimitExceeded { .. })),
        "{refused:?}"
    );
    let refused = strict
        .append(with_outbox("raw-1", vec![event("Raw", b"\x00".to_vec())]))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );
    let refused = strict
        .append(with_outbox("untyped-1", vec![event("", b"{}".to_vec())]))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidRequest(_))),
        "{refused:?}"
    );

    // A store told that its bus takes anything: the 300 KB entry reaches the relay.
    let config = testkit::unique_config().with_max_outbox_payload_bytes(None);
    let Some(store) = testkit::fresh_store_with(config).await else {
        return;
    };
    let store = Arc::new(store);
    let received = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let received = Arc::clone(&received);
        handler_fn(move |delivery: Delivery| {
            let received = Arc::clone(&received);
            async move {
                let event = message_to_event(&delivery.message)?;
                let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
                received.push(format!("{}@{}", event.stream_id, event.version));
                Ok::<(), HandlerError>(())
            }
        })
    };
    let subscription = bus
        .subscribe(Subscription::new("outbox-parking"), recorder)
        .await
        .expect("subscribe");
    store
        .append(with_outbox(
            "a-1",
            vec![event("Small", b"{\"n\":1}".to_vec())],
        ))
        .await
        .expect("append a-1");
    store
        .append(with_outbox(
            "b-1",
            vec![
                event("Big", json_of(300 * 1024)),
                event("Small", b"{\"n\":2}".to_vec()),
            ],
        ))
        .await
        .expect("append b-1");
    store
        .append(with_outbox(
            "c-1",
            vec![event("Small", b"{\"n\":3}".to_vec())],
        ))
        .await
        .expect("append c-1");

    let relay = OutboxRelay::new(
        Arc::clone(&store) as Arc<dyn Outbox>,
        Arc::new(bus) as Arc<dyn EventBus>,
        "test",
    );
    assert_eq!(
        relay.relay_pending().await.expect("relay"),
        2,
        "a-1 and c-1 go out"
    );
    let delivered = wait_until(Duration::from_secs(30), || async {
        received.lock().unwrap_or_else(|e| e.into_inner()).len() == 2
    })
    .await;
    let mut got = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    got.sort();
    assert!(delivered, "delivered: {got:?}");
    assert_eq!(got, vec!["a-1@1", "c-1@1"]);
    let parked = store.parked(10).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].event.stream_id.as_str(), parked[0].event.version),
        ("b-1", 1)
    );
    assert!(
        store.pending(10).await.expect("pending").is_empty(),
        "b-1@2 waits"
    );
    assert_eq!(
        relay.relay_pending().await.expect("relay"),
        0,
        "no stall, no retry loop"
    );
    // Redriven onto the same bus, it is refused and parked again; nothing else is affected.
    assert!(
        store
            .redrive(&StreamId::new("b-1"), 1)
            .await
            .expect("redrive")
    );
    assert_eq!(relay.relay_pending().await.expect("relay"), 0);
    assert_eq!(store.parked(10).await.expect("parked").len(), 1);
    subscription.unsubscribe().await;
}
