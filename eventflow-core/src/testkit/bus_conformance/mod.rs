//! The bus conformance suite: the behaviour every [`EventBus`] + [`DeadLetters`] adapter promises.
//!
//! Written to run against emulated brokers as well as in memory: every wait polls with
//! [`wait_until`] and a generous timeout (it returns as soon as the condition holds), retry policies
//! use small backoffs that an adapter may round up, and "this did not happen" is only asserted after
//! a sentinel that did happen plus a short settle.

mod retries;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{ConformanceReport, Recorder, wait_until};
use crate::bus::{
    Backoff, DeadLetter, DeadLetters, Delivery, EventBus, Filter, HandlerError, Message,
    MessageHandler, Subscription, SubscriptionHandle, attributes, handler_fn,
};
use crate::error::Result;
use crate::mutex::lock;
use retries::{dead_letter, redelivery_after_error};

/// How long a check waits for deliveries that should happen.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a check waits for outcomes that need several redeliveries (dead letters, ordering).
const RETRY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a check waits, after a sentinel arrived, before asserting that something did not.
const SETTLE: Duration = Duration::from_millis(1500);
/// The source of the suite's messages, unless a check says otherwise.
const SOURCE: &str = "eventflow.conformance";

/// Runs every bus check against fresh buses from `factory` and returns what was checked.
///
/// Each check gets its own bus and uniquely named subscriptions. The suite panics, naming the
/// check, on the first violation. Checks of features the adapter's
/// [`capabilities`](EventBus::capabilities) do not offer (ordering per key, dead letters) are
/// reported as unsupported, not skipped silently.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use eventflow_core::InMemoryBus;
/// use eventflow_core::testkit::bus_conformance;
///
/// let report = bus_conformance("in-memory", || async { InMemoryBus::new() }).await;
/// assert!(report.unsupported.is_empty());
/// # });
/// ```
pub async fn bus_conformance<B, F, Fut>(backend: &str, factory: F) -> ConformanceReport
where
    B: EventBus + DeadLetters + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    let mut report = ConformanceReport::new(backend);

    publish_subscribe(&Check::new(backend, "publish_subscribe"), &factory().await).await;
    report.pass("publish_subscribe");
    filter_by_type(&Check::new(backend, "filter_by_type"), &factory().await).await;
    report.pass("filter_by_type");
    filter_by_source(&Check::new(backend, "filter_by_source"), &factory().await).await;
    report.pass("filter_by_source");
    fan_out(&Check::new(backend, "fan_out"), &factory().await).await;
    report.pass("fan_out");
    redelivery_after_error(
        &Check::new(backend, "redelivery_after_error"),
        &factory().await,
    )
    .await;
    report.pass("redelivery_after_error");

    let bus = factory().await;
    if bus.capabilities().dead_letters {
        dead_letter(&Check::new(backend, "dead_letter"), &bus).await;
        report.pass("dead_letter");
    } else {
        report.unsupported("dead_letter", "capabilities().dead_letters is false");
    }
    drop(bus);

    attributes(&Check::new(backend, "attributes"), &factory().await).await;
    report.pass("attributes");

    let bus = factory().await;
    if bus.capabilities().ordering_per_key {
        ordering_per_key(&Check::new(backend, "ordering_per_key"), &bus).await;
        report.pass("ordering_per_key");
    } else {
        report.unsupported(
            "ordering_per_key",
            "capabilities().ordering_per_key is false",
        );
    }
    drop(bus);

    unsubscribe(&Check::new(backend, "unsubscribe"), &factory().await).await;
    report.pass("unsubscribe");
    many_messages(&Check::new(backend, "many_messages"), &factory().await).await;
    report.pass("many_messages");

    report
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The check being run: names it in every failure.
struct Check {
    backend: String,
    name: &'static str,
}

impl Check {
    fn new(backend: &str, name: &'static str) -> Self {
        Check {
            backend: backend.to_owned(),
            name,
        }
    }

    #[track_caller]
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "bus conformance [{}] check {} failed: {what}",
            self.backend, self.name
        )
    }

    #[track_caller]
    fn ensure(&self, condition: bool, what: impl FnOnce() -> String) {
        if !condition {
            self.fail(what());
        }
    }

    #[track_caller]
    fn ok<T>(&self, what: &str, result: Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => self.fail(format_args!("{what}: unexpected error: {e}")),
        }
    }

    /// A subscription name unique to this run of the check.
    fn subscription_name(&self, role: &str) -> String {
        let check = self.name.replace('_', "-");
        format!("ef-{check}-{role}-{}", uuid::Uuid::new_v4().simple())
    }

    async fn subscribe<B: EventBus>(
        &self,
        bus: &B,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> SubscriptionHandle {
        let name = subscription.name.clone();
        self.ok(
            &format!("subscribe {name}"),
            bus.subscribe(subscription, handler).await,
        )
    }

    async fn publish<B: EventBus>(&self, bus: &B, messages: Vec<Message>) {
        self.ok("publish", bus.publish(messages).await);
    }

    /// Publishes in batches of ten, each batch after the previous one returned.
    async fn publish_batches<B: EventBus>(&self, bus: &B, messages: &[Message]) {
        for batch in messages.chunks(10) {
            self.publish(bus, batch.to_vec()).await;
        }
    }

    /// Waits until `condition` holds, or fails with `what`.
    async fn wait_for(
        &self,
        timeout: Duration,
        what: impl FnOnce() -> String,
        mut condition: impl FnMut() -> bool,
    ) {
        if !wait_until(timeout, || std::future::ready(condition())).await {
            self.fail(format_args!("timed out after {timeout:?}: {}", what()));
        }
    }

    async fn dead_letters<B: DeadLetters>(&self, bus: &B, subscription: &str) -> Vec<DeadLetter> {
        self.ok("dead_letters", bus.dead_letters(subscription, 100).await)
    }

    /// Waits until `condition` holds for the subscription's dead letters, or fails with `what`.
    async fn wait_for_dead_letters<B: DeadLetters>(
        &self,
        bus: &B,
        subscription: &str,
        what: &str,
        condition: impl Fn(&[DeadLetter]) -> bool,
    ) -> Vec<DeadLetter> {
        let last = Mutex::new(Vec::new());
        let held = wait_until(RETRY_TIMEOUT, || async {
            let letters = self.dead_letters(bus, subscription).await;
            let holds = condition(&letters);
            *lock(&last) = letters;
            holds
        })
        .await;
        let letters = std::mem::take(&mut *lock(&last));
        if !held {
            self.fail(format_args!(
                "timed out after {RETRY_TIMEOUT:?}: {what}; dead letters: {:?}",
                ids_of_letters(&letters)
            ));
        }
        letters
    }
}

fn ids_of_letters(letters: &[DeadLetter]) -> Vec<&str> {
    letters.iter().map(|l| l.message.id.as_str()).collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

/// A message of the suite, numbered in its payload.
fn message(message_type: &str, source: &str, n: usize) -> Message {
    Message::new(
        message_type,
        source,
        json!({ "n": n, "text": "héllo ✓ \"quoted\"", "nested": { "list": [1, 2.5, null, true] } }),
    )
}

fn messages(message_type: &str, count: usize) -> Vec<Message> {
    (0..count)
        .map(|n| message(message_type, SOURCE, n))
        .collect()
}

/// A small retry policy; adapters may round the backoffs up.
fn quick_retry(max_attempts: u32) -> Backoff {
    Backoff::new(
        max_attempts,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
}

/// Fails the check when a delivery of `expected` does not carry it unchanged.
fn ensure_intact(check: &Check, delivery: &Delivery, expected: &Message, subscription: &str) {
    let got = &delivery.message;
    check.ensure(got.message_type == expected.message_type, || {
        format!(
            "message {}: type {:?}, published {:?}",
            expected.id, got.message_type, expected.message_type
        )
    });
    check.ensure(got.source == expected.source, || {
        format!(
            "message {}: source {:?}, published {:?}",
            expected.id, got.source, expected.source
        )
    });
    check.ensure(got.payload == expected.payload, || {
        format!(
            "message {}: payload {}, published {}",
            expected.id, got.payload, expected.payload
        )
    });
    check.ensure(delivery.subscription == subscription, || {
        format!(
            "message {}: delivered to subscription {:?}, expected {subscription:?}",
            expected.id, delivery.subscription
        )
    });
    check.ensure(delivery.attempt >= 1, || {
        format!(
            "message {}: attempt {} (attempts count from 1)",
            expected.id, delivery.attempt
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// 20 messages in one publish call all arrive, intact.
async fn publish_subscribe<B: EventBus>(check: &Check, bus: &B) {
    let recorder = Recorder::default();
    let name = check.subscription_name("sub");
    let handle = check
        .subscribe(bus, Subscription::new(&name), recorder.acking())
        .await;

    let published = messages("ConformancePublished", 20);
    let published_ids = ids(&published);
    check.publish(bus, published.clone()).await;
    check
        .wait_for(
            TIMEOUT,
            || format!("not delivered: {:?}", recorder.missing(&published_ids)),
            || recorder.has_acked_all(&published_ids),
        )
        .await;

    for expected in &published {
        for delivery in recorder.deliveries_of(&expected.id) {
            ensure_intact(check, &delivery, expected, &name);
        }
    }
    handle.unsubscribe().await;
}

/// Only messages of the filter's types arrive (a filter with two types takes either).
async fn filter_by_type<B: EventBus>(check: &Check, bus: &B) {
    let filter = Filter::all()
        .message_type("ConformanceWantedA")
        .message_type("ConformanceWantedB");
    let wanted: Vec<Message> = (0..6)
        .map(|n| {
            let message_type = if n % 2 == 0 {
                "ConformanceWantedA"
            } else {
                "ConformanceWantedB"
            };
            message(message_type, SOURCE, n)
        })
        .collect();
    let unwanted = messages("ConformanceUnwanted", 6);
    filter_check(check, bus, filter, &wanted, &unwanted).await;
}

/// Only messages from the filter's sources arrive.
async fn filter_by_source<B: EventBus>(check: &Check, bus: &B) {
    let filter = Filter::all()
        .source("eventflow.conformance.a")
        .source("eventflow.conformance.b");
    let wanted: Vec<Message> = (0..6)
        .map(|n| {
            let source = if n % 2 == 0 {
                "eventflow.conformance.a"
            } else {
                "eventflow.conformance.b"
            };
            message("ConformanceFiltered", source, n)
        })
        .collect();
    let unwanted: Vec<Message> = (0..6)
        .map(|n| message("ConformanceFiltered", "eventflow.conformance.other", n))
        .collect();
    filter_check(check, bus, filter, &wanted, &unwanted).await;
}

/// Publishes `unwanted` first, then `wanted` as the sentinel; once the sentinel arrived and a
/// short settle passed, no unwanted message may have arrived.
async fn filter_check<B: EventBus>(
    check: &Check,
    bus: &B,
    filter: Filter,
    wanted: &[Message],
    unwanted: &[Message],
) {
    let recorder = Recorder::default();
    let name = check.subscription_name("filtered");
    let handle = check
        .subscribe(
            bus,
            Subscription::new(&name).with_filter(filter),
            recorder.acking(),
        )
        .await;

    check.publish(bus, unwanted.to_vec()).await;
    check.publish(bus, wanted.to_vec()).await;
    let wanted_ids = ids(wanted);
    check
        .wait_for(
            TIMEOUT,
            || {
                format!(
                    "matching messages not delivered: {:?}",
                    recorder.missing(&wanted_ids)
                )
            },
            || recorder.has_acked_all(&wanted_ids),
        )
        .await;
    tokio::time::sleep(SETTLE).await;

    let unwanted_ids: HashSet<String> = ids(unwanted).into_iter().collect();
    let leaked: Vec<String> = recorder
        .records()
        .into_iter()
        .map(|r| r.delivery.message)
        .filter(|m| unwanted_ids.contains(&m.id))
        .map(|m| format!("{} ({} from {})", m.id, m.message_type, m.source))
        .collect();
    check.ensure(leaked.is_empty(), || {
        format!("messages the filter excludes were delivered: {leaked:?}")
    });
    handle.unsubscribe().await;
}

/// Two subscriptions each receive every message.
async fn fan_out<B: EventBus>(check: &Check, bus: &B) {
    let first = Recorder::default();
    let second = Recorder::default();
    let first_handle = check
        .subscribe(
            bus,
            Subscription::new(check.subscription_name("first")),
            first.acking(),
        )
        .await;
    let second_handle = check
        .subscribe(
            bus,
            Subscription::new(check.subscription_name("second")),
            second.acking(),
        )
        .await;

    let published = messages("ConformanceFanOut", 10);
    let published_ids = ids(&published);
    check.publish(bus, published).await;
    for (label, recorder) in [("first", &first), ("second", &second)] {
        check
            .wait_for(
                TIMEOUT,
                || {
                    format!(
                        "{label} subscription did not receive {:?}",
                        recorder.missing(&published_ids)
                    )
                },
                || recorder.has_acked_all(&published_ids),
            )
            .await;
    }
    first_handle.unsubscribe().await;
    second_handle.unsubscribe().await;
}

/// Correlation id, causation id, traceparent and a custom attribute arrive unchanged.
async fn attributes<B: EventBus>(check: &Check, bus: &B) {
    let recorder = Recorder::default();
    let name = check.subscription_name("attrs");
    let handle = check
        .subscribe(bus, Subscription::new(&name), recorder.acking())
        .await;

    let correlation_id = uuid::Uuid::new_v4().to_string();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let published = message("ConformanceAttributes", SOURCE, 0)
        .with_correlation_id(&correlation_id)
        .with_attribute(attributes::CAUSATION_ID, "cause-42")
        .with_attribute(attributes::TRACEPARENT, traceparent)
        .with_attribute("x-conformance", "value with spaces, ünïcode & = signs");
    let id = published.id.clone();
    check.publish(bus, vec![published.clone()]).await;
    check
        .wait_for(
            TIMEOUT,
            || "message not delivered".to_owned(),
            || recorder.acked_ids().contains(&id),
        )
        .await;

    for delivery in recorder.deliveries_of(&id) {
        let got = &delivery.message;
        for (key, value) in &published.attributes {
            check.ensure(got.attribute(key) == Some(value.as_str()), || {
                format!(
                    "attribute {key:?}: got {:?}, published {value:?}",
                    got.attribute(key)
                )
            });
        }
        check.ensure(
            got.correlation_id() == Some(correlation_id.as_str()),
            || {
                format!(
                    "correlation id {:?}, published {correlation_id:?}",
                    got.correlation_id()
                )
            },
        );
        check.ensure(got.traceparent() == Some(traceparent), || {
            format!(
                "traceparent {:?}, published {traceparent:?}",
                got.traceparent()
            )
        });
    }
    handle.unsubscribe().await;
}

/// Per ordering key, messages are handled one at a time and first succeed in publish order, even
/// when some first deliveries fail.
async fn ordering_per_key<B: EventBus>(check: &Check, bus: &B) {
    const PER_KEY: usize = 30;
    let state = Arc::new(Mutex::new(Ordered::default()));
    let handler = ordered_handler(Arc::clone(&state));
    let handle = check
        .subscribe(
            bus,
            Subscription::new(check.subscription_name("ordered")).with_retry(quick_retry(10)),
            handler,
        )
        .await;

    let mut published: HashMap<&str, Vec<String>> = HashMap::new();
    let all: Vec<Message> = (0..PER_KEY * 2)
        .map(|n| {
            let key = if n % 2 == 0 { "k1" } else { "k2" };
            let message = message("ConformanceOrdered", SOURCE, n).with_ordering_key(key);
            published.entry(key).or_default().push(message.id.clone());
            message
        })
        .collect();
    check.publish_batches(bus, &all).await;
    let all_ids = ids(&all);

    let acked_ids = || -> HashSet<String> {
        lock(&state)
            .acked
            .iter()
            .map(|(_, id)| id.clone())
            .collect()
    };
    check
        .wait_for(
            RETRY_TIMEOUT,
            || {
                let acked = acked_ids();
                let missing = all_ids.iter().filter(|id| !acked.contains(*id)).count();
                format!("{missing} ordered messages not acknowledged")
            },
            || {
                let acked = acked_ids();
                all_ids.iter().all(|id| acked.contains(id))
            },
        )
        .await;

    handle.unsubscribe().await;
    let state = std::mem::take(&mut *lock(&state));
    ensure_in_order(check, &state, &published);
}

/// What the ordering check's handler saw: calls in flight per key, overlaps, acknowledgements.
#[derive(Default)]
struct Ordered {
    in_flight: HashMap<String, usize>,
    overlaps: Vec<String>,
    acked: Vec<(String, String)>,
}

/// Which first deliveries the ordering check fails: deterministic, about one in six, spread
/// over both keys.
fn fails_first(n: u64) -> bool {
    n.wrapping_mul(2_654_435_761).is_multiple_of(6)
}

/// The ordering check's handler: records overlaps of one key, fails some first deliveries.
fn ordered_handler(state: Arc<Mutex<Ordered>>) -> Arc<dyn MessageHandler> {
    handler_fn(move |delivery: Delivery| {
        let state = Arc::clone(&state);
        async move {
            let key = delivery.message.ordering_key.clone().unwrap_or_default();
            let id = delivery.message.id.clone();
            {
                let mut state = lock(&state);
                let in_flight = state.in_flight.entry(key.clone()).or_default();
                *in_flight += 1;
                if *in_flight > 1 {
                    state.overlaps.push(id.clone());
                }
            }
            // Long enough for a second delivery of the same key to overlap if the adapter
            // allowed it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let n = delivery.message.payload["n"].as_u64().unwrap_or_default();
            let fail = delivery.attempt == 1 && fails_first(n);
            let mut state = lock(&state);
            if let Some(in_flight) = state.in_flight.get_mut(&key) {
                *in_flight -= 1;
            }
            if fail {
                return Err(HandlerError::msg("conformance: failing on purpose"));
            }
            state.acked.push((key, id));
            Ok(())
        }
    })
}

/// No two messages of one key were in flight at once, and each key's first acknowledgements
/// follow its publish order.
fn ensure_in_order(check: &Check, state: &Ordered, published: &HashMap<&str, Vec<String>>) {
    check.ensure(state.overlaps.is_empty(), || {
        format!(
            "messages handled while another of their key was in flight: {:?}",
            state.overlaps
        )
    });
    for (key, expected) in published {
        let mut seen = HashSet::new();
        let first_acks: Vec<&String> = state
            .acked
            .iter()
            .filter(|(k, id)| k == key && seen.insert(id.clone()))
            .map(|(_, id)| id)
            .collect();
        let in_order = first_acks.iter().copied().eq(expected.iter());
        check.ensure(in_order, || {
            let position = |id: &String| expected.iter().position(|e| e == id);
            let order: Vec<Option<usize>> = first_acks.iter().map(|id| position(id)).collect();
            format!("key {key}: first acknowledgements in publish positions {order:?}")
        });
    }
}

/// After `unsubscribe` returns the handler gets nothing more, and the name can be subscribed again.
async fn unsubscribe<B: EventBus>(check: &Check, bus: &B) {
    let gone = Recorder::default();
    let witness = Recorder::default();
    let name = check.subscription_name("gone");
    let handle = check
        .subscribe(bus, Subscription::new(&name), gone.acking())
        .await;
    let witness_handle = check
        .subscribe(
            bus,
            Subscription::new(check.subscription_name("witness")),
            witness.acking(),
        )
        .await;

    let before = message("ConformanceBeforeUnsubscribe", SOURCE, 0);
    let before_id = vec![before.id.clone()];
    check.publish(bus, vec![before]).await;
    check
        .wait_for(
            TIMEOUT,
            || "message before unsubscribe not delivered".to_owned(),
            || gone.has_acked_all(&before_id) && witness.has_acked_all(&before_id),
        )
        .await;

    handle.unsubscribe().await;
    let count = gone.len();
    let after = message("ConformanceAfterUnsubscribe", SOURCE, 1);
    let after_id = vec![after.id.clone()];
    check.publish(bus, vec![after]).await;
    check
        .wait_for(
            TIMEOUT,
            || "the witness subscription did not receive the sentinel".to_owned(),
            || witness.has_acked_all(&after_id),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    check.ensure(gone.len() == count, || {
        let late: Vec<String> = gone.records()[count..]
            .iter()
            .map(|r| r.delivery.message.id.clone())
            .collect();
        format!("deliveries after unsubscribe returned: {late:?}")
    });

    let again = Recorder::default();
    let handle = check
        .subscribe(bus, Subscription::new(&name), again.acking())
        .await;
    let third = message("ConformanceResubscribed", SOURCE, 2);
    let third_id = vec![third.id.clone()];
    check.publish(bus, vec![third]).await;
    check
        .wait_for(
            TIMEOUT,
            || "the re-created subscription did not receive a new message".to_owned(),
            || again.has_acked_all(&third_id),
        )
        .await;
    check.ensure(gone.len() == count, || {
        "the old handler received messages of the re-created subscription".to_owned()
    });
    handle.unsubscribe().await;
    witness_handle.unsubscribe().await;
}

/// 1,000 messages published in batches of ten all arrive.
async fn many_messages<B: EventBus>(check: &Check, bus: &B) {
    const COUNT: usize = 1_000;
    let recorder = Recorder::default();
    let handle = check
        .subscribe(
            bus,
            Subscription::new(check.subscription_name("many")),
            recorder.acking(),
        )
        .await;
    let published = messages("ConformanceMany", COUNT);
    check.publish_batches(bus, &published).await;
    let published_ids = ids(&published);
    check
        .wait_for(
            RETRY_TIMEOUT,
            || {
                let missing = recorder.missing(&published_ids);
                format!(
                    "{} of {COUNT} messages not delivered, e.g. {:?}",
                    missing.len(),
                    missing.first()
                )
            },
            || recorder.has_acked_all(&published_ids),
        )
        .await;
    handle.unsubscribe().await;
}
