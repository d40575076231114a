//! The work queue contract, run against the in-memory twin and SQS on moto: competing consumers,
//! visibility timeout, dead-lettering after N receives, redrive, a worker's retries and heartbeat,
//! and 1,000 messages through a worker with none lost.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::sqs::SqsQueueOptions;
use eventflow_bus::testkit;
use eventflow_bus::work_queue::{
    DeadLetterQueue, InMemoryWorkQueue, QueueSettings, WorkQueue, Worker, WorkerOptions,
};
use eventflow_core::bus::{Backoff, Message};
use eventflow_core::testkit::wait_until;
use serde_json::json;
use support::Recorder;

/// A fresh queue with a 3 s visibility timeout and a DLQ after 3 receives.
async fn memory() -> Option<Arc<dyn DeadLetterQueue>> {
    Some(Arc::new(InMemoryWorkQueue::new(
        QueueSettings::new("jobs")
            .with_visibility_timeout(Duration::from_secs(3))
            .with_max_receives(Some(3)),
    )))
}

async fn sqs() -> Option<Arc<dyn DeadLetterQueue>> {
    let options = SqsQueueOptions::new()
        .with_visibility_timeout(Duration::from_secs(3))
        .with_max_receives(Some(3));
    Some(Arc::new(testkit::fresh_sqs_queue(&options).await?))
}

fn jobs(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new("Job", "eventflow.test", json!({ "n": i }))
                .with_correlation_id(format!("c-{i}"))
        })
        .collect()
}

async fn receive_all(
    queue: &dyn WorkQueue,
    wait: Duration,
) -> Vec<eventflow_bus::work_queue::ReceivedMessage> {
    let mut all = Vec::new();
    loop {
        let got = queue.receive(10, wait).await.expect("receive");
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

async fn competing_consumers_share_the_work(queue: Arc<dyn DeadLetterQueue>) {
    let sent = jobs(25);
    queue.send(sent.clone()).await.expect("send");
    let first = queue
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    let rest = receive_all(queue.as_ref(), Duration::from_millis(500)).await;
    let got: Vec<&Message> = first.iter().chain(&rest).map(|r| &r.message).collect();
    let unique: HashSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        got.len(),
        25,
        "each message handed out once while in flight"
    );
    assert_eq!(unique.len(), 25);
    let original = sent
        .iter()
        .find(|m| m.id == first[0].message.id)
        .expect("sent");
    assert_eq!(&first[0].message, original, "the message arrives intact");
    for r in first.iter().chain(&rest) {
        assert_eq!(r.receive_count, 1);
        queue.ack(&r.receipt).await.expect("ack");
    }
    assert!(
        queue
            .receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty()
    );
}

async fn visibility_timeout_and_dead_letters(queue: Arc<dyn DeadLetterQueue>) {
    let sent = jobs(1);
    queue.send(sent.clone()).await.expect("send");
    let first = queue
        .receive(1, Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(first[0].receive_count, 1);
    assert!(
        queue
            .receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "hidden"
    );
    // Not acknowledged: visible again after the 3 s timeout, counted.
    let second = queue
        .receive(1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(second.len(), 1, "redelivered after the visibility timeout");
    assert_eq!(second[0].receive_count, 2);
    queue
        .change_visibility(&second[0].receipt, Duration::ZERO)
        .await
        .expect("nack");
    let third = queue
        .receive(1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(third[0].receive_count, 3);
    queue
        .change_visibility(&third[0].receipt, Duration::ZERO)
        .await
        .expect("nack");
    // The fourth receive moves it to the DLQ instead.
    assert!(
        queue
            .receive(1, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty()
    );
    let letters = queue.dead_letters(10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message, sent[0]);
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].subscription, queue.settings().name);
    assert_eq!(
        queue.dead_letters(10).await.expect("list").len(),
        1,
        "listing keeps them"
    );
    assert_eq!(queue.redrive().await.expect("redrive"), 1);
    assert!(queue.dead_letters(10).await.expect("list").is_empty());
    let again = queue
        .receive(1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(again[0].message, sent[0]);
    assert_eq!(again[0].receive_count, 1, "a redriven message starts over");
    queue.ack(&again[0].receipt).await.expect("ack");
}

async fn worker_retries_dead_letters_and_extends(queue: Arc<dyn DeadLetterQueue>) {
    let recorder = Recorder::default();
    // Poison always fails; Slow takes longer than the visibility timeout once.
    let handler = {
        let recorder = recorder.clone();
        let inner = recorder.handler(|d, _| d.message.message_type != "Poison");
        eventflow_core::bus::handler_fn(move |d: eventflow_core::Delivery| {
            let inner = Arc::clone(&inner);
            async move {
                if d.message.message_type == "Slow" {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                }
                inner.handle(d).await
            }
        })
    };
    let _ = &recorder;
    let worker = Worker::new(queue.clone() as Arc<dyn WorkQueue>, handler)
        .with_options(
            WorkerOptions::new()
                .with_retry(Backoff::new(
                    3,
                    Duration::from_millis(100),
                    Duration::from_secs(1),
                ))
                .with_wait_time(Duration::from_secs(1)),
        )
        .start()
        .expect("start");
    let poison = Message::new("Poison", "eventflow.test", json!({}));
    let slow = Message::new("Slow", "eventflow.test", json!({}));
    queue
        .send(vec![poison.clone(), slow.clone()])
        .await
        .expect("send");
    let dead = wait_until(Duration::from_secs(60), || async {
        !queue.dead_letters(10).await.expect("list").is_empty()
    })
    .await;
    assert!(
        dead,
        "poison dead-lettered; attempts {:?}",
        recorder.attempts_of(&poison.id)
    );
    assert!(
        recorder
            .wait_for_delivered(std::slice::from_ref(&slow.id), Duration::from_secs(30))
            .await
    );
    worker.unsubscribe().await;
    assert_eq!(recorder.attempts_of(&poison.id), [1, 2, 3]);
    assert_eq!(
        recorder.attempts_of(&slow.id),
        [1],
        "the worker extended the visibility of the slow message, so it was not redelivered"
    );
}

async fn a_thousand_messages_none_lost(queue: Arc<dyn DeadLetterQueue>) {
    let recorder = Recorder::default();
    let worker = Worker::new(queue.clone() as Arc<dyn WorkQueue>, recorder.acking())
        .with_options(
            WorkerOptions::new()
                .with_wait_time(Duration::from_secs(1))
                .with_max_in_flight(32),
        )
        .start()
        .expect("start");
    let sent = jobs(1000);
    for batch in sent.chunks(10) {
        queue.send(batch.to_vec()).await.expect("send");
    }
    let ids: Vec<String> = sent.iter().map(|m| m.id.clone()).collect();
    let all = recorder
        .wait_for_delivered(&ids, Duration::from_secs(120))
        .await;
    worker.unsubscribe().await;
    let counts = recorder.counts();
    assert!(all, "{} of 1000 delivered", counts.len());
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(queue) = memory().await else { return };
                    super::$name(queue).await;
                }
            )*
        }
        mod on_sqs {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(queue) = sqs().await else { return };
                    super::$name(queue).await;
                }
            )*
        }
    };
}

contract!(
    competing_consumers_share_the_work,
    visibility_timeout_and_dead_letters,
    worker_retries_dead_letters_and_extends,
    a_thousand_messages_none_lost,
);
