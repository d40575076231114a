//! [`Worker`]: runs a [`MessageHandler`] over a [`WorkQueue`] with bounded concurrency.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::bus::{Delivery, Filter, MessageHandler, SubscriptionHandle};
use crate::error::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::{ReceivedMessage, WorkQueue};

/// Pauses between failed receives: 400 ms doubling to at most 10 s, for as long as it takes.
const RECEIVE_RETRY: Backoff = Backoff::new(
    u32::MAX,
    Duration::from_millis(400),
    Duration::from_secs(10),
);
/// How a [`Worker`] consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// At most this many handler calls at once (default 16).
    pub max_in_flight: usize,
    /// The delay before a failed message becomes visible again: `retry.delay(receive count)`.
    /// The *number* of attempts is the queue's (`max_receives`, its redrive policy): on the last
    /// one a failed message is made visible at once so that it moves to the dead-letter queue
    /// without waiting for a backoff.
    pub retry: Backoff,
    /// How long one receive waits for messages (a long poll; default 10 s). Stopping the worker
    /// lets the receive in progress finish and handles what it returned, so this bounds how long
    /// [`SubscriptionHandle::unsubscribe`] takes (plus the handler calls in flight).
    pub wait_time: Duration,
    /// Messages the filter rejects are acknowledged without calling the handler.
    pub filter: Filter,
    /// At most this many messages per receive (default 10, the SQS maximum).
    pub batch_size: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            max_in_flight: 16,
            retry: Backoff::default(),
            wait_time: Duration::from_secs(10),
            filter: Filter::all(),
            batch_size: 10,
        }
    }
}

impl WorkerOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many handler calls run at once.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// Sets the backoff between deliveries.
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// Sets how long a receive waits.
    pub fn with_wait_time(mut self, wait_time: Duration) -> Self {
        self.wait_time = wait_time;
        self
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets how many messages one receive asks for.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.clamp(1, 10);
        self
    }
}

/// Consumes a [`WorkQueue`]: receives with a long poll while it has capacity, calls the handler
/// for each message (at most `max_in_flight` at once), deletes on `Ok`, and on `Err` hides the
/// message for the retry backoff so the queue redelivers it. While a handler runs longer than half
/// the visibility timeout, the worker extends the message's visibility. Several workers (in one
/// process or many) on the same queue are competing consumers.
///
/// [`Delivery::attempt`] is the queue's receive count and [`Delivery::subscription`] the queue's
/// name.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use eventflow_core::InMemoryWorkQueue;
/// use eventflow_core::work_queue::{QueueSettings, WorkQueue, Worker, WorkerOptions};
/// use eventflow_core::bus::{handler_fn, Delivery, HandlerError};
/// use eventflow_core::Message;
///
/// let queue = Arc::new(InMemoryWorkQueue::new(QueueSettings::new("emails")));
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let worker = Worker::new(queue.clone(), handler_fn(move |d: Delivery| {
///     let tx = tx.clone();
///     async move { tx.send(d.message.payload)?; Ok::<(), HandlerError>(()) }
/// }))
/// .with_options(WorkerOptions::new().with_wait_time(Duration::from_millis(200)))
/// .start()?;
/// queue.send(vec![Message::new("SendEmail", "notification", serde_json::json!({"to": "a@b.c"}))])
///     .await?;
/// assert_eq!(rx.recv().await, Some(serde_json::json!({"to": "a@b.c"})));
/// worker.unsubscribe().await;
/// # Ok::<(), eventflow_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    handler: Arc<dyn MessageHandler>,
    options: WorkerOptions,
    backend: &'static str,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", self.queue.settings())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `queue` calling `handler`, with the default options.
    pub fn new(queue: Arc<dyn WorkQueue>, handler: Arc<dyn MessageHandler>) -> Self {
        Worker {
            queue,
            handler,
            options: WorkerOptions::default(),
            backend: "work queue",
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Names the backend in the delivery spans and logs (default `"work queue"`).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// Starts consuming on the current tokio runtime. The handle's
    /// [`unsubscribe`](SubscriptionHandle::unsubscribe) stops receiving, lets the receive in
    /// progress and the handler calls in flight finish, and returns.
    pub fn start(self) -> Result<SubscriptionHandle> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| Error::backend(self.backend, e))?;
        let name = self.queue.settings().name.clone();
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(Arc::new(self).run(stopped));
        Ok(SubscriptionHandle::new(name, move || async move {
            stop.send_replace(true);
            if let Err(error) = task.await {
                tracing::error!(%error, "work queue worker task failed");
            }
        }))
    }

    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let name = self.queue.settings().name.clone();
        tracing::info!(queue = %name, backend = self.backend, "worker started");
        let permits = Arc::new(Semaphore::new(
            self.options.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut tasks = JoinSet::new();
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}
            if *stopped.borrow() {
                break;
            }
            // Receive only what we can handle now: a received message is hidden from the other
            // consumers, so it must not wait here for a permit.
            let first = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let mut held = vec![first];
            while held.len() < self.options.batch_size.clamp(1, 10) {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => held.push(permit),
                    Err(_) => break,
                }
            }
            // Not cancelled by a stop: what the queue hands out here is handled (see `wait_time`).
            let received = match self.queue.receive(held.len(), self.options.wait_time).await {
                Ok(received) => {
                    failures = 0;
                    received
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause = RECEIVE_RETRY.delay(failures);
                    tracing::warn!(queue = %name, %error, ?pause, "receive failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                    continue;
                }
            };
            for message in received {
                let Some(permit) = held.pop() else {
                    // The queue returned more than asked for: handle it anyway, without a permit
                    // of its own, rather than leave it hidden.
                    tracing::warn!(queue = %name, "receive returned more messages than asked for");
                    tasks.spawn(Arc::clone(&self).process(message, None));
                    continue;
                };
                tasks.spawn(Arc::clone(&self).process(message, Some(permit)));
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(queue = %name, "worker stopped");
    }

    async fn process(
        self: Arc<Self>,
        received: ReceivedMessage,
        _permit: Option<OwnedSemaphorePermit>,
    ) {
        let ReceivedMessage {
            message,
            receipt,
            receive_count,
        } = received;
        let settings = self.queue.settings();
        if !self.options.filter.matches(&message) {
            tracing::debug!(queue = %settings.name, message_id = %message.id, "filtered out; acknowledged");
            if let Err(error) = self.queue.ack(&receipt).await {
                tracing::warn!(queue = %settings.name, %error, "ack of a filtered message failed");
            }
            return;
        }
        let message_id = message.id.clone();
        let delivery = Delivery::new(message, &settings.name, receive_count);
        let handled = crate::bus::deliver(self.backend, self.handler.as_ref(), delivery);
        tokio::pin!(handled);

        // Extend the visibility while the handler runs, so a slow handler keeps its message.
        let visibility = settings.visibility_timeout;
        let period = (visibility / 2).max(Duration::from_millis(10));
        let outcome = loop {
            tokio::select! {
                outcome = &mut handled => break outcome,
                () = tokio::time::sleep(period) => {
                    if let Err(error) = self.queue.change_visibility(&receipt, visibility).await {
                        tracing::warn!(queue = %settings.name, %message_id, %error, "could not extend the visibility timeout");
                    }
                }
            }
        };

        match outcome {
            Ok(()) => {
                if let Err(error) = self.queue.ack(&receipt).await {
                    // The message becomes visible again and is redelivered: at least once.
                    tracing::warn!(queue = %settings.name, %message_id, %error, "ack failed; the message will be redelivered");
                }
            }
            Err(_) => {
                let last = settings
                    .max_receives
                    .is_some_and(|max| receive_count >= max);
                let delay = if last {
                    Duration::ZERO
                } else {
                    self.options.retry.delay(receive_count)
                };
                tracing::debug!(queue = %settings.name, %message_id, receive_count, ?delay, last, "handler failed; redelivering after a backoff");
                if let Err(error) = self.queue.change_visibility(&receipt, delay).await {
                    tracing::warn!(queue = %settings.name, %message_id, %error, "could not schedule the redelivery; the visibility timeout will");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::bus::{HandlerError, Message, handler_fn};
    use crate::memory::InMemoryWorkQueue;
    use crate::work_queue::{DeadLetterQueue, QueueSettings};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poison_message_ends_in_the_dead_letter_queue_after_max_receives() {
        let queue = Arc::new(InMemoryWorkQueue::new(
            QueueSettings::new("jobs").with_max_receives(Some(3)),
        ));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&attempts);
        let handler = handler_fn(move |d: Delivery| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((d.message.message_type.clone(), d.attempt));
                if d.message.message_type == "Poison" {
                    Err(HandlerError::msg("poison"))
                } else {
                    Ok(())
                }
            }
        });
        let retry = Backoff::new(3, Duration::from_millis(10), Duration::from_millis(50));
        let worker = Worker::new(queue.clone(), handler)
            .with_options(
                WorkerOptions::new()
                    .with_retry(retry)
                    .with_wait_time(Duration::from_millis(100)),
            )
            .start()
            .expect("start");
        queue
            .send(vec![
                Message::new("Poison", "t", json!({})),
                Message::new("Fine", "t", json!({})),
            ])
            .await
            .expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queue.dead_letters(10).await.expect("list").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.unsubscribe().await;
        let attempts = attempts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let poison: Vec<u32> = attempts
            .iter()
            .filter(|(t, _)| t == "Poison")
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(poison, [1, 2, 3]);
        assert!(attempts.iter().any(|(t, _)| t == "Fine"));
        assert!(queue.is_empty());
    }
}
