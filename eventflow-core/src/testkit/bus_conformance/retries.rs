//! Redelivery after a handler error, and dead letters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Recorder;
use crate::bus::{DeadLetter, DeadLetters, Delivery, EventBus, Message, Subscription};

use super::{
    Check, RETRY_TIMEOUT, SOURCE, TIMEOUT, ensure_intact, ids, ids_of_letters, message, messages,
    quick_retry,
};

/// A handler that fails the first two deliveries gets the message a third time, with attempts
/// 1, 2, 3, and the message is not dead-lettered.
pub(super) async fn redelivery_after_error<B: EventBus + DeadLetters>(check: &Check, bus: &B) {
    let recorder = Recorder::default();
    let name = check.subscription_name("retried");
    let handle = check
        .subscribe(
            bus,
            Subscription::new(&name).with_retry(quick_retry(5)),
            recorder.handler(|_, earlier| earlier >= 2),
        )
        .await;

    let published = message("ConformanceRetried", SOURCE, 0);
    let id = published.id.clone();
    check.publish(bus, vec![published.clone()]).await;
    check
        .wait_for(
            RETRY_TIMEOUT,
            || {
                format!(
                    "message not acknowledged after failures; deliveries: {:?}",
                    attempts(&recorder.deliveries_of(&id))
                )
            },
            || recorder.acked_ids().contains(&id),
        )
        .await;

    let deliveries = recorder.deliveries_of(&id);
    check.ensure(deliveries.len() >= 3, || {
        format!("{} deliveries, expected at least 3", deliveries.len())
    });
    let first_three = attempts(&deliveries[..3]);
    check.ensure(first_three == [1, 2, 3], || {
        format!("attempt numbers {first_three:?}, expected [1, 2, 3]")
    });
    for delivery in &deliveries {
        ensure_intact(check, delivery, &published, &name);
    }
    if bus.capabilities().dead_letters {
        let letters = check.dead_letters(bus, &name).await;
        check.ensure(letters.iter().all(|l| l.message.id != id), || {
            "the message was acknowledged but also dead-lettered".to_owned()
        });
    }
    handle.unsubscribe().await;
}

fn attempts(deliveries: &[Delivery]) -> Vec<u32> {
    deliveries.iter().map(|d| d.attempt).collect()
}

/// Poison messages are dead-lettered after the attempts while healthy ones get through; listing
/// does not remove them; after a fix, redrive delivers them and empties the list.
pub(super) async fn dead_letter<B: EventBus + DeadLetters>(check: &Check, bus: &B) {
    let recorder = Recorder::default();
    let fixed = Arc::new(AtomicBool::new(false));
    let name = check.subscription_name("dlq");
    let handle = {
        let fixed = Arc::clone(&fixed);
        let handler = recorder.handler(move |delivery, _| {
            fixed.load(Ordering::SeqCst) || delivery.message.message_type != "ConformancePoison"
        });
        check
            .subscribe(
                bus,
                Subscription::new(&name).with_retry(quick_retry(3)),
                handler,
            )
            .await
    };

    let poison = messages("ConformancePoison", 2);
    let poison_ids = ids(&poison);
    let healthy = messages("ConformanceHealthy", 5);
    let healthy_ids = ids(&healthy);
    check.publish(bus, poison.clone()).await;
    check.publish(bus, healthy).await;

    check
        .wait_for(
            TIMEOUT,
            || {
                format!(
                    "healthy messages stuck behind failing ones: {:?}",
                    recorder.missing(&healthy_ids)
                )
            },
            || recorder.has_acked_all(&healthy_ids),
        )
        .await;

    let all_dead = |letters: &[DeadLetter]| {
        poison_ids
            .iter()
            .all(|id| letters.iter().any(|l| &l.message.id == id))
    };
    let letters = check
        .wait_for_dead_letters(bus, &name, "poison messages not dead-lettered", all_dead)
        .await;
    ensure_letters_intact(check, &letters, &poison, &name, &recorder, &healthy_ids);

    // Listing does not remove, and `max` is respected.
    check
        .wait_for_dead_letters(bus, &name, "listing dead letters removed them", all_dead)
        .await;
    let one = check.ok("dead_letters(max 1)", bus.dead_letters(&name, 1).await);
    check.ensure(one.len() <= 1, || {
        format!("dead_letters(max = 1) returned {} letters", one.len())
    });

    fixed.store(true, Ordering::SeqCst);
    redrive_delivers_them(check, bus, &name, &recorder, &poison).await;
    handle.unsubscribe().await;
}

/// Every poison message's dead letter: its attempts, subscription and message as published; and
/// no acknowledged message among them.
fn ensure_letters_intact(
    check: &Check,
    letters: &[DeadLetter],
    poison: &[Message],
    name: &str,
    recorder: &Recorder,
    healthy_ids: &[String],
) {
    for expected in poison {
        let Some(letter) = letters.iter().find(|l| l.message.id == expected.id) else {
            check.fail(format_args!("dead letter {} vanished", expected.id));
        };
        check.ensure(letter.attempts >= 3, || {
            format!(
                "dead letter {} records {} attempts, expected >= 3",
                expected.id, letter.attempts
            )
        });
        check.ensure(letter.subscription == name, || {
            format!(
                "dead letter {} names subscription {:?}, expected {name:?}",
                expected.id, letter.subscription
            )
        });
        check.ensure(
            letter.message.message_type == expected.message_type
                && letter.message.payload == expected.payload,
            || {
                format!(
                    "dead letter {} does not carry the message as published",
                    expected.id
                )
            },
        );
        let delivered = recorder.deliveries_of(&expected.id).len();
        check.ensure(delivered >= 3, || {
            format!(
                "{} was dead-lettered after {delivered} deliveries, expected >= 3",
                expected.id
            )
        });
    }
    check.ensure(
        letters.iter().all(|l| !healthy_ids.contains(&l.message.id)),
        || {
            format!(
                "acknowledged messages were dead-lettered: {:?}",
                ids_of_letters(letters)
            )
        },
    );
}

/// After the handler is fixed: redrive delivers every poison message again, from attempt 1, and
/// empties the list.
async fn redrive_delivers_them<B: EventBus + DeadLetters>(
    check: &Check,
    bus: &B,
    name: &str,
    recorder: &Recorder,
    poison: &[Message],
) {
    let poison_ids = ids(poison);
    let before_redrive: HashMap<String, usize> = poison_ids
        .iter()
        .map(|id| (id.clone(), recorder.deliveries_of(id).len()))
        .collect();
    let redriven = check.ok("redrive", bus.redrive(name).await);
    check.ensure(redriven >= poison.len(), || {
        format!(
            "redrive returned {redriven}, expected at least {}",
            poison.len()
        )
    });
    check
        .wait_for(
            RETRY_TIMEOUT,
            || {
                format!(
                    "redriven messages not delivered: {:?}",
                    recorder.missing(&poison_ids)
                )
            },
            || recorder.has_acked_all(&poison_ids),
        )
        .await;
    for id in &poison_ids {
        let after = recorder.deliveries_of(id);
        let first = after.get(before_redrive[id]).map(|d| d.attempt);
        check.ensure(first == Some(1), || {
            format!("first delivery of {id} after redrive has attempt {first:?}, expected 1")
        });
    }
    check
        .wait_for_dead_letters(bus, name, "dead letters still listed after redrive", |l| {
            l.is_empty()
        })
        .await;
}
