//! [`Recorder`]: a message handler for tests that records every delivery and answers as told.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::bus::{Delivery, HandlerError, MessageHandler, handler_fn};
use crate::mutex::lock;
use crate::testkit::wait_until;

/// One delivery the [`Recorder`]'s handler got, and its answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Recorded {
    /// The delivery.
    pub delivery: Delivery,
    /// Whether the handler acknowledged it (else it failed it).
    pub acked: bool,
    /// When it arrived.
    pub at: Instant,
}

/// Records every delivery its handlers get; clones share the record.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use eventflow_core::bus::{EventBus, Message, Subscription};
/// use eventflow_core::testkit::Recorder;
/// use eventflow_core::InMemoryBus;
///
/// let bus = InMemoryBus::new();
/// let recorder = Recorder::default();
/// // Fails each message's first delivery, acknowledges the second.
/// let subscription = Subscription::new("audit")
///     .with_retry(eventflow_core::Backoff::new(3, Duration::from_millis(1), Duration::from_millis(1)));
/// bus.subscribe(subscription, recorder.handler(|_, earlier| earlier >= 1)).await?;
/// let message = Message::new("Happened", "test", serde_json::json!({}));
/// bus.publish(vec![message.clone()]).await?;
/// assert!(recorder.wait_for_acked(&[message.id.clone()], Duration::from_secs(5)).await);
/// assert_eq!(recorder.attempts_of(&message.id), [1, 2]);
/// # Ok::<(), eventflow_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    records: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    /// A handler that acknowledges every delivery.
    pub fn acking(&self) -> Arc<dyn MessageHandler> {
        self.handler(|_, _| true)
    }

    /// A handler that acknowledges a delivery when `ack(delivery, earlier deliveries of its
    /// message)` is true, and fails it otherwise.
    pub fn handler(
        &self,
        ack: impl Fn(&Delivery, usize) -> bool + Send + Sync + 'static,
    ) -> Arc<dyn MessageHandler> {
        let records = Arc::clone(&self.records);
        let ack = Arc::new(ack);
        handler_fn(move |delivery: Delivery| {
            let records = Arc::clone(&records);
            let ack = Arc::clone(&ack);
            async move {
                let mut records = lock(&records);
                let earlier = records
                    .iter()
                    .filter(|r| r.delivery.message.id == delivery.message.id)
                    .count();
                let acked = ack(&delivery, earlier);
                records.push(Recorded {
                    delivery,
                    acked,
                    at: Instant::now(),
                });
                drop(records);
                if acked {
                    Ok(())
                } else {
                    Err(HandlerError::msg("recorder: failing on purpose"))
                }
            }
        })
    }

    /// Every delivery so far, in arrival order.
    pub fn records(&self) -> Vec<Recorded> {
        lock(&self.records).clone()
    }

    /// Every delivery so far, in arrival order, without the answers.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.records)
            .iter()
            .map(|r| r.delivery.clone())
            .collect()
    }

    /// How many deliveries arrived.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Whether no delivery arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deliveries of message `id`, in arrival order.
    pub fn deliveries_of(&self, id: &str) -> Vec<Delivery> {
        lock(&self.records)
            .iter()
            .filter(|r| r.delivery.message.id == id)
            .map(|r| r.delivery.clone())
            .collect()
    }

    /// The attempt numbers of message `id`'s deliveries, in arrival order.
    pub fn attempts_of(&self, id: &str) -> Vec<u32> {
        lock(&self.records)
            .iter()
            .filter(|r| r.delivery.message.id == id)
            .map(|r| r.delivery.attempt)
            .collect()
    }

    /// Deliveries per message id.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in lock(&self.records).iter() {
            *counts.entry(r.delivery.message.id.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Ids acknowledged at least once.
    pub fn acked_ids(&self) -> HashSet<String> {
        lock(&self.records)
            .iter()
            .filter(|r| r.acked)
            .map(|r| r.delivery.message.id.clone())
            .collect()
    }

    /// The ids of `ids` not acknowledged yet.
    pub fn missing(&self, ids: &[String]) -> Vec<String> {
        let acked = self.acked_ids();
        ids.iter()
            .filter(|id| !acked.contains(*id))
            .cloned()
            .collect()
    }

    /// Whether every id of `ids` was acknowledged.
    pub fn has_acked_all(&self, ids: &[String]) -> bool {
        self.missing(ids).is_empty()
    }

    /// Waits until every id of `ids` was acknowledged, or `timeout`; returns whether they were.
    pub async fn wait_for_acked(&self, ids: &[String], timeout: Duration) -> bool {
        wait_until(timeout, || std::future::ready(self.has_acked_all(ids))).await
    }

    /// Waits until every id of `ids` was delivered at least once, or `timeout`.
    pub async fn wait_for_delivered(&self, ids: &[String], timeout: Duration) -> bool {
        wait_until(timeout, || {
            let counts = self.counts();
            std::future::ready(ids.iter().all(|id| counts.contains_key(id)))
        })
        .await
    }
}
