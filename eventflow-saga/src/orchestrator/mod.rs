//! The orchestrator: the state machine's thin I/O shell over any [`EventStore`] and [`EventBus`].
//!
//! - [`builder`]: the options and backends.
//! - [`process`]: one saga transition through the core's repository, then what the state waits on.
//! - [`timers`]: one timer per saga, fired by the clock.
//! - here: the public face (start, messages, resume, operator retries, run).

mod builder;
mod process;
mod timers;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::extension::RepositoryExt;
use eventflow_core::extension::lock;
use eventflow_core::{
    DeciderRepository, Delivery, EventBus, EventStore, HandlerError, Message, MessageHandler,
    Metadata, Subscription, SubscriptionHandle,
};

pub use builder::{OrchestratorBuilder, SagaData, TriggerFn};
use process::{ShellInput, Slot};
use timers::{Timer, Timers};

use crate::clock::{Clock, add};
use crate::definition::SagaDefinition;
use crate::error::{Error, Result};
use crate::event::SagaOutcome;
use crate::index::SagaIndex;
use crate::machine::{Disposition, SagaDecider, TimerKey};
use crate::message::Reply;
use crate::query::SagaQuery;
use crate::state::SagaStatus;

/// What [`Orchestrator::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartOutcome {
    /// The saga started and its first command is sent.
    Started,
    /// A saga with this id already exists; nothing changed.
    AlreadyStarted,
}

/// What [`Orchestrator::resume`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeReport {
    /// Unfinished sagas loaded: their command in flight resent, their timer re-armed.
    pub resumed: usize,
    /// Sagas that had ended but were not yet settled in the index; now settled.
    pub settled: usize,
    /// Registered sagas with no events (a crash between registering and starting); their trigger
    /// starts them when it is redelivered.
    pub never_started: usize,
}

/// Counters of one orchestrator since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrchestratorStats {
    /// Sagas started.
    pub started: u64,
    /// Sagas that completed.
    pub completed: u64,
    /// Sagas that ended compensated.
    pub compensated: u64,
    /// Times a saga was parked as needing attention.
    pub needs_attention: u64,
    /// Commands sent (first sends, retries and resends after a restart).
    pub commands_sent: u64,
    /// Inputs ignored as duplicates.
    pub duplicates: u64,
    /// Inputs ignored as late (replies after a timeout, stale timers).
    pub late: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    needs_attention: AtomicU64,
    commands_sent: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
}

struct Inner<D> {
    definition: Arc<SagaDefinition>,
    sagas: Arc<DeciderRepository<SagaDecider>>,
    index: Arc<SagaIndex>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    source: String,
    subscription_name: String,
    trigger: Option<TriggerFn<D>>,
    query: SagaQuery,
    timer_retry_delay: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    timers: Mutex<Timers>,
    timer_changed: tokio::sync::Notify,
    finished: tokio::sync::Notify,
    counters: Counters,
    _data: PhantomData<fn() -> D>,
}

/// Runs sagas of one [`SagaDefinition`] on any [`EventStore`] + [`EventBus`].
///
/// - **Start** from a trigger message or [`start`](Self::start): `SagaRegistered` goes to its
///   shard of the [`SagaIndex`], then `SagaStarted` + `SagaStepSent` to the saga's own stream
///   through the core's [`DeciderRepository`] (an exact-version append), then the first command
///   is published.
/// - **Replies** are matched by the `saga-id`, `saga-step`, `saga-kind` and `saga-attempt`
///   attributes; duplicates and late replies change nothing.
/// - **Failure or timeout**: the completed steps are compensated in reverse order (a timed-out
///   step first: its outcome is unknown), then the `on_compensated` command runs. A failed
///   compensation is retried with backoff; when retries run out the saga is
///   [`NeedsAttention`](SagaStatus::NeedsAttention), listed by queries, until
///   [`retry_compensation`](Self::retry_compensation).
/// - **Durability**: every transition is recorded before its command is published. Deadlines are
///   stored in the events; [`resume`](Self::resume) (run by [`run`](Self::run)) reloads every
///   unfinished saga (found through the index's compacted open sets), resends its command in
///   flight (participants deduplicate by idempotency key) and re-arms its timer, so a new process
///   picks up where a crashed one stopped. A saga another orchestrator moved is treated the same
///   way when this one next touches it.
///
/// Clones share the same orchestrator. See the crate docs for a complete example.
pub struct Orchestrator<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for Orchestrator<D> {
    fn clone(&self) -> Self {
        Orchestrator {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D> fmt::Debug for Orchestrator<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("saga_type", &self.inner.definition.name)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl<D: SagaData> Orchestrator<D> {
    /// Starts building an orchestrator for `definition` over `store` and `bus`.
    pub fn builder(
        definition: SagaDefinition,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn EventBus>,
    ) -> OrchestratorBuilder<D> {
        OrchestratorBuilder::new(definition, store, bus)
    }

    /// The definition it runs.
    pub fn definition(&self) -> &SagaDefinition {
        &self.inner.definition
    }

    /// Queries over its sagas (state, history, lists by status).
    pub fn query(&self) -> &SagaQuery {
        &self.inner.query
    }

    /// Its counters.
    pub fn stats(&self) -> OrchestratorStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OrchestratorStats {
            started: get(&c.started),
            completed: get(&c.completed),
            compensated: get(&c.compensated),
            needs_attention: get(&c.needs_attention),
            commands_sent: get(&c.commands_sent),
            duplicates: get(&c.duplicates),
            late: get(&c.late),
        }
    }

    /// Waits until this orchestrator has ended at least `count` sagas (completed + compensated).
    pub async fn wait_finished(&self, count: u64) {
        loop {
            let notified = self.inner.finished.notified();
            let s = self.stats();
            if s.completed + s.compensated >= count {
                return;
            }
            notified.await;
        }
    }

    /// Starts saga `saga_id` with `data`. The metadata's correlation id is carried by every event
    /// and command of the saga. Starting an existing saga changes nothing.
    pub async fn start(&self, saga_id: &str, data: &D, metadata: Metadata) -> Result<StartOutcome> {
        if saga_id.is_empty() {
            return Err(Error::Core(eventflow_core::Error::InvalidRequest(
                "saga id is empty".into(),
            )));
        }
        let data = serde_json::to_value(data)
            .map_err(|e| Error::serialization(format!("data of saga {saga_id}"), e))?;
        let input = ShellInput::Start { data, metadata };
        match self.process(saga_id, input, None).await? {
            Disposition::Applied => Ok(StartOutcome::Started),
            _ => Ok(StartOutcome::AlreadyStarted),
        }
    }

    /// Handles one message from the bus: a trigger starts a saga, a reply moves one. Messages
    /// that are not for this saga type are ignored (`Ok(Disposition::Ignored)`).
    ///
    /// An `Err` means the message should be redelivered (store or bus failure), or, for a
    /// malformed saga message, dead-lettered.
    pub async fn handle_message(&self, message: &Message) -> Result<Disposition> {
        let definition = &self.inner.definition;
        if definition.trigger.as_deref() == Some(message.message_type.as_str())
            && let Some(trigger) = &self.inner.trigger
        {
            let Some((saga_id, data)) = trigger(message)? else {
                return Ok(Disposition::Ignored);
            };
            let mut metadata = Metadata::new().with_causation_id(message.id.as_str());
            metadata.correlation_id = message.correlation_id().map(str::to_owned);
            metadata.traceparent = message.traceparent().map(str::to_owned);
            let data = serde_json::to_value(&data)
                .map_err(|e| Error::serialization(format!("data of saga {saga_id}"), e))?;
            let input = ShellInput::Start { data, metadata };
            return self.process(&saga_id, input, Some(&message.id)).await;
        }
        let Some(reply) = Reply::parse(message, &definition.name)? else {
            return Ok(Disposition::Ignored);
        };
        let saga_id = reply.saga_id.clone();
        self.process(&saga_id, ShellInput::Reply(reply), Some(&message.id))
            .await
    }

    /// Fires every timer due by the clock's now: step timeouts, compensation timeouts and
    /// compensation retries. Returns how many fired. A timer whose handling fails is re-armed
    /// after the retry delay.
    pub async fn fire_due_timers(&self) -> usize {
        let now = self.inner.clock.now();
        let due = lock(&self.inner.timers).take_due(now);
        let mut fired = 0;
        for (_, saga_id, key) in due {
            let result = match key {
                TimerKey::Reload => self.reload(&saga_id).await.map(|_| Disposition::Ignored),
                ref key => {
                    self.process(&saga_id, ShellInput::Timer(key.clone()), None)
                        .await
                }
            };
            match result {
                Ok(_) => fired += 1,
                Err(error) => {
                    tracing::warn!(%saga_id, %error, "saga timer failed; will retry");
                    let retry_at = add(self.inner.clock.now(), self.inner.timer_retry_delay);
                    let mut timers = lock(&self.inner.timers);
                    if !timers.has(&saga_id) {
                        timers.set(&saga_id, Some((retry_at, key)));
                    }
                }
            }
        }
        fired
    }

    /// When the next timer is due, if any.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        lock(&self.inner.timers).next()
    }

    /// Loads every unfinished saga from the store: resends its command in flight and re-arms its
    /// timer (deadlines that passed while no orchestrator ran fire on the next
    /// [`fire_due_timers`](Self::fire_due_timers)). Idempotent; [`run`](Self::run) calls it.
    pub async fn resume(&self) -> Result<ResumeReport> {
        let mut report = ResumeReport::default();
        for saga_id in self.inner.index.unfinished().await? {
            match self.reload(&saga_id).await? {
                None => report.never_started += 1,
                Some(status) if status.is_terminal() => report.settled += 1,
                Some(_) => report.resumed += 1,
            }
        }
        tracing::info!(
            saga_type = %self.inner.definition.name,
            resumed = report.resumed,
            settled = report.settled,
            never_started = report.never_started,
            "sagas resumed"
        );
        Ok(report)
    }

    /// Loads a saga if this process does not hold it (resending what is in flight, re-arming its
    /// timer); settles it in the index if it has ended. Returns its status (`None`: never started).
    async fn reload(&self, saga_id: &str) -> Result<Option<SagaStatus>> {
        let slot = self.slot(saga_id);
        let known = {
            let mut known = slot.lock().await;
            let loaded = self
                .process_locked(saga_id, &mut known, ShellInput::Load, None)
                .await;
            if let Err(error) = loaded {
                drop(known);
                self.after_failure(saga_id);
                return Err(error);
            }
            known.clone()
        };
        let Some(known) = known else {
            return Ok(None);
        };
        if known.is_done() {
            self.release(saga_id, &slot);
        }
        if let Some(status) = known.status
            && status.is_terminal()
        {
            let outcome = if status == SagaStatus::Completed {
                SagaOutcome::Completed
            } else {
                SagaOutcome::Compensated
            };
            self.inner
                .index
                .settle(saga_id, outcome, known.failure)
                .await?;
        }
        Ok(known.status)
    }

    /// After a failure that left the saga's state unknown (the write may have happened, a command
    /// may not have been sent): reload it soon, whatever else happens. Without this, a saga whose
    /// last input will not come again (an operator's retry, a timer) could wait for a restart.
    fn after_failure(&self, saga_id: &str) {
        let at = add(self.inner.clock.now(), self.inner.timer_retry_delay);
        self.set_timer(saga_id, Some((at, TimerKey::Reload)));
    }

    /// Retries the parked compensation of a saga that [needs attention](SagaStatus::NeedsAttention),
    /// with a fresh round of attempts (e.g. after an operator fixed the participant).
    pub async fn retry_compensation(
        &self,
        saga_id: &str,
        requested_by: Option<&str>,
    ) -> Result<()> {
        let disposition = self
            .process(saga_id, ShellInput::Retry { requested_by }, None)
            .await?;
        if disposition == Disposition::Applied {
            return Ok(());
        }
        match self.inner.query.get(saga_id).await? {
            None => Err(Error::UnknownSaga {
                saga_id: saga_id.to_owned(),
            }),
            Some(state) => Err(Error::InvalidState {
                saga_id: saga_id.to_owned(),
                status: state.status.unwrap_or(SagaStatus::Running),
                reason: "only a saga that needs attention can have its compensation retried",
            }),
        }
    }

    /// The subscription the orchestrator needs: its name and a filter on the trigger and every
    /// reply type of the definition.
    pub fn subscription(&self) -> Subscription {
        let mut filter = eventflow_core::Filter::all();
        let definition = &self.inner.definition;
        if let Some(trigger) = &definition.trigger
            && self.inner.trigger.is_some()
        {
            filter = filter.message_type(trigger.as_str());
        }
        for reply in definition.reply_types() {
            filter = filter.message_type(reply);
        }
        Subscription::new(self.inner.subscription_name.as_str()).with_filter(filter)
    }

    /// Subscribes the orchestrator to the bus with [`subscription`](Self::subscription). Use it
    /// with [`resume`](Self::resume) and [`run_timers`](Self::run_timers) to run the parts
    /// yourself; [`run`](Self::run) does all three.
    pub async fn subscribe(&self) -> Result<SubscriptionHandle> {
        Ok(self
            .inner
            .bus
            .subscribe(self.subscription(), Arc::new(self.clone()))
            .await?)
    }

    /// Subscribes to the bus, resumes unfinished sagas, and fires timers until `shutdown`
    /// resolves; then unsubscribes. A failing resume is retried every few seconds.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let handle = self.subscribe().await?;
        tokio::pin!(shutdown);
        loop {
            match self.resume().await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "could not resume sagas; retrying");
                    tokio::select! {
                        () = &mut shutdown => {
                            handle.unsubscribe().await;
                            return Ok(());
                        }
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
        self.run_timers(&mut shutdown).await;
        handle.unsubscribe().await;
        Ok(())
    }

    /// Fires timers as they fall due, until `shutdown` resolves. Sleeps until the next deadline by
    /// the clock (at most a second, so a [`ManualClock`](crate::ManualClock) moved by a test is noticed).
    pub async fn run_timers(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.fire_due_timers().await;
            let now = self.inner.clock.now();
            let wait = self
                .next_deadline()
                .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
                () = self.inner.timer_changed.notified() => {}
            }
        }
    }

    fn slot(&self, saga_id: &str) -> Slot {
        let mut slots = lock(&self.inner.slots);
        Arc::clone(slots.entry(saga_id.to_owned()).or_default())
    }

    /// Drops a saga that ended (or never started) from memory, unless its slot was replaced.
    fn release(&self, saga_id: &str, slot: &Slot) {
        let mut slots = lock(&self.inner.slots);
        if slots.get(saga_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(saga_id);
            self.inner.sagas.evict(saga_id);
        }
    }

    fn set_timer(&self, saga_id: &str, timer: Option<Timer>) {
        let notify = timer.is_some();
        lock(&self.inner.timers).set(saga_id, timer);
        if notify {
            self.inner.timer_changed.notify_one();
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl<D: SagaData> MessageHandler for Orchestrator<D> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.handle_message(&delivery.message)
            .await
            .map(|_| ())
            .map_err(HandlerError::from)
    }
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Orchestrator<serde_json::Value>>();
};
