//! The delivery engine of push-style buses; its documentation is on [`Dispatcher`].

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, watch};

use crate::backoff::Backoff;
use crate::bus::{Delivery, Message, MessageHandler, Subscription, deliver};
use crate::error::{Error, Result};
use crate::mutex::lock;

/// The adapter's side of a [`Dispatcher`]: what to tell the broker when a message ends.
#[async_trait]
pub trait Settle: Send + Sync + 'static {
    /// What the broker needs to settle one message (an ack id; `()` for the in-memory bus).
    type Receipt: Send + 'static;

    /// The handler acknowledged the message.
    async fn ack(&self, receipt: Self::Receipt);

    /// Every one of `attempts` deliveries failed; `error` is the last failure. Keep the message
    /// as a dead letter (and acknowledge it, if the broker needs that).
    async fn dead_letter(
        &self,
        receipt: Self::Receipt,
        message: &Message,
        attempts: u32,
        error: String,
    );

    /// The dispatcher closed before the message was acknowledged: give it back to the broker
    /// (Pub/Sub: nack, so it is redelivered at once) or drop it.
    async fn release(&self, receipt: Self::Receipt);
}

/// [`Dispatcher`]: how a subscription's messages reach its handler, for every bus that pushes
/// messages to the process (the in-memory bus, Google Pub/Sub, and an adapter you write).
///
/// The adapter receives a message and hands it to [`Dispatcher::dispatch`] with its *receipt*
/// (whatever the broker needs to acknowledge it: an ack id, nothing at all). The dispatcher then
/// guarantees, the same way for every adapter:
///
/// - **Ordering.** Messages with the same ordering key are handled one at a time, in the order
///   they were dispatched; the next waits while the previous one is retried. Messages without a
///   key run concurrently.
/// - **Concurrency.** At most the subscription's `max_in_flight` handler calls run at once (a
///   message waiting for its backoff holds no permit).
/// - **Retry.** A handler error or panic is retried after the subscription's
///   [`Backoff::delay`](crate::Backoff::delay), until `max_attempts` deliveries in all.
/// - **Settling.** The adapter's [`Settle`] hears how each message ended: acknowledged, dead
///   (every attempt failed, with the last error), or released (the subscription closed first).
/// - **Shutdown.** [`close`](Dispatcher::close) refuses new messages, releases the queued ones
///   and those waiting for a permit or a backoff, and lets handler calls in flight finish;
///   [`wait_idle`](Dispatcher::wait_idle) waits for them.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
/// use async_trait::async_trait;
/// use eventflow_core::bus::{Delivery, HandlerError, Message, Subscription, handler_fn};
/// use eventflow_core::extension::{Dispatcher, Settle};
///
/// /// A broker that only records how messages ended; its receipt is a message number.
/// #[derive(Default)]
/// struct Log(Mutex<Vec<String>>);
///
/// #[async_trait]
/// impl Settle for Log {
///     type Receipt = u32;
///     async fn ack(&self, receipt: u32) {
///         self.0.lock().unwrap().push(format!("ack {receipt}"));
///     }
///     async fn dead_letter(&self, receipt: u32, _: &Message, attempts: u32, error: String) {
///         self.0.lock().unwrap().push(format!("dead {receipt} after {attempts}: {error}"));
///     }
///     async fn release(&self, receipt: u32) {
///         self.0.lock().unwrap().push(format!("release {receipt}"));
///     }
/// }
///
/// let handler = handler_fn(|delivery: Delivery| async move {
///     match delivery.message.message_type.as_str() {
///         "Good" => Ok(()),
///         _ => Err(HandlerError::from("refused")),
///     }
/// });
/// let subscription = Subscription::new("audit").with_retry(eventflow_core::Backoff::none());
/// let dispatcher = Dispatcher::new("example", &subscription, handler, Log::default())?;
/// let message = |kind: &str| Message::new(kind, "test", serde_json::json!({}));
/// assert!(dispatcher.dispatch(message("Good"), 1, 1).is_ok());
/// assert!(dispatcher.dispatch(message("Bad"), 2, 1).is_ok());
/// dispatcher.wait_idle().await; // both handled and settled
/// dispatcher.close().await;
/// let mut log = dispatcher.settler().0.lock().unwrap().clone();
/// log.sort();
/// assert_eq!(log, ["ack 1", "dead 2 after 1: refused"]);
/// # Ok::<(), eventflow_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Dispatcher<S: Settle> {
    state: Arc<State<S>>,
}

struct State<S: Settle> {
    backend: &'static str,
    name: String,
    retry: Backoff,
    handler: Arc<dyn MessageHandler>,
    settle: S,
    duplicate_deliveries: AtomicBool,
    runtime: Handle,
    /// One permit per handler call in flight (`max_in_flight`); closed by `close`.
    permits: Semaphore,
    queue: Mutex<Queue<S::Receipt>>,
    /// Becomes `true` on `close`; wakes deliveries waiting for a backoff.
    closed: watch::Sender<bool>,
    /// Delivery tasks alive; `idle` is notified when it drops to zero.
    tasks: AtomicUsize,
    idle: Notify,
}

struct Queue<R> {
    closed: bool,
    /// Messages waiting behind the one being delivered, per ordering key. A key is present
    /// exactly while a task delivers that key's messages.
    keys: HashMap<String, VecDeque<Inbound<R>>>,
}

/// A dispatched message, its receipt and the attempt its first delivery counts as.
struct Inbound<R> {
    message: Message,
    receipt: R,
    attempt: u32,
}

/// How the deliveries of one message ended.
enum Outcome {
    Acknowledged,
    Failed { attempts: u32, error: String },
    Stopped,
}

impl<S: Settle> fmt::Debug for Dispatcher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("backend", &self.state.backend)
            .field("subscription", &self.state.name)
            .field("retry", &self.state.retry)
            .field("closed", &self.is_closed())
            .field("tasks", &self.state.tasks.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: Settle> Dispatcher<S> {
    /// A dispatcher of `subscription`'s messages to `handler`, settling them with `settle`.
    /// Deliveries run as tasks of the calling tokio runtime; `backend` names the adapter in
    /// traces and errors.
    ///
    /// # Errors
    /// [`Error::Backend`] when called outside a tokio runtime.
    pub fn new(
        backend: &'static str,
        subscription: &Subscription,
        handler: Arc<dyn MessageHandler>,
        settle: S,
    ) -> Result<Self> {
        let runtime = Handle::try_current().map_err(|e| Error::backend(backend, e))?;
        let permits = subscription.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Ok(Dispatcher {
            state: Arc::new(State {
                backend,
                name: subscription.name.clone(),
                retry: subscription.retry,
                handler,
                settle,
                duplicate_deliveries: AtomicBool::new(false),
                runtime,
                permits: Semaphore::new(permits),
                queue: Mutex::new(Queue {
                    closed: false,
                    keys: HashMap::new(),
                }),
                closed: watch::Sender::new(false),
                tasks: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        })
    }

    /// Delivers every acknowledged message once more (a fresh delivery from attempt 1, before
    /// the next message of its key, settled after it), as a broker does when an acknowledgement
    /// is lost: to prove handlers idempotent.
    pub fn set_duplicate_deliveries(&self, on: bool) {
        self.state.duplicate_deliveries.store(on, Ordering::Relaxed);
    }

    /// The adapter's [`Settle`].
    pub fn settler(&self) -> &S {
        &self.state.settle
    }

    /// Takes `message` for delivery, its first delivery counting as `attempt` (1 for a new
    /// message; a broker's own delivery count for a redelivered one).
    ///
    /// # Errors
    /// The receipt back once the dispatcher is closed: the adapter settles it itself.
    pub fn dispatch(
        &self,
        message: Message,
        receipt: S::Receipt,
        attempt: u32,
    ) -> std::result::Result<(), S::Receipt> {
        let state = &self.state;
        let mut queue = lock(&state.queue);
        if queue.closed {
            return Err(receipt);
        }
        let key = message.ordering_key.clone();
        let inbound = Inbound {
            message,
            receipt,
            attempt: attempt.max(1),
        };
        match key {
            None => state.spawn(Arc::clone(state).run(inbound)),
            Some(key) => match queue.keys.entry(key) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push_back(inbound),
                Entry::Vacant(entry) => {
                    let key = entry.key().clone();
                    entry.insert(VecDeque::new());
                    state.spawn(Arc::clone(state).run_key(key, inbound));
                }
            },
        }
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        *self.state.closed.borrow()
    }

    /// Refuses new messages, releases the queued ones, and wakes the deliveries waiting for a
    /// permit or a backoff (they release their messages). Handler calls in flight go on.
    pub async fn close(&self) {
        let state = &self.state;
        let queued: Vec<S::Receipt> = {
            let mut queue = lock(&state.queue);
            queue.closed = true;
            queue
                .keys
                .values_mut()
                .flat_map(std::mem::take)
                .map(|inbound| inbound.receipt)
                .collect()
        };
        state.permits.close();
        state.closed.send_replace(true);
        for receipt in queued {
            state.settle.release(receipt).await;
        }
    }

    /// Whether no delivery task is running (none in flight, none waiting to retry).
    pub fn is_idle(&self) -> bool {
        self.state.tasks.load(Ordering::Acquire) == 0
    }

    /// Waits until every delivery task has ended (after [`close`](Self::close): until the
    /// handler calls in flight have returned and their messages are settled).
    pub async fn wait_idle(&self) {
        let state = &self.state;
        loop {
            // Created before the check: `notify_waiters` wakes it even if it is not polled yet.
            let idle = state.idle.notified();
            if state.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl<S: Settle> State<S> {
    fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        let guard = TaskGuard::new(Arc::clone(self));
        self.runtime.spawn(async move {
            let _guard = guard;
            task.await;
        });
    }

    /// Delivers the messages of one ordering key, one at a time, until its queue is empty.
    async fn run_key(self: Arc<Self>, key: String, first: Inbound<S::Receipt>) {
        let mut next = Some(first);
        while let Some(inbound) = next {
            Arc::clone(&self).run(inbound).await;
            next = self.next_for_key(&key);
        }
    }

    fn next_for_key(&self, key: &str) -> Option<Inbound<S::Receipt>> {
        let mut queue = lock(&self.queue);
        let waiting = queue.keys.get_mut(key)?;
        let next = waiting.pop_front();
        if next.is_none() {
            queue.keys.remove(key);
        }
        next
    }

    /// Delivers one message (twice with duplicate deliveries) and settles it.
    async fn run(self: Arc<Self>, inbound: Inbound<S::Receipt>) {
        let Inbound {
            message,
            receipt,
            attempt,
        } = inbound;
        let outcome = match self.deliver(&message, attempt).await {
            Outcome::Acknowledged if self.duplicate_deliveries.load(Ordering::Relaxed) => {
                self.deliver(&message, 1).await
            }
            outcome => outcome,
        };
        match outcome {
            Outcome::Acknowledged => self.settle.ack(receipt).await,
            Outcome::Failed { attempts, error } => {
                self.settle
                    .dead_letter(receipt, &message, attempts, error)
                    .await;
            }
            Outcome::Stopped => self.settle.release(receipt).await,
        }
    }

    /// Delivers `message` until it is acknowledged, fails `max_attempts` times, or the
    /// dispatcher closes while it waits.
    async fn deliver(&self, message: &Message, first_attempt: u32) -> Outcome {
        let mut attempt = first_attempt;
        let mut closed = self.closed.subscribe();
        loop {
            // Fails once the semaphore is closed by `close`.
            let Ok(permit) = self.permits.acquire().await else {
                return Outcome::Stopped;
            };
            let delivery = Delivery::new(message.clone(), self.name.as_str(), attempt);
            let result = deliver(self.backend, self.handler.as_ref(), delivery).await;
            drop(permit);
            let error = match result {
                Ok(()) => return Outcome::Acknowledged,
                Err(error) => error,
            };
            if !self.retry.allows_retry_after(attempt) {
                return Outcome::Failed {
                    attempts: attempt,
                    error,
                };
            }
            tokio::select! {
                () = tokio::time::sleep(self.retry.delay(attempt)) => {}
                _ = closed.wait_for(|closed| *closed) => return Outcome::Stopped,
            }
            attempt += 1;
        }
    }
}

/// Counts a delivery task for [`Dispatcher::wait_idle`], also when the task is cancelled.
struct TaskGuard<S: Settle>(Arc<State<S>>);

impl<S: Settle> TaskGuard<S> {
    fn new(state: Arc<State<S>>) -> Self {
        state.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(state)
    }
}

impl<S: Settle> Drop for TaskGuard<S> {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
