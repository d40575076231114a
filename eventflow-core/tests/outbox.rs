//! The transactional outbox end to end: atomic append → relay → bus → projection, at least once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Account, AccountCommand};
use eventflow_core::bus::{BusCapabilities, Filter, Subscription, handler_fn};
use eventflow_core::outbox::{event_to_message, message_to_event};
use eventflow_core::testkit::wait_until;
use eventflow_core::{
    CommandContext, Delivery, Error, EventBus, EventStore, EventStoreExt, HandlerError,
    InMemoryBus, InMemoryEventStore, Message, MessageHandler, Metadata, Outbox, OutboxRelay,
    Repository, StreamId, SubscriptionHandle,
};

#[tokio::test]
async fn events_round_trip_through_bus_messages() {
    let store = InMemoryEventStore::new();
    let metadata = Metadata::new()
        .with_correlation_id("c-1")
        .with_causation_id("cmd-1")
        .with_actor("ann")
        .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .with_header("tenant", "t1");
    let event =
        eventflow_core::NewEvent::encode(&common::AccountEvent::Deposited { amount: 5 }, metadata)
            .unwrap();
    store
        .append(
            eventflow_core::AppendRequest::new(
                StreamId::new("account-rt"),
                eventflow_core::ExpectedVersion::NoStream,
                vec![event],
            )
            .with_outbox(true),
        )
        .await
        .unwrap();
    let recorded = store.pending(1).await.unwrap().remove(0);
    let message = event_to_message(&recorded, "banking").unwrap();
    assert_eq!(message.id, recorded.event_id.to_string());
    assert_eq!(message.ordering_key.as_deref(), Some("account-rt"));
    assert_eq!(message.correlation_id(), Some("c-1"));
    assert_eq!(message.source, "banking");
    let back = message_to_event(&message).unwrap();
    assert_eq!(back.metadata, recorded.metadata);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&back.payload).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&recorded.payload).unwrap()
    );
    assert_eq!(
        (back.version, back.position, back.event_id),
        (1, Some(1), recorded.event_id)
    );
    assert_eq!(back.recorded_at, recorded.recorded_at);

    let foreign = Message::new("X", "elsewhere", serde_json::json!({}));
    assert!(matches!(
        message_to_event(&foreign),
        Err(Error::InvalidRequest(_))
    ));
}

/// A bus that loses its connection on demand, and records what it accepted.
#[derive(Default)]
struct FlakyBus {
    down: AtomicBool,
    accepted: Mutex<Vec<Message>>,
}

#[async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, messages: Vec<Message>) -> eventflow_core::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::transient("flaky bus", "connection reset"));
        }
        self.accepted.lock().unwrap().extend(messages);
        Ok(())
    }
    async fn subscribe(
        &self,
        _: Subscription,
        _: Arc<dyn MessageHandler>,
    ) -> eventflow_core::Result<SubscriptionHandle> {
        Err(Error::Unsupported {
            backend: "flaky bus",
            operation: "subscribe",
        })
    }
    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::new(false, false)
    }
}

/// An outbox whose `mark_published` fails, as if the relay crashed right after publishing.
struct CrashBeforeMark(Arc<InMemoryEventStore>);

#[async_trait]
impl Outbox for CrashBeforeMark {
    async fn pending(
        &self,
        max: usize,
    ) -> eventflow_core::Result<Vec<eventflow_core::RecordedEvent>> {
        self.0.pending(max).await
    }
    async fn mark_published(
        &self,
        _: &[eventflow_core::RecordedEvent],
    ) -> eventflow_core::Result<()> {
        Err(Error::transient("test", "relay crashed before marking"))
    }
    async fn park(
        &self,
        event: &eventflow_core::RecordedEvent,
        reason: &str,
    ) -> eventflow_core::Result<()> {
        self.0.park(event, reason).await
    }
}

#[tokio::test]
async fn nothing_is_lost_when_the_bus_or_the_relay_fails() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone()).with_outbox(true);
    repo.execute(
        "o",
        &AccountCommand::Open { owner: "oz".into() },
        CommandContext::new(),
    )
    .await
    .unwrap();
    repo.execute(
        "o",
        &AccountCommand::Deposit { amount: 4 },
        CommandContext::new(),
    )
    .await
    .unwrap();

    let bus = Arc::new(FlakyBus::default());
    bus.down.store(true, Ordering::SeqCst);
    let relay = OutboxRelay::new(store.clone(), bus.clone(), "banking");
    assert!(relay.relay_pending().await.is_err());
    assert_eq!(
        store.pending(10).await.unwrap().len(),
        2,
        "entries stay until published"
    );

    // Published, then the relay dies before marking: the entries are published again next time.
    bus.down.store(false, Ordering::SeqCst);
    let crashing = OutboxRelay::new(
        Arc::new(CrashBeforeMark(store.clone())),
        bus.clone(),
        "banking",
    );
    assert!(crashing.relay_pending().await.is_err());
    assert_eq!(store.pending(10).await.unwrap().len(), 2);
    assert_eq!(relay.relay_pending().await.unwrap(), 2);
    assert!(store.pending(10).await.unwrap().is_empty());

    let accepted = bus.accepted.lock().unwrap();
    assert_eq!(
        accepted.len(),
        4,
        "at least once: two publishes of two events"
    );
    let types: Vec<_> = accepted.iter().map(|m| m.message_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "AccountOpened",
            "MoneyDeposited",
            "AccountOpened",
            "MoneyDeposited"
        ]
    );
    assert_eq!(
        accepted[0].id, accepted[2].id,
        "a republished event keeps its id, so consumers deduplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_events_reach_subscribers_in_stream_order_with_their_correlation_id() {
    let store = Arc::new(InMemoryEventStore::new());
    let bus = Arc::new(InMemoryBus::new());
    let repo = Repository::<Account>::new(store.clone()).with_outbox(true);
    // Per stream: (version, correlation id) in delivery order.
    type Seen = Mutex<HashMap<String, Vec<(u64, Option<String>)>>>;
    let seen: Arc<Seen> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        handler_fn(move |delivery: Delivery| {
            let seen = seen.clone();
            async move {
                let event = message_to_event(&delivery.message)?;
                seen.lock()
                    .unwrap()
                    .entry(event.stream_id.to_string())
                    .or_default()
                    .push((event.version, event.metadata.correlation_id.clone()));
                Ok::<(), HandlerError>(())
            }
        })
    };
    bus.subscribe(
        Subscription::new("audit").with_filter(Filter::all().source("banking")),
        recorder,
    )
    .await
    .unwrap();
    for id in ["a", "b", "c"] {
        let ctx = || CommandContext::new().with_correlation_id(format!("req-{id}"));
        repo.execute(id, &AccountCommand::Open { owner: id.into() }, ctx())
            .await
            .unwrap();
        for amount in 1..=10 {
            repo.execute(id, &AccountCommand::Deposit { amount }, ctx())
                .await
                .unwrap();
        }
    }
    let relay = OutboxRelay::new(store.clone(), bus.clone(), "banking").with_batch_size(7);
    assert_eq!(relay.relay_pending().await.unwrap(), 33);
    let all_seen = wait_until(Duration::from_secs(10), || async {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() == 33
    })
    .await;
    assert!(all_seen, "every relayed event was delivered");
    for (stream, deliveries) in seen.lock().unwrap().iter() {
        let versions: Vec<u64> = deliveries.iter().map(|d| d.0).collect();
        assert_eq!(
            versions,
            (1..=11).collect::<Vec<_>>(),
            "{stream}: in stream order"
        );
        let id = stream.trim_start_matches("account-");
        assert!(
            deliveries
                .iter()
                .all(|d| d.1.as_deref() == Some(&format!("req-{id}")))
        );
    }
    let stored = store
        .read_stream_to_end(&StreamId::new("account-a"), 1)
        .await
        .unwrap();
    assert_eq!(stored.len(), 11);
}

fn raw_event(event_type: &str, payload: Vec<u8>) -> eventflow_core::NewEvent {
    eventflow_core::NewEvent::new(
        event_type.to_owned(),
        1,
        bytes::Bytes::from(payload),
        Metadata::new(),
    )
}

fn with_outbox(
    stream: &str,
    events: Vec<eventflow_core::NewEvent>,
) -> eventflow_core::AppendRequest {
    eventflow_core::AppendRequest::new(
        StreamId::new(stream),
        eventflow_core::ExpectedVersion::Any,
        events,
    )
    .with_outbox(true)
}

/// A JSON string payload of `bytes` bytes.
fn json_of(bytes: usize) -> Vec<u8> {
    format!("\"{}\"", "x".repeat(bytes - 2)).into_bytes()
}

/// What no bus could carry is refused when it is appended with an outbox entry, and nothing of
/// the append is written.
#[tokio::test]
async fn entries_no_bus_can_carry_are_refused_at_append() {
    let store = InMemoryEventStore::new();
    let oversized = with_outbox("big-1", vec![raw_event("Big", json_of(300 * 1024))]);
    assert!(matches!(
        store.append(oversized).await,
        Err(Error::LimitExceeded { .. })
    ));
    let untyped = with_outbox("untyped-1", vec![raw_event("", b"{}".to_vec())]);
    assert!(matches!(
        store.append(untyped).await,
        Err(Error::InvalidRequest(_))
    ));
    let not_json = with_outbox("raw-1", vec![raw_event("Raw", b"\x00\x01".to_vec())]);
    assert!(matches!(
        store.append(not_json).await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(store.is_empty());
}

/// An entry the bus refuses for good (here: a store allowed to take it, a bus that does not) is
/// parked; the entries of other streams behind it are published, its own stream waits, and a
/// redrive publishes both in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_bus_refuses_is_parked_and_holds_back_only_its_stream() {
    use eventflow_core::{ParkedEntries, StoreLimits};
    let limits = StoreLimits::dynamodb().with_max_outbox_payload_bytes(None);
    let store = Arc::new(InMemoryEventStore::new().with_limits(limits));
    store
        .append(with_outbox(
            "a-1",
            vec![raw_event("Small", b"{\"n\":1}".to_vec())],
        ))
        .await
        .unwrap();
    store
        .append(with_outbox(
            "b-1",
            vec![
                raw_event("Big", json_of(300 * 1024)),
                raw_event("Small", b"{\"n\":2}".to_vec()),
            ],
        ))
        .await
        .unwrap();
    store
        .append(with_outbox(
            "c-1",
            vec![raw_event("Small", b"{\"n\":3}".to_vec())],
        ))
        .await
        .unwrap();
    let bus = Arc::new(InMemoryBus::new());
    let received = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let received = received.clone();
        handler_fn(move |delivery: Delivery| {
            let received = received.clone();
            async move {
                let event = message_to_event(&delivery.message)?;
                received
                    .lock()
                    .unwrap()
                    .push(format!("{}@{}", event.stream_id, event.version));
                Ok::<(), HandlerError>(())
            }
        })
    };
    let _subscription = bus
        .subscribe(Subscription::new("all").with_max_in_flight(1), recorder)
        .await
        .unwrap();
    let relay = OutboxRelay::new(store.clone(), bus.clone(), "test");
    assert_eq!(
        relay.relay_pending().await.unwrap(),
        2,
        "a-1 and c-1 go out"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            received.lock().unwrap().len() == 2
        })
        .await
    );
    assert_eq!(*received.lock().unwrap(), vec!["a-1@1", "c-1@1"]);
    let parked = store.parked(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].event.stream_id.as_str(), parked[0].event.version),
        ("b-1", 1)
    );
    assert!(parked[0].reason.contains("size"), "{}", parked[0].reason);
    assert!(
        store.pending(10).await.unwrap().is_empty(),
        "b-1's later entry waits behind the parked one"
    );
    assert_eq!(
        relay.relay_pending().await.unwrap(),
        0,
        "later rounds do not stall or retry it"
    );

    // The bus's limit is raised (here: a bus without one); the operator redrives the entry.
    let roomy = Arc::new(InMemoryBus::with_options(
        eventflow_core::InMemoryBusOptions::new().max_message_bytes(None),
    ));
    assert!(store.redrive(&StreamId::new("b-1"), 1).await.unwrap());
    assert!(
        !store.redrive(&StreamId::new("b-1"), 1).await.unwrap(),
        "once"
    );
    let versions: Vec<u64> = store
        .pending(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![1, 2], "in order again");
    assert_eq!(
        OutboxRelay::new(store.clone(), roomy, "test")
            .relay_pending()
            .await
            .unwrap(),
        2
    );
    assert!(store.parked(10).await.unwrap().is_empty());
}
