//! The work queue contract on SQS (moto): the core's conformance suite (competing consumers,
//! visibility timeout, ack, nack, dead-lettering after N receives, redrive; the in-memory twin
//! runs it in `eventflow-core`), then a worker's retries and heartbeat and 1,000 messages through
//! a worker with none lost, against both the in-memory twin and SQS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::sqs::SqsQueueOptions;
use eventflow_bus::testkit;
use eventflow_bus::work_queue::{
    DeadLetterQueue, InMemoryWorkQueue, QueueSettings, WorkQueue, Worker, WorkerOptions,
};
use eventflow_core::bus::{Backoff, Message};
use eventflow_core::testkit::{wait_until, work_queue_conformance};
use serde_json::json;
use support::Recorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_work_queue_passes_the_conformance_suite() {
    if testkit::moto_endpoint().is_none() {
        return;
    }
    let report = work_queue_conformance("sqs (moto)", |settings| async move {
        let options = SqsQueueOptions::new()
            .with_visibility_timeout(settings.visibility_timeout)
            .with_max_receives(settings.max_receives);
        testkit::fresh_sqs_queue(&options)
            .await
            .expect("moto was available a moment ago")
    })
    .await;
    eprintln!("{report}");
    assert_eq!(report.passed.len(), 7, "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
}

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
    worker_retries_dead_letters_and_extends,
    a_thousand_messages_none_lost,
);
