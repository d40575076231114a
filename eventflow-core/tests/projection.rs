//! Typed projections: fed from the global feed and from a bus, upcasted, de-duplicated and held in
//! order by the framework; catch-up, resume, rebuild, lag and read-your-writes.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "testkit")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Account, AccountCommand, AccountEvent};
use eventflow_core::outbox::event_to_message;
use eventflow_core::{
    Aggregate, AppendRequest, Applied, CheckpointStore, CommandContext, Delivery, Envelope, Error,
    EventBus, EventStore, EventStoreExt, ExpectedVersion, HandlerError, InMemoryBus,
    InMemoryCheckpointStore, InMemoryEventStore, MessageHandler, Metadata, NewEvent, OutboxRelay,
    Projection, ProjectionRunner, Projector, Repository, StreamId, Subscription, handler_fn,
};

/// Owner and balance per account, and how many events it was handed.
#[derive(Default)]
struct Balances {
    rows: Mutex<BTreeMap<String, (String, i64)>>,
    applied: Mutex<u64>,
    fail_on_amount: Mutex<Option<i64>>,
}

impl Balances {
    fn balance(&self, id: &str) -> Option<i64> {
        self.rows.lock().unwrap().get(id).map(|r| r.1)
    }

    fn snapshot(&self) -> BTreeMap<String, (String, i64)> {
        self.rows.lock().unwrap().clone()
    }
}

impl Projection for Balances {
    type Event = AccountEvent;
    const STREAMS: &'static [&'static str] = &[Account::STREAM_TYPE];

    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(&self, id: &str, event: &Envelope<AccountEvent>) -> eventflow_core::Result<()> {
        let delta = match &event.event {
            AccountEvent::Opened { .. } => 0,
            AccountEvent::Deposited { amount } => *amount,
            AccountEvent::Withdrawn { amount } => -amount,
        };
        if *self.fail_on_amount.lock().unwrap() == Some(delta) {
            return Err(Error::InvalidRequest("read model unavailable".into()));
        }
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(id.to_owned()).or_default();
        if let AccountEvent::Opened { owner } = &event.event {
            row.0.clone_from(owner);
        }
        // No de-duplication here: the framework hands each version over once.
        row.1 += delta;
        *self.applied.lock().unwrap() += 1;
        Ok(())
    }

    async fn reset(&self) -> eventflow_core::Result<()> {
        self.rows.lock().unwrap().clear();
        Ok(())
    }
}

async fn open_and_deposit(repo: &Repository<Account>, id: &str, deposits: i64) {
    repo.execute(
        id,
        &AccountCommand::Open { owner: id.into() },
        CommandContext::new(),
    )
    .await
    .unwrap();
    for amount in 1..=deposits {
        repo.execute(
            id,
            &AccountCommand::Deposit { amount },
            CommandContext::new(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn catches_up_resumes_and_rebuilds() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let balances = Arc::new(Balances::default());
    let runner = ProjectionRunner::new(store.clone(), balances.clone(), checkpoints.clone())
        .with_batch_size(4);

    open_and_deposit(&repo, "a", 5).await;
    open_and_deposit(&repo, "b", 5).await;
    assert_eq!(runner.lag().await.unwrap(), 12);
    assert_eq!(runner.catch_up().await.unwrap(), 12);
    assert_eq!(
        balances.balance("a"),
        Some(15),
        "ids come without the stream prefix"
    );
    assert_eq!(runner.position().await.unwrap(), 12);
    assert_eq!(runner.lag().await.unwrap(), 0);
    assert_eq!(runner.catch_up().await.unwrap(), 0, "nothing new");

    // A failure stops at the last completed batch; the next run resumes there and the events of
    // the failed batch that were applied are skipped by the framework.
    for (id, amount) in [("a", 100), ("b", 7)] {
        repo.execute(
            id,
            &AccountCommand::Deposit { amount },
            CommandContext::new(),
        )
        .await
        .unwrap();
    }
    *balances.fail_on_amount.lock().unwrap() = Some(7);
    assert!(runner.catch_up().await.is_err());
    assert_eq!(runner.position().await.unwrap(), 12);
    assert_eq!(
        balances.balance("a"),
        Some(115),
        "applied before the failure"
    );
    *balances.fail_on_amount.lock().unwrap() = None;
    assert_eq!(
        runner.catch_up().await.unwrap(),
        1,
        "only the failed event is applied"
    );
    assert_eq!(
        balances.balance("a"),
        Some(115),
        "the replayed event was skipped"
    );
    assert_eq!(balances.balance("b"), Some(22));

    *balances.applied.lock().unwrap() = 0;
    let before = balances.snapshot();
    assert_eq!(runner.rebuild().await.unwrap(), 14);
    assert_eq!(*balances.applied.lock().unwrap(), 14);
    assert_eq!(
        balances.snapshot(),
        before,
        "a rebuild builds the same read model"
    );
}

/// Streams of other aggregate types never reach the projection's decoder, even when their
/// payloads would not decode as its events.
#[tokio::test]
async fn other_aggregate_types_are_skipped_before_decoding() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let foreign = NewEvent::new(
        "Shipped",
        1,
        Bytes::from_static(b"[1,2,3]"),
        Metadata::new(),
    );
    store
        .append(AppendRequest::new(
            StreamId::new("shipment-1"),
            ExpectedVersion::NoStream,
            vec![foreign],
        ))
        .await
        .unwrap();
    open_and_deposit(&repo, "a", 2).await;
    let balances = Arc::new(Balances::default());
    let runner = ProjectionRunner::new(store.clone(), balances.clone(), store.checkpoint_store());
    assert_eq!(runner.catch_up().await.unwrap(), 3);
    assert_eq!(balances.balance("a"), Some(3));
    assert_eq!(
        runner.lag().await.unwrap(),
        0,
        "skipped events count as read"
    );
}

/// An old event of schema version 1 is upcasted by the event type's upcasters: a read model built
/// from it equals one built from the current version.
#[tokio::test]
async fn upcasted_events_build_the_same_read_model() {
    let store = Arc::new(InMemoryEventStore::new());
    let v1 = NewEvent::new(
        "AccountOpened",
        1,
        Bytes::from_static(b"{\"Opened\":{\"name\":\"dee\"}}"),
        Metadata::new(),
    );
    let deposit =
        NewEvent::encode(&AccountEvent::Deposited { amount: 5 }, Metadata::new()).unwrap();
    store
        .append(AppendRequest::new(
            StreamId::new("account-dee"),
            ExpectedVersion::NoStream,
            vec![v1, deposit],
        ))
        .await
        .unwrap();
    let old = Arc::new(Balances::default());
    ProjectionRunner::new(store.clone(), old.clone(), store.checkpoint_store())
        .catch_up()
        .await
        .unwrap();

    let current_store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(current_store.clone());
    repo.execute(
        "dee",
        &AccountCommand::Open {
            owner: "dee".into(),
        },
        CommandContext::new(),
    )
    .await
    .unwrap();
    repo.execute(
        "dee",
        &AccountCommand::Deposit { amount: 5 },
        CommandContext::new(),
    )
    .await
    .unwrap();
    let current = Arc::new(Balances::default());
    ProjectionRunner::new(
        current_store.clone(),
        current.clone(),
        current_store.checkpoint_store(),
    )
    .catch_up()
    .await
    .unwrap();

    assert_eq!(old.snapshot(), current.snapshot());
    assert_eq!(old.snapshot()["dee"], ("dee".to_owned(), 5));
}

/// Fed by a bus that delivers every message twice: the read model is the same as fed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_fed_twice_builds_the_same_read_model() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone()).with_outbox(true);
    let bus = Arc::new(InMemoryBus::with_options(
        eventflow_core::memory::InMemoryBusOptions::new().duplicate_deliveries(true),
    ));
    let balances = Arc::new(Balances::default());
    let projector = Arc::new(Projector::new(
        balances.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    ));
    let deliveries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let (projector, deliveries) = (projector.clone(), deliveries.clone());
        handler_fn(move |delivery| {
            let (projector, deliveries) = (projector.clone(), deliveries.clone());
            async move {
                projector.handle(delivery).await?;
                deliveries.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let subscription = bus
        .subscribe(Subscription::new("balances").with_max_in_flight(1), handler)
        .await
        .unwrap();
    open_and_deposit(&repo, "a", 4).await;
    let last = repo
        .execute(
            "a",
            &AccountCommand::Withdraw { amount: 3 },
            CommandContext::new(),
        )
        .await
        .unwrap();
    OutboxRelay::new(store.clone(), bus.clone(), "accounts")
        .relay_pending()
        .await
        .unwrap();
    let stream = last.stream_id.clone();
    assert!(
        projector
            .wait_for(&stream, last.version, Duration::from_secs(10))
            .await
            .unwrap(),
        "the projection reached the command's version"
    );
    let twice = eventflow_core::testkit::wait_until(Duration::from_secs(10), || async {
        deliveries.load(Ordering::SeqCst) == 12
    })
    .await;
    assert!(twice, "every event was delivered twice");
    assert_eq!(balances.balance("a"), Some(7));
    assert_eq!(
        *balances.applied.lock().unwrap(),
        6,
        "each event applied once"
    );
    subscription.unsubscribe().await;
}

/// From a bus without ordering, an event that arrives before its predecessor is refused (and so
/// redelivered) and nothing is applied out of order.
#[tokio::test]
async fn events_are_applied_in_stream_order() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    open_and_deposit(&repo, "a", 2).await;
    let events = store
        .read_stream_to_end(&StreamId::new("account-a"), 1)
        .await
        .unwrap();
    let balances = Arc::new(Balances::default());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let projector = Projector::new(balances.clone(), checkpoints.clone());
    let deliver = |n: usize| {
        let message = event_to_message(&events[n], "accounts").unwrap();
        Delivery::new(message, "balances", 1)
    };
    assert!(
        projector.handle(deliver(1)).await.is_err(),
        "version 2 before 1"
    );
    assert_eq!(*balances.applied.lock().unwrap(), 0);
    match projector.apply(events[2].clone()).await {
        Err(Error::OutOfOrder {
            expected: 1,
            actual: 3,
            ..
        }) => {}
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
    for n in 0..3 {
        projector.handle(deliver(n)).await.unwrap();
    }
    assert_eq!(
        projector.apply(events[1].clone()).await.unwrap(),
        Applied::AlreadyApplied
    );
    assert_eq!(balances.balance("a"), Some(3));
    assert_eq!(
        checkpoints.load("balances", "account-a").await.unwrap(),
        Some(3),
        "progress per stream is kept in the checkpoint store"
    );
    // A new projector on the same checkpoints (a restarted process) does not apply them again.
    let restarted = Projector::new(balances.clone(), checkpoints);
    assert_eq!(
        restarted.apply(events[2].clone()).await.unwrap(),
        Applied::AlreadyApplied
    );
    assert_eq!(*balances.applied.lock().unwrap(), 3);
}

#[tokio::test]
async fn wait_for_times_out_when_the_projection_is_behind() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    open_and_deposit(&repo, "a", 1).await;
    let runner = ProjectionRunner::new(
        store.clone(),
        Arc::new(Balances::default()),
        store.checkpoint_store(),
    );
    let stream = StreamId::new("account-a");
    let reached = runner
        .projector()
        .wait_for(&stream, 2, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(!reached, "nothing ran the projection");
    runner.catch_up().await.unwrap();
    assert!(
        runner
            .projector()
            .wait_for(&stream, 2, Duration::ZERO)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn run_polls_until_shutdown() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let balances = Arc::new(Balances::default());
    let runner = Arc::new(ProjectionRunner::new(
        store.clone(),
        balances.clone(),
        store.checkpoint_store(),
    ));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let task = {
        let (stop, stopped, runner) = (stop.clone(), stopped.clone(), runner.clone());
        tokio::spawn(async move {
            runner.run(Duration::from_millis(5), stop.notified()).await;
            stopped.store(true, Ordering::SeqCst);
        })
    };
    open_and_deposit(&repo, "p", 0).await;
    let executed = repo
        .execute(
            "p",
            &AccountCommand::Deposit { amount: 3 },
            CommandContext::new(),
        )
        .await
        .unwrap();
    let reached = runner
        .projector()
        .wait_for(
            &executed.stream_id,
            executed.version,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(reached, "the running projection picked up new events");
    assert_eq!(balances.balance("p"), Some(3));
    stop.notify_one();
    task.await.unwrap();
    assert!(stopped.load(Ordering::SeqCst));
}

/// The writer applies its own command's events at once; the bus's later delivery of them is a
/// duplicate, and events after a gap are left for the bus to deliver in order.
#[tokio::test]
async fn the_writer_applies_its_own_events_and_the_bus_copy_is_a_duplicate() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    let balances = Arc::new(Balances::default());
    let projector = Projector::new(balances.clone(), Arc::new(InMemoryCheckpointStore::new()));
    let opened = repo
        .execute(
            "a",
            &AccountCommand::Open { owner: "a".into() },
            CommandContext::new(),
        )
        .await
        .unwrap();
    projector.apply_executed(&opened).await.unwrap();
    assert_eq!(balances.balance("a"), Some(0), "visible before any bus");
    projector.apply_executed(&opened).await.unwrap();
    let recorded = store.read_stream(&opened.stream_id, 1, 10).await.unwrap();
    assert_eq!(
        projector.apply(recorded[0].clone()).await.unwrap(),
        Applied::AlreadyApplied
    );
    let deposit = |amount| {
        let repo = &repo;
        async move {
            repo.execute(
                "a",
                &AccountCommand::Deposit { amount },
                CommandContext::new(),
            )
            .await
            .unwrap()
        }
    };
    let _missed = deposit(5).await;
    let after_gap = deposit(7).await;
    projector.apply_executed(&after_gap).await.unwrap();
    assert_eq!(
        balances.balance("a"),
        Some(0),
        "version 3 waits for version 2"
    );
    for event in store.read_stream(&opened.stream_id, 2, 10).await.unwrap() {
        projector.apply(event).await.unwrap();
    }
    assert_eq!(balances.balance("a"), Some(12));
    assert_eq!(*balances.applied.lock().unwrap(), 3, "each version once");
}

/// Two instances of one projector share a checkpoint store, as competing consumers of one queue
/// do: neither applies a version the other applied, even one it has not seen itself.
#[tokio::test]
async fn instances_sharing_checkpoints_apply_each_version_once() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    open_and_deposit(&repo, "a", 2).await;
    let events = store
        .read_stream(&StreamId::for_aggregate("account", "a"), 1, 10)
        .await
        .unwrap();
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let balances = Arc::new(Balances::default());
    let first = Projector::new(balances.clone(), Arc::clone(&checkpoints));
    let second = Projector::new(balances.clone(), checkpoints);
    assert_eq!(
        first.apply(events[0].clone()).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        second.apply(events[1].clone()).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(
        second.apply(events[2].clone()).await.unwrap(),
        Applied::Applied
    );
    for event in &events {
        assert_eq!(
            first.apply(event.clone()).await.unwrap(),
            Applied::AlreadyApplied,
            "version {} was applied by the other instance",
            event.version
        );
    }
    assert_eq!(balances.balance("a"), Some(3));
    assert_eq!(*balances.applied.lock().unwrap(), 3);
}

/// A consumer's own type for the one published event type it reads: it names no aggregate.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Deposit {
    Deposited { amount: i64 },
}

impl eventflow_core::DomainEvent for Deposit {
    fn event_type(&self) -> &'static str {
        "MoneyDeposited"
    }
}

/// Deposits per account, from the account streams' `MoneyDeposited` alone.
#[derive(Default)]
struct DepositTotals(Mutex<BTreeMap<String, i64>>);

impl Projection for DepositTotals {
    type Event = Deposit;
    const STREAMS: &'static [&'static str] = &["account"];
    const EVENT_TYPES: &'static [&'static str] = &["MoneyDeposited"];

    fn name(&self) -> &str {
        "deposit-totals"
    }

    async fn apply(&self, id: &str, event: &Envelope<Deposit>) -> eventflow_core::Result<()> {
        let Deposit::Deposited { amount } = event.event;
        *self.0.lock().unwrap().entry(id.to_owned()).or_default() += amount;
        Ok(())
    }

    async fn reset(&self) -> eventflow_core::Result<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_reads_only_the_event_types_it_names_in_a_type_it_owns() {
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account>::new(store.clone());
    open_and_deposit(&repo, "a", 5).await;
    repo.execute(
        "a",
        &AccountCommand::Withdraw { amount: 3 },
        CommandContext::new(),
    )
    .await
    .unwrap();
    let totals = Arc::new(DepositTotals::default());
    let runner = ProjectionRunner::new(store.clone(), totals.clone(), store.checkpoint_store());
    runner.catch_up().await.unwrap();
    let expected: i64 = (1..=5).sum();
    assert_eq!(totals.0.lock().unwrap().get("a").copied(), Some(expected));

    // Over a bus only the selected types arrive, so versions have gaps: not refused, and a
    // redelivery is still skipped.
    let bus_fed = Arc::new(DepositTotals::default());
    let projector = Projector::new(bus_fed.clone(), Arc::new(InMemoryCheckpointStore::new()));
    let recorded = store
        .read_stream_to_end(&StreamId::new("account-a"), 1)
        .await
        .unwrap();
    let deposits: Vec<_> = recorded
        .into_iter()
        .filter(|r| r.event_type == "MoneyDeposited")
        .collect();
    assert!(
        deposits[0].version > 1,
        "the stream opens with another type"
    );
    for event in deposits.iter().chain(&deposits[..1]) {
        projector.apply(event.clone()).await.unwrap();
    }
    assert_eq!(bus_fed.0.lock().unwrap().get("a").copied(), Some(expected));
    let opened = store
        .read_stream(&StreamId::new("account-a"), 1, 1)
        .await
        .unwrap();
    assert_eq!(
        projector.apply(opened[0].clone()).await.unwrap(),
        Applied::OtherEventType
    );
}
