//! [`InMemoryWorkQueue`]: the work queue in process memory, with SQS's semantics.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bus::{DeadLetter, Message};
use crate::error::{Error, Result};
use crate::mutex::lock;
use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::work_queue::{
    DeadLetterQueue, QueueSettings, Receipt, ReceivedMessage, Settlement, WorkQueue,
};

/// A [`WorkQueue`] in memory that behaves like an SQS standard queue with a redrive policy:
/// receives hide messages for the visibility timeout and count, stale receipts are refused by
/// [`change_visibility`](WorkQueue::change_visibility), and a message is moved to the dead-letter
/// queue when it is about to be received for the `max_receives + 1`-th time. It is no kinder than
/// SQS, so tests on it mean something; unlike SQS it keeps strict FIFO order among visible
/// messages. Clones share the queue.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use eventflow_core::InMemoryWorkQueue;
/// use eventflow_core::work_queue::{QueueSettings, WorkQueue};
/// use eventflow_core::Message;
///
/// let queue = InMemoryWorkQueue::new(QueueSettings::new("emails").with_max_receives(Some(3)));
/// queue.send(vec![Message::new("SendEmail", "notification", serde_json::json!({"to": "a@b.c"}))])
///     .await?;
/// let received = queue.receive(10, Duration::from_secs(1)).await?;
/// assert_eq!(received[0].receive_count, 1);
/// queue.ack(&received[0].receipt).await?;
/// # Ok::<(), eventflow_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct InMemoryWorkQueue {
    inner: Arc<Inner>,
}

struct Inner {
    settings: QueueSettings,
    state: Mutex<State>,
    /// Notified when a message is sent or made visible at once.
    arrived: Notify,
}

#[derive(Default)]
struct State {
    /// In send order.
    messages: VecDeque<Entry>,
    dead: Vec<DeadLetter>,
    next_receipt: u64,
}

struct Entry {
    message: Message,
    receive_count: u32,
    visible_at: Instant,
    /// The receipt of the latest receive while the message is hidden by it.
    receipt: Option<String>,
}

impl InMemoryWorkQueue {
    /// An empty queue with `settings`.
    pub fn new(settings: QueueSettings) -> Self {
        InMemoryWorkQueue {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::default()),
                arrived: Notify::new(),
            }),
        }
    }

    /// Messages in the queue (visible or in flight), dead letters excluded.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).messages.len()
    }

    /// Whether the queue holds no message (dead letters excluded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes what is visible now; `Err(next)` with the instant the next hidden message shows up.
    fn take_visible(
        &self,
        max: usize,
    ) -> std::result::Result<Vec<ReceivedMessage>, Option<Instant>> {
        let now = Instant::now();
        let settings = &self.inner.settings;
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        let mut taken = Vec::new();
        let mut next_visible: Option<Instant> = None;
        let mut index = 0;
        while index < state.messages.len() && taken.len() < max {
            let entry = &mut state.messages[index];
            if entry.visible_at > now {
                next_visible =
                    Some(next_visible.map_or(entry.visible_at, |n| n.min(entry.visible_at)));
                index += 1;
                continue;
            }
            if settings
                .max_receives
                .is_some_and(|max_receives| entry.receive_count >= max_receives)
            {
                let Some(entry) = state.messages.remove(index) else {
                    break;
                };
                tracing::warn!(
                    queue = %settings.name,
                    message_id = %entry.message.id,
                    receives = entry.receive_count,
                    "message moved to the dead-letter queue"
                );
                state.dead.push(
                    DeadLetter::new(entry.message, &settings.name, entry.receive_count)
                        .with_dead_lettered_at(Utc::now()),
                );
                continue;
            }
            state.next_receipt += 1;
            let receipt = format!("{}:{}", settings.name, state.next_receipt);
            entry.receive_count += 1;
            entry.visible_at = now + settings.visibility_timeout;
            entry.receipt = Some(receipt.clone());
            taken.push(ReceivedMessage::new(
                entry.message.clone(),
                Receipt::new(receipt),
                entry.receive_count,
            ));
            index += 1;
        }
        if taken.is_empty() {
            // Messages past `index` were not looked at only if `max` was reached, which needs a
            // taken message: so every hidden message was seen.
            Err(next_visible)
        } else {
            Ok(taken)
        }
    }
}

impl fmt::Debug for InMemoryWorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("InMemoryWorkQueue")
            .field("settings", &self.inner.settings)
            .field("messages", &state.messages.len())
            .field("dead_letters", &state.dead.len())
            .finish()
    }
}

#[async_trait]
impl WorkQueue for InMemoryWorkQueue {
    fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    async fn send(&self, messages: Vec<Message>) -> Result<()> {
        if let Some(m) = messages
            .iter()
            .find(|m| m.id.is_empty() || m.message_type.is_empty())
        {
            return Err(Error::InvalidRequest(format!(
                "message {:?} has an empty id or message type",
                m.id
            )));
        }
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        for message in messages {
            state.messages.push_back(Entry {
                message,
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
        }
        drop(state);
        self.inner.arrived.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a send between the look and the wait wakes us.
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next_visible = match self.take_visible(max.max(1)) {
                Ok(taken) => return Ok(taken),
                Err(next_visible) => next_visible,
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_visible.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn settle(&self, receipt: &Receipt, settlement: Settlement) -> Result<()> {
        match settlement {
            Settlement::Ack => self.delete_message(receipt).await,
            Settlement::Hide(timeout) => self.hide(receipt, timeout).await,
        }
    }
}

#[async_trait]
impl DeadLetterQueue for InMemoryWorkQueue {
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.inner.state)
            .dead
            .iter()
            .take(max)
            .cloned()
            .collect())
    }

    async fn redrive(&self) -> Result<usize> {
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        let dead = std::mem::take(&mut state.dead);
        let count = dead.len();
        for letter in dead {
            state.messages.push_back(Entry {
                message: letter.message,
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
        }
        drop(state);
        self.inner.arrived.notify_waiters();
        tracing::info!(queue = %self.inner.settings.name, count, "dead letters redriven");
        Ok(count)
    }
}

impl InMemoryWorkQueue {
    async fn delete_message(&self, receipt: &Receipt) -> Result<()> {
        let mut state = lock(&self.inner.state);
        if let Some(index) = state
            .messages
            .iter()
            .position(|e| e.receipt.as_deref() == Some(receipt.as_str()))
        {
            state.messages.remove(index);
        } else {
            tracing::debug!(queue = %self.inner.settings.name, ?receipt, "ack of a message that is gone or was received again");
        }
        Ok(())
    }

    async fn hide(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        let entry = state
            .messages
            .iter_mut()
            .find(|e| e.receipt.as_deref() == Some(receipt.as_str()) && e.visible_at > now)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "{receipt:?} of queue {} is not in flight (acknowledged, expired or received again)",
                    self.inner.settings.name
                ))
            })?;
        entry.visible_at = now + timeout;
        drop(state);
        if timeout.is_zero() {
            self.inner.arrived.notify_waiters();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue(max_receives: Option<u32>) -> InMemoryWorkQueue {
        InMemoryWorkQueue::new(
            QueueSettings::new("jobs")
                .with_visibility_timeout(Duration::from_millis(200))
                .with_max_receives(max_receives),
        )
    }

    fn job(n: u32) -> Message {
        Message::new("Job", "test", json!({ "n": n }))
    }

    #[tokio::test]
    async fn competing_consumers_each_get_a_message_once() {
        let q = queue(Some(3));
        q.send((0..5).map(job).collect()).await.expect("send");
        let a = q.receive(3, Duration::ZERO).await.expect("receive");
        let b = q.receive(3, Duration::ZERO).await.expect("receive");
        assert_eq!((a.len(), b.len()), (3, 2));
        let c = q.receive(3, Duration::ZERO).await.expect("receive");
        assert!(c.is_empty(), "in-flight messages are hidden");
    }

    #[tokio::test]
    async fn visibility_timeout_redelivers_and_counts() {
        let q = queue(Some(3));
        q.send(vec![job(1)]).await.expect("send");
        let first = q.receive(1, Duration::ZERO).await.expect("receive");
        assert_eq!(first[0].receive_count, 1);
        let second = q.receive(1, Duration::from_secs(2)).await.expect("receive");
        assert_eq!(
            second[0].receive_count, 2,
            "visible again after the timeout"
        );
        assert!(
            q.change_visibility(&first[0].receipt, Duration::ZERO)
                .await
                .is_err(),
            "a stale receipt is refused"
        );
        q.ack(&second[0].receipt).await.expect("ack");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn nack_and_dead_letter_after_max_receives_then_redrive() {
        let q = queue(Some(2));
        q.send(vec![job(1)]).await.expect("send");
        for expected in 1..=2 {
            let got = q.receive(1, Duration::from_secs(1)).await.expect("receive");
            assert_eq!(got[0].receive_count, expected);
            q.change_visibility(&got[0].receipt, Duration::ZERO)
                .await
                .expect("nack");
        }
        assert!(
            q.receive(1, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty()
        );
        let dead = q.dead_letters(10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 2);
        assert_eq!(
            q.dead_letters(10).await.expect("again").len(),
            1,
            "listing keeps them"
        );
        assert_eq!(q.redrive().await.expect("redrive"), 1);
        let got = q.receive(1, Duration::ZERO).await.expect("receive");
        assert_eq!(got[0].receive_count, 1, "redriven messages start over");
    }

    #[tokio::test]
    async fn receive_waits_for_a_send() {
        let q = queue(None);
        let sender = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            sender.send(vec![job(1)]).await.expect("send");
        });
        let got = q.receive(1, Duration::from_secs(5)).await.expect("receive");
        assert_eq!(got.len(), 1);
    }
}
