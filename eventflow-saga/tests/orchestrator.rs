//! The orchestrator end to end, in process: InMemoryEventStore + InMemoryBus + the four PlaceOrder
//! participants (real aggregates behind the `Participant` wrapper). Every test checks participant
//! state after the saga ends, not only that replies came back.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventflow_core::bus::{Delivery, HandlerError};
use eventflow_core::memory::InMemoryBusOptions;
use eventflow_core::{
    CommandContext, EventBus, GlobalFeed, InMemoryBus, InMemoryEventStore, Message, MessageHandler,
    Metadata, Repository, SubscriptionHandle,
};
use eventflow_saga::participant::IDEMPOTENCY_KEY_HEADER;
use eventflow_saga::{
    Backoff, CompensationTarget, Error, ManualClock, Orchestrator, SagaDefinition, SagaEvent,
    SagaStatus, StartOutcome,
};
use support::*;

const STOCK: i64 = 10;

struct World {
    store: Arc<InMemoryEventStore>,
    bus: Arc<InMemoryBus>,
    shop: ShopStores,
    /// The same four stores, with their global feeds, for assertions.
    shop_feeds: [Arc<InMemoryEventStore>; 4],
    participants: Vec<(eventflow_core::Subscription, Arc<dyn MessageHandler>)>,
    handles: Vec<SubscriptionHandle>,
}

impl World {
    async fn new(bus: InMemoryBus, faults: Arc<dyn ShopFaults>) -> World {
        let bus = Arc::new(bus);
        let shop_feeds: [Arc<InMemoryEventStore>; 4] =
            std::array::from_fn(|_| Arc::new(InMemoryEventStore::new()));
        let [inventory, payments, shipping, ordering] = shop_feeds.clone();
        let shop = ShopStores {
            inventory,
            payments,
            shipping,
            ordering,
        };
        Repository::<Warehouse>::new(Arc::clone(&shop.inventory))
            .execute(
                "main",
                &WarehouseCommand::Restock(vec![Item {
                    sku: "sku-1".into(),
                    quantity: STOCK,
                }]),
                CommandContext::new(),
            )
            .await
            .expect("restock");
        let participants = participants(&shop, &(bus.clone() as Arc<dyn EventBus>), &faults);
        World {
            store: Arc::new(InMemoryEventStore::new()),
            bus,
            shop,
            shop_feeds,
            participants,
            handles: Vec::new(),
        }
    }

    /// A world whose participants all run, with an orchestrator of [`definition`] subscribed: the
    /// start of most tests.
    async fn running(
        bus: InMemoryBus,
        faults: Arc<dyn ShopFaults>,
    ) -> (World, Orchestrator<PlaceOrder>, SubscriptionHandle) {
        let mut world = World::new(bus, faults).await;
        world.subscribe_participants(&[]).await;
        let orchestrator = world.orchestrator(definition());
        let subscription = orchestrator.subscribe().await.expect("subscribe");
        (world, orchestrator, subscription)
    }

    /// Subscribes the participants named (all when empty).
    async fn subscribe_participants(&mut self, only: &[&str]) {
        for (subscription, handler) in &self.participants {
            if only.is_empty() || only.iter().any(|n| subscription.name.ends_with(n)) {
                let handle = self
                    .bus
                    .subscribe(subscription.clone(), Arc::clone(handler))
                    .await
                    .expect("subscribe participant");
                self.handles.push(handle);
            }
        }
    }

    fn handler(&self, name: &str) -> Arc<dyn MessageHandler> {
        self.participants
            .iter()
            .find(|(s, _)| s.name.ends_with(name))
            .map(|(_, h)| Arc::clone(h))
            .expect("participant")
    }

    fn orchestrator(&self, definition: SagaDefinition) -> Orchestrator<PlaceOrder> {
        Orchestrator::builder(definition, self.store.clone(), self.bus.clone())
            .build()
            .expect("orchestrator")
    }

    fn orchestrator_at(
        &self,
        definition: SagaDefinition,
        clock: &ManualClock,
    ) -> Orchestrator<PlaceOrder> {
        Orchestrator::builder(definition, self.store.clone(), self.bus.clone())
            .clock(clock.clone())
            .build()
            .expect("orchestrator")
    }

    async fn stock(&self) -> i64 {
        load::<Warehouse>(&self.shop.inventory, "main")
            .await
            .stock
            .get("sku-1")
            .copied()
            .unwrap_or(0)
    }

    /// Every participant event, grouped by the idempotency key it was recorded under.
    async fn effects_by_key(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for store in &self.shop_feeds {
            for event in store.read_all(1, usize::MAX).await.expect("read_all") {
                if let Some(key) = event.metadata.headers.get(IDEMPOTENCY_KEY_HEADER) {
                    out.entry(key.clone())
                        .or_default()
                        .push(event.event_type.to_string());
                }
            }
        }
        out
    }
}

fn definition() -> SagaDefinition {
    place_order(
        Duration::from_secs(30),
        Backoff::new(5, Duration::from_millis(10), Duration::from_millis(100)),
    )
}

async fn finished(orchestrator: &Orchestrator<PlaceOrder>, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), orchestrator.wait_finished(n))
        .await
        .unwrap_or_else(|_| panic!("sagas did not finish: {:?}", orchestrator.stats()));
}

fn compensations_done(state: &eventflow_saga::SagaState) -> Vec<String> {
    state
        .compensation
        .as_ref()
        .map(|c| c.done.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

struct RefuseStep(&'static str, &'static str);
impl ShopFaults for RefuseStep {
    fn refuse(&self, _order: &str, step: &str) -> Option<String> {
        (step == self.0).then(|| self.1.to_owned())
    }
}

#[tokio::test]
async fn happy_path_completes_and_applies_each_effect_once() {
    let (world, orchestrator, _sub) = World::running(InMemoryBus::new(), Arc::new(NoFaults)).await;

    let started = orchestrator
        .start(
            "order-1",
            &PlaceOrder::new("order-1", 3, 42_00),
            Metadata::new().with_correlation_id("req-1"),
        )
        .await
        .expect("start");
    assert_eq!(started, StartOutcome::Started);
    finished(&orchestrator, 1).await;

    let state = orchestrator.query().get("order-1").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Completed));
    assert_eq!(world.stock().await, STOCK - 3);
    assert_eq!(
        load::<Payment>(&world.shop.payments, "order-1")
            .await
            .authorized,
        42_00
    );
    assert_eq!(
        load::<Shipment>(&world.shop.shipping, "order-1")
            .await
            .active,
        1
    );
    assert!(
        load::<Order>(&world.shop.ordering, "order-1")
            .await
            .completed
    );

    let history: Vec<String> = orchestrator
        .query()
        .history("order-1")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.event_type)
        .collect();
    assert_eq!(
        history,
        [
            "SagaStarted",
            "SagaStepSent",
            "SagaStepSucceeded",
            "SagaStepSent",
            "SagaStepSucceeded",
            "SagaStepSent",
            "SagaStepSucceeded",
            "SagaStepSent",
            "SagaStepSucceeded",
            "SagaFinished"
        ]
    );
    let entries = orchestrator.query().history("order-1").await.unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.metadata.correlation_id.as_deref() == Some("req-1"))
    );
    // Starting it again changes nothing.
    let again = orchestrator
        .start(
            "order-1",
            &PlaceOrder::new("order-1", 3, 42_00),
            Metadata::new(),
        )
        .await
        .unwrap();
    assert_eq!(again, StartOutcome::AlreadyStarted);
}

#[tokio::test]
async fn failure_at_step_2_releases_inventory_and_cancels_the_order() {
    let (world, orchestrator, _sub) = World::running(InMemoryBus::new(), Arc::new(NoFaults)).await;

    // Above the card limit: AuthorizePayment is declined.
    orchestrator
        .start(
            "order-2",
            &PlaceOrder::new("order-2", 4, CARD_LIMIT + 1),
            Metadata::new(),
        )
        .await
        .unwrap();
    finished(&orchestrator, 1).await;

    let state = orchestrator.query().get("order-2").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Compensated));
    assert_eq!(
        compensations_done(&state),
        [
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
    // The state after compensating, not only the replies: stock is back, nothing charged.
    assert_eq!(world.stock().await, STOCK);
    assert_eq!(
        load::<Payment>(&world.shop.payments, "order-2")
            .await
            .authorized,
        0
    );
    let order = load::<Order>(&world.shop.ordering, "order-2").await;
    assert!(order.cancelled && !order.completed);
    assert!(state.failure.unwrap().contains("card declined"));
}

#[tokio::test]
async fn failure_at_step_3_undoes_payment_then_inventory() {
    let faults = Arc::new(RefuseStep("CreateShipment", "no courier"));
    let (world, orchestrator, _sub) = World::running(InMemoryBus::new(), faults).await;

    orchestrator
        .start(
            "order-3",
            &PlaceOrder::new("order-3", 2, 10_00),
            Metadata::new(),
        )
        .await
        .unwrap();
    finished(&orchestrator, 1).await;

    let state = orchestrator.query().get("order-3").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Compensated));
    assert_eq!(
        compensations_done(&state),
        [
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
    assert_eq!(world.stock().await, STOCK);
    assert_eq!(
        load::<Payment>(&world.shop.payments, "order-3")
            .await
            .authorized,
        0
    );
    assert_eq!(
        load::<Shipment>(&world.shop.shipping, "order-3")
            .await
            .active,
        0
    );
    let effects = world.effects_by_key().await;
    assert_eq!(
        effects.get("PlaceOrder/order-3/AuthorizePayment/compensation"),
        Some(&vec!["PaymentCancelled".to_owned()])
    );
}

#[tokio::test]
async fn duplicate_deliveries_never_apply_an_effect_twice() {
    let bus = InMemoryBus::with_options(InMemoryBusOptions::new().duplicate_deliveries(true));
    let faults = Arc::new(RefuseStep("CreateShipment", "address check failed"));
    let (world, orchestrator, _sub) = World::running(bus, faults).await;

    for i in 0..6 {
        let id = format!("order-{i}");
        // Orders 0..4 fit the stock of 10 (2 each); order 5 does not; all fail at CreateShipment.
        orchestrator
            .start(&id, &PlaceOrder::new(&id, 2, 5_00), Metadata::new())
            .await
            .unwrap();
    }
    finished(&orchestrator, 6).await;
    let stats = orchestrator.stats();
    assert!(
        stats.duplicates > 0,
        "the bus delivered duplicates: {stats:?}"
    );

    for (key, events) in world.effects_by_key().await {
        assert_eq!(events.len(), 1, "{key} applied {events:?}");
    }
    assert_eq!(world.stock().await, STOCK, "every reservation was released");
    for saga in orchestrator.query().list(None).await.unwrap() {
        assert_eq!(saga.status, SagaStatus::Compensated, "{saga:?}");
    }
}

/// Acknowledges (drops) the first `count` messages of one type, then delegates: lost commands.
struct DropFirst {
    message_type: &'static str,
    count: usize,
    dropped: Mutex<Vec<Message>>,
    inner: Arc<dyn MessageHandler>,
}

#[async_trait]
impl MessageHandler for DropFirst {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        {
            let mut dropped = self.dropped.lock().expect("lock");
            if delivery.message.message_type == self.message_type && dropped.len() < self.count {
                dropped.push(delivery.message);
                return Ok(());
            }
        }
        self.inner.handle(delivery).await
    }
}

/// What [`with_lost_shipments`] sets up.
struct LostShipments {
    world: World,
    black_hole: Arc<DropFirst>,
    clock: ManualClock,
    orchestrator: Orchestrator<PlaceOrder>,
    _subscription: SubscriptionHandle,
}

/// The world with shipping behind a [`DropFirst`] of `lost` CreateShipment commands, and an
/// orchestrator on a manual clock running `definition` with order `order_id` started; returns
/// once the first CreateShipment was swallowed.
async fn with_lost_shipments(
    lost: usize,
    definition: SagaDefinition,
    order_id: &str,
) -> LostShipments {
    let mut world = World::new(InMemoryBus::new(), Arc::new(NoFaults)).await;
    world
        .subscribe_participants(&["inventory", "payments", "ordering"])
        .await;
    let black_hole = Arc::new(DropFirst {
        message_type: "CreateShipment",
        count: lost,
        dropped: Mutex::new(Vec::new()),
        inner: world.handler("shipping"),
    });
    let sub = world
        .bus
        .subscribe(
            eventflow_core::Subscription::new("shipping-lossy").with_filter(
                eventflow_core::Filter::all()
                    .message_type("CreateShipment")
                    .message_type("CancelShipment"),
            ),
            black_hole.clone(),
        )
        .await
        .expect("subscribe shipping");
    world.handles.push(sub);
    let clock = ManualClock::new();
    let orchestrator = world.orchestrator_at(definition, &clock);
    let subscription = orchestrator.subscribe().await.expect("subscribe");
    orchestrator
        .start(
            order_id,
            &PlaceOrder::new(order_id, 1, 1_00),
            Metadata::new(),
        )
        .await
        .expect("start");
    let swallowed = Arc::clone(&black_hole);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let dropped = !swallowed.dropped.lock().expect("lock").is_empty();
            async move { dropped }
        })
        .await
    );
    LostShipments {
        world,
        black_hole,
        clock,
        orchestrator,
        _subscription: subscription,
    }
}

#[tokio::test]
async fn a_lost_command_is_resent_at_its_deadline_and_the_saga_completes() {
    let lost = with_lost_shipments(1, definition(), "order-r").await;
    let (clock, orchestrator) = (&lost.clock, &lost.orchestrator);
    assert_eq!(orchestrator.fire_due_timers().await, 0, "not due yet");
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        orchestrator.fire_due_timers().await,
        1,
        "the deadline passes"
    );
    let waiting = orchestrator.query().get("order-r").await.unwrap().unwrap();
    assert_eq!(waiting.status, Some(SagaStatus::Running), "not failed");
    clock.advance(Duration::from_secs(1));
    assert_eq!(orchestrator.fire_due_timers().await, 1, "the resend");
    finished(orchestrator, 1).await;

    let state = orchestrator.query().get("order-r").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Completed));
    assert_eq!(state.steps[2].attempt, 2, "CreateShipment was sent twice");
    assert_eq!(lost.black_hole.dropped.lock().unwrap().len(), 1);
    assert_eq!(
        load::<Shipment>(&lost.world.shop.shipping, "order-r")
            .await
            .active,
        1,
        "shipped once"
    );
    for (key, events) in lost.world.effects_by_key().await {
        assert_eq!(events.len(), 1, "{key} applied {events:?}");
    }
}

#[tokio::test]
async fn a_step_whose_every_send_is_lost_is_compensated_and_its_late_commands_refused() {
    let mut definition = definition();
    for step in &mut definition.steps {
        step.resend = Backoff::new(2, Duration::from_secs(1), Duration::from_secs(1));
    }
    let lost = with_lost_shipments(2, definition, "order-t").await;
    let orchestrator = &lost.orchestrator;
    // Send 1's deadline, the resend 1 s later, send 2's deadline: the budget is spent.
    for advance in [31, 1, 30] {
        lost.clock.advance(Duration::from_secs(advance));
        assert_eq!(orchestrator.fire_due_timers().await, 1);
    }
    finished(orchestrator, 1).await;

    let state = orchestrator.query().get("order-t").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Compensated));
    assert_eq!(
        compensations_done(&state),
        [
            "compensation of CreateShipment",
            "compensation of AuthorizePayment",
            "compensation of ReserveInventory",
            "final command CancelOrder"
        ]
    );
    // The lost commands finally arrive: the compensation's tombstone refuses them.
    let shipping = lost.world.handler("shipping");
    let late: Vec<Message> = std::mem::take(&mut *lost.black_hole.dropped.lock().unwrap());
    assert_eq!(late.len(), 2);
    for message in late {
        shipping
            .handle(Delivery::new(message, "shipping-lossy", 1))
            .await
            .unwrap();
    }
    assert_eq!(
        load::<Shipment>(&lost.world.shop.shipping, "order-t")
            .await
            .active,
        0
    );
    assert_eq!(lost.world.stock().await, STOCK);
}

#[tokio::test]
async fn crash_mid_saga_and_a_new_orchestrator_on_the_same_store_finishes_it() {
    let mut world = World::new(InMemoryBus::new(), Arc::new(NoFaults)).await;
    // Payments is down: AuthorizePayment goes nowhere.
    world
        .subscribe_participants(&["inventory", "shipping", "ordering"])
        .await;
    let first = world.orchestrator(definition());
    let first_sub = first.subscribe().await.unwrap();
    first
        .start(
            "order-c",
            &PlaceOrder::new("order-c", 5, 20_00),
            Metadata::new(),
        )
        .await
        .unwrap();
    let query = first.query().clone();
    let at_step_2 = wait_until(Duration::from_secs(5), || {
        let query = query.clone();
        async move {
            query
                .get("order-c")
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.pending_step() == Some(1))
        }
    })
    .await;
    assert!(at_step_2);

    // The process dies: its subscription and memory are gone.
    first_sub.unsubscribe().await;
    drop(first);

    world.subscribe_participants(&["payments"]).await;
    let second = world.orchestrator(definition());
    let _sub = second.subscribe().await.unwrap();
    let report = second.resume().await.unwrap();
    assert_eq!(report.resumed, 1);
    finished(&second, 1).await;

    let state = second.query().get("order-c").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Completed));
    assert_eq!(world.stock().await, STOCK - 5, "reserved once, not twice");
    assert_eq!(
        load::<Payment>(&world.shop.payments, "order-c")
            .await
            .authorized,
        20_00
    );
    assert!(second.query().unfinished().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_deadline_stored_before_a_crash_fires_after_the_restart() {
    let mut world = World::new(InMemoryBus::new(), Arc::new(NoFaults)).await;
    world
        .subscribe_participants(&["inventory", "payments", "ordering"])
        .await;
    let clock = ManualClock::new();
    let first = world.orchestrator_at(definition(), &clock);
    let first_sub = first.subscribe().await.unwrap();
    first
        .start(
            "order-d",
            &PlaceOrder::new("order-d", 1, 1_00),
            Metadata::new(),
        )
        .await
        .unwrap();
    let query = first.query().clone();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let query = query.clone();
            async move {
                query
                    .get("order-d")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.pending_step() == Some(2))
            }
        })
        .await
    );
    first_sub.unsubscribe().await;
    drop(first);

    // Down for a minute: CreateShipment's deadline passed meanwhile (its command went nowhere:
    // shipping was not subscribed).
    clock.advance(Duration::from_secs(60));
    world.subscribe_participants(&["shipping"]).await;
    let second = world.orchestrator_at(definition(), &clock);
    let _sub = second.subscribe().await.unwrap();
    second.resume().await.unwrap();
    assert!(
        second
            .next_deadline()
            .is_some_and(|d| d <= clock_now(&clock))
    );
    assert_eq!(second.fire_due_timers().await, 1, "the stored deadline");
    clock.advance(Duration::from_secs(1));
    assert_eq!(second.fire_due_timers().await, 1, "the resend");
    finished(&second, 1).await;
    let state = second.query().get("order-d").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Completed));
    assert_eq!(world.stock().await, STOCK - 1);
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use eventflow_saga::Clock;
    clock.now()
}

/// Fails every compensation of one step while `broken` is set.
struct BrokenCompensation {
    step: &'static str,
    broken: std::sync::atomic::AtomicBool,
}

impl ShopFaults for BrokenCompensation {
    fn refuse(&self, _order: &str, step: &str) -> Option<String> {
        (step == "AuthorizePayment").then(|| "declined".to_owned())
    }
    fn fail_compensation(&self, _order: &str, step: &str) -> bool {
        step == self.step && self.broken.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_needs_attention_until_retried() {
    let faults = Arc::new(BrokenCompensation {
        step: "ReserveInventory",
        broken: std::sync::atomic::AtomicBool::new(true),
    });
    let mut world = World::new(InMemoryBus::new(), faults.clone()).await;
    world.subscribe_participants(&[]).await;
    let clock = ManualClock::new();
    let definition = place_order(
        Duration::from_secs(30),
        Backoff::new(3, Duration::from_secs(1), Duration::from_secs(4)),
    );
    let orchestrator = world.orchestrator_at(definition, &clock);
    let _sub = orchestrator.subscribe().await.unwrap();
    orchestrator
        .start(
            "order-n",
            &PlaceOrder::new("order-n", 1, 1_00),
            Metadata::new(),
        )
        .await
        .unwrap();

    let query = orchestrator.query().clone();
    let parked = wait_until(Duration::from_secs(10), || {
        let query = query.clone();
        let clock = clock.clone();
        let orchestrator = orchestrator.clone();
        async move {
            clock.advance(Duration::from_secs(5));
            orchestrator.fire_due_timers().await;
            !query
                .list(Some(SagaStatus::NeedsAttention))
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(parked, "saga never needed attention");
    let listed = orchestrator
        .query()
        .list(Some(SagaStatus::NeedsAttention))
        .await
        .unwrap();
    assert_eq!(listed[0].saga_id, "order-n");
    assert!(
        listed[0]
            .attention
            .as_deref()
            .unwrap()
            .contains("failed 3 times")
    );
    assert_eq!(orchestrator.stats().needs_attention, 1);
    assert_eq!(world.stock().await, STOCK - 1, "not released yet");
    let failures = orchestrator
        .query()
        .history("order-n")
        .await
        .unwrap()
        .into_iter()
        .filter(|h| matches!(h.event, SagaEvent::CompensationFailed { .. }))
        .count();
    assert_eq!(failures, 3, "every failed attempt is recorded");

    // Retrying a saga that does not need attention is refused.
    assert!(matches!(
        orchestrator.retry_compensation("nope", None).await,
        Err(Error::UnknownSaga { .. })
    ));

    // The operator fixes the participant and retries.
    faults
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    orchestrator
        .retry_compensation("order-n", Some("ops@example.com"))
        .await
        .unwrap();
    finished(&orchestrator, 1).await;
    let state = orchestrator.query().get("order-n").await.unwrap().unwrap();
    assert_eq!(state.status, Some(SagaStatus::Compensated));
    assert_eq!(world.stock().await, STOCK);
    assert!(matches!(
        orchestrator.retry_compensation("order-n", None).await,
        Err(Error::InvalidState {
            status: SagaStatus::Compensated,
            ..
        })
    ));
}

#[tokio::test]
async fn a_trigger_message_starts_one_saga_however_often_it_is_delivered() {
    let (world, orchestrator, _sub) = World::running(InMemoryBus::new(), Arc::new(NoFaults)).await;

    let order = PlaceOrder::new("order-x", 1, 1_00);
    let trigger = Message::new(
        "OrderPlaced",
        "ordering",
        serde_json::to_value(&order).unwrap(),
    )
    .with_id("evt-order-x")
    .with_correlation_id("req-x");
    world
        .bus
        .publish(vec![trigger.clone(), trigger])
        .await
        .unwrap();
    finished(&orchestrator, 1).await;

    let sagas = orchestrator.query().list(None).await.unwrap();
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].saga_id, "evt-order-x");
    assert_eq!(sagas[0].status, SagaStatus::Completed);
    let state = orchestrator
        .query()
        .get("evt-order-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.correlation_id.as_deref(), Some("req-x"));
    assert_eq!(world.stock().await, STOCK - 1);
}

#[tokio::test]
async fn queries_list_sagas_by_state() {
    let faults = Arc::new(RefuseStep("CreateShipment", "no courier"));
    let (_world, orchestrator, _sub) = World::running(InMemoryBus::new(), faults).await;
    // CreateShipment always fails here, so every saga compensates; declined cards fail earlier.
    for (id, amount) in [("a", 1_00), ("b", CARD_LIMIT + 5), ("c", 2_00)] {
        orchestrator
            .start(id, &PlaceOrder::new(id, 1, amount), Metadata::new())
            .await
            .unwrap();
    }
    finished(&orchestrator, 3).await;
    let all = orchestrator.query().list(None).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.saga_id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let compensated = orchestrator
        .query()
        .list(Some(SagaStatus::Compensated))
        .await
        .unwrap();
    assert_eq!(compensated.len(), 3);
    assert!(
        compensated[1]
            .failure
            .as_deref()
            .unwrap()
            .contains("card declined")
    );
    assert!(
        orchestrator
            .query()
            .list(Some(SagaStatus::Completed))
            .await
            .unwrap()
            .is_empty()
    );
    let history = orchestrator.query().history("b").await.unwrap();
    assert!(matches!(
        history.last().map(|h| &h.event),
        Some(SagaEvent::Finished { .. })
    ));
    let plan = history.iter().find_map(|h| match &h.event {
        SagaEvent::CompensationStarted { plan, .. } => Some(plan.clone()),
        _ => None,
    });
    assert_eq!(
        plan,
        Some(vec![
            CompensationTarget::Step {
                step: 0,
                name: "ReserveInventory".into()
            },
            CompensationTarget::Final {
                command: "CancelOrder".into()
            }
        ])
    );
}

mod spans {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    #[derive(Clone, Default)]
    pub(super) struct Capture(pub(super) Arc<Mutex<Vec<(String, String)>>>);

    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?};", field.name(), value));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push_str(&format!("{}={};", field.name(), value));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
            let mut fields = Fields(String::new());
            attrs.record(&mut fields);
            self.0
                .lock()
                .expect("lock")
                .push((attrs.metadata().name().to_owned(), fields.0));
        }
        fn on_record(&self, _id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
            let mut fields = Fields(String::new());
            values.record(&mut fields);
            self.0
                .lock()
                .expect("lock")
                .push(("record".to_owned(), fields.0));
        }
    }

    /// The process-wide capture. A thread-scoped subscriber (`set_default`) raced with the other
    /// tests of this binary over tracing's cached callsite interest and lost spans; a global one
    /// sees every thread, and the test filters by its own saga id.
    pub(super) fn global() -> &'static Capture {
        static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::registry().with(capture.clone());
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            capture
        })
    }
}

#[tokio::test]
async fn every_step_has_a_span_with_saga_and_correlation_ids() {
    let capture = spans::global();
    let (_world, orchestrator, _sub) = World::running(InMemoryBus::new(), Arc::new(NoFaults)).await;
    orchestrator
        .start(
            "order-s",
            &PlaceOrder::new("order-s", 1, 1_00),
            Metadata::new().with_correlation_id("corr-s"),
        )
        .await
        .unwrap();
    finished(&orchestrator, 1).await;

    let spans = capture.0.lock().unwrap().clone();
    for step in PLACE_ORDER_STEPS {
        let sent = spans.iter().any(|(name, fields)| {
            name == "eventflow.saga.step"
                && fields.contains("saga_id=order-s")
                && fields.contains(&format!("step={step}"))
                && fields.contains("correlation_id=corr-s")
        });
        assert!(sent, "no orchestrator span for {step}: {spans:#?}");
        let handled = spans.iter().any(|(name, fields)| {
            name == "eventflow.saga.participant"
                && fields.contains("saga_id=order-s")
                && fields.contains(&format!("step={step}"))
                && fields.contains("correlation_id=corr-s")
        });
        assert!(handled, "no participant span for {step}");
    }
}
