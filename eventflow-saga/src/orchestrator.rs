//! The orchestrator: the state machine's thin I/O shell over any [`EventStore`] and [`EventBus`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::bus::attributes as core_attributes;
use eventflow_core::{
    AppendRequest, Delivery, EventBus, EventStore, ExpectedVersion, HandlerError, Message,
    MessageHandler, Metadata, NewEvent, Subscription, SubscriptionHandle,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::clock::{Clock, SystemClock, add};
use crate::definition::SagaDefinition;
use crate::error::{Error, Result};
use crate::event::{CompensationTarget, IndexEvent, SagaOutcome};
use crate::machine::{self, Disposition, Effect, Input, Outgoing, TimerKey};
use crate::message::{CommandKind, Reply, SagaCommand, attributes, idempotency_key};
use crate::query::{SagaQuery, index_stream, saga_stream};
use crate::state::{SagaState, SagaStatus};

/// Saga data: the typed payload a saga carries (for PlaceOrder: order id, items, amount, address).
/// Any serde type that is `Send + Sync + 'static` qualifies.
pub trait SagaData: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SagaData for T {}

/// Maps a trigger message to the saga it starts: `Ok(None)` ignores the message.
pub type TriggerFn<D> = Arc<dyn Fn(&Message) -> Result<Option<(String, D)>> + Send + Sync>;

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

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A loaded saga and its stream version. `None` in a slot means "not loaded": the next input loads
/// it, and loading resends what is in flight.
struct Cached {
    state: SagaState,
    version: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Timers: at most one per saga (its step deadline, compensation deadline or retry time).
#[derive(Default)]
struct Timers {
    queue: BTreeSet<(DateTime<Utc>, String, TimerKey)>,
    by_saga: HashMap<String, (DateTime<Utc>, TimerKey)>,
}

impl Timers {
    fn set(&mut self, saga_id: &str, timer: Option<(DateTime<Utc>, TimerKey)>) {
        if let Some((at, key)) = self.by_saga.remove(saga_id) {
            self.queue.remove(&(at, saga_id.to_owned(), key));
        }
        if let Some((at, key)) = timer {
            self.queue.insert((at, saga_id.to_owned(), key.clone()));
            self.by_saga.insert(saga_id.to_owned(), (at, key));
        }
    }

    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, String, TimerKey)> {
        let mut due = Vec::new();
        while let Some(first) = self.queue.first() {
            if first.0 > now {
                break;
            }
            if let Some(entry) = self.queue.pop_first() {
                self.by_saga.remove(&entry.1);
                due.push(entry);
            }
        }
        due
    }
}

enum ShellInput<'a> {
    Start {
        data: Value,
        metadata: &'a Metadata,
    },
    Reply(&'a Reply),
    Timer(TimerKey),
    Retry {
        requested_by: Option<&'a str>,
    },
    /// Only make sure the saga is loaded (resending what is in flight).
    Load,
}

impl ShellInput<'_> {
    fn name(&self) -> &'static str {
        match self {
            ShellInput::Start { .. } => "start",
            ShellInput::Reply(_) => "reply",
            ShellInput::Timer(_) => "timer",
            ShellInput::Retry { .. } => "retry",
            ShellInput::Load => "resume",
        }
    }
}

struct Inner<D> {
    definition: Arc<SagaDefinition>,
    store: Arc<dyn EventStore>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    source: String,
    subscription_name: String,
    trigger: Option<TriggerFn<D>>,
    query: SagaQuery,
    max_conflict_retries: u32,
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
/// - **Start** from a trigger message or [`start`](Self::start): `SagaRegistered` goes to the index
///   stream, then `SagaStarted` + `SagaStepSent` to the saga's own stream (one atomic append with
///   [`ExpectedVersion::Exact`]), then the first command is published.
/// - **Replies** are matched by the `saga-id`, `saga-step`, `saga-kind` and `saga-attempt`
///   attributes; duplicates and late replies change nothing.
/// - **Failure or timeout**: the completed steps are compensated in reverse order (a timed-out
///   step first: its outcome is unknown), then the `on_compensated` command runs. A failed
///   compensation is retried with backoff; when retries run out the saga is
///   [`NeedsAttention`](SagaStatus::NeedsAttention), listed by queries, until
///   [`retry_compensation`](Self::retry_compensation).
/// - **Durability**: every transition is recorded before its command is published. Deadlines are
///   stored in the events; [`resume`](Self::resume) (run by [`run`](Self::run)) reloads every
///   unfinished saga, resends its command in flight (participants deduplicate by idempotency key)
///   and re-arms its timer, so a new process picks up where a crashed one stopped.
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

/// Builds an [`Orchestrator`].
#[must_use]
pub struct OrchestratorBuilder<D> {
    definition: SagaDefinition,
    store: Arc<dyn EventStore>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    source: Option<String>,
    subscription_name: Option<String>,
    trigger: Option<TriggerFn<D>>,
    max_conflict_retries: u32,
    timer_retry_delay: Duration,
}

impl<D> fmt::Debug for OrchestratorBuilder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field("saga_type", &self.definition.name)
            .finish_non_exhaustive()
    }
}

impl<D: SagaData> OrchestratorBuilder<D> {
    /// Uses `clock` for deadlines (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The `source` of the commands it publishes (default `"saga-{name}"`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The name of its bus subscription (default `"saga-{name}"`). Orchestrator processes that
    /// share a name compete for replies, like consumers of one queue.
    pub fn subscription_name(mut self, name: impl Into<String>) -> Self {
        self.subscription_name = Some(name.into());
        self
    }

    /// Maps trigger messages (of the definition's `triggered_by` type) to `(saga id, data)`.
    ///
    /// Default: the payload deserialises as `D` and the saga id is the message id, so a redelivered
    /// trigger starts nothing new.
    pub fn trigger(
        mut self,
        map: impl Fn(&Message) -> Result<Option<(String, D)>> + Send + Sync + 'static,
    ) -> Self {
        self.trigger = Some(Arc::new(map));
        self
    }

    /// How many times an input is retried after a version conflict (another orchestrator wrote
    /// the saga first); default 5.
    pub fn max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// How long to wait before retrying a timer whose handling failed (default 1 s).
    pub fn timer_retry_delay(mut self, delay: Duration) -> Self {
        self.timer_retry_delay = delay;
        self
    }

    /// Checks the definition and builds the orchestrator.
    pub fn build(self) -> Result<Orchestrator<D>> {
        self.definition.validate()?;
        let name = self.definition.name.clone();
        let trigger = match (self.trigger, &self.definition.trigger) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => Some(default_trigger::<D>()),
            (None, None) => None,
        };
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                query: SagaQuery::new(Arc::clone(&self.store), name.clone()),
                definition: Arc::new(self.definition),
                store: self.store,
                bus: self.bus,
                clock: self.clock,
                source: self.source.unwrap_or_else(|| format!("saga-{name}")),
                subscription_name: self
                    .subscription_name
                    .unwrap_or_else(|| format!("saga-{name}")),
                trigger,
                max_conflict_retries: self.max_conflict_retries,
                timer_retry_delay: self.timer_retry_delay,
                slots: Mutex::new(HashMap::new()),
                timers: Mutex::new(Timers::default()),
                timer_changed: tokio::sync::Notify::new(),
                finished: tokio::sync::Notify::new(),
                counters: Counters::default(),
                _data: PhantomData,
            }),
        })
    }
}

fn default_trigger<D: SagaData>() -> TriggerFn<D> {
    Arc::new(|message: &Message| {
        let data = serde_json::from_value(message.payload.clone())
            .map_err(|e| Error::serialization(format!("trigger {} as saga data", message.id), e))?;
        Ok(Some((message.id.clone(), data)))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The timer a saga in `state` waits for, if any.
fn timer_of(state: &SagaState) -> Option<(DateTime<Utc>, TimerKey)> {
    machine::pending_effects(state)
        .into_iter()
        .find_map(|e| match e {
            Effect::Timer(at, key) => Some((at, key)),
            _ => None,
        })
}

impl<D: SagaData> Orchestrator<D> {
    /// Starts building an orchestrator for `definition` over `store` and `bus`.
    pub fn builder(
        definition: SagaDefinition,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn EventBus>,
    ) -> OrchestratorBuilder<D> {
        OrchestratorBuilder {
            definition,
            store,
            bus,
            clock: Arc::new(SystemClock),
            source: None,
            subscription_name: None,
            trigger: None,
            max_conflict_retries: 5,
            timer_retry_delay: Duration::from_secs(1),
        }
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
        let input = ShellInput::Start {
            data,
            metadata: &metadata,
        };
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
            let input = ShellInput::Start {
                data,
                metadata: &metadata,
            };
            return self.process(&saga_id, input, Some(&message.id)).await;
        }
        let Some(reply) = Reply::parse(message, &definition.name)? else {
            return Ok(Disposition::Ignored);
        };
        self.process(&reply.saga_id, ShellInput::Reply(&reply), Some(&message.id))
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
                    if !timers.by_saga.contains_key(&saga_id) {
                        timers.set(&saga_id, Some((retry_at, key)));
                    }
                }
            }
        }
        fired
    }

    /// When the next timer is due, if any.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        lock(&self.inner.timers).queue.first().map(|t| t.0)
    }

    /// Loads every unfinished saga from the store: resends its command in flight and re-arms its
    /// timer (deadlines that passed while no orchestrator ran fire on the next
    /// [`fire_due_timers`](Self::fire_due_timers)). Idempotent; [`run`](Self::run) calls it.
    pub async fn resume(&self) -> Result<ResumeReport> {
        let index = self.inner.query.index().await?;
        let mut report = ResumeReport::default();
        let unsettled: Vec<String> = index.unsettled().cloned().collect();
        for saga_id in unsettled {
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
        let (status, failure) = {
            let mut guard = slot.lock().await;
            let loaded = self
                .process_locked(saga_id, &mut guard, &ShellInput::Load, None)
                .await;
            if let Err(error) = loaded {
                drop(guard);
                self.after_failure(saga_id);
                return Err(error);
            }
            match guard.as_ref() {
                Some(c) => (c.state.status, c.state.failure.clone()),
                None => (None, None),
            }
        };
        if status.is_none_or(SagaStatus::is_terminal) {
            self.drop_slot(saga_id);
        }
        if let Some(status) = status
            && status.is_terminal()
        {
            let outcome = if status == SagaStatus::Completed {
                SagaOutcome::Completed
            } else {
                SagaOutcome::Compensated
            };
            self.settle(saga_id, outcome, failure).await?;
        }
        Ok(status)
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

    fn drop_slot(&self, saga_id: &str) {
        lock(&self.inner.slots).remove(saga_id);
    }

    fn set_timer(&self, saga_id: &str, timer: Option<(DateTime<Utc>, TimerKey)>) {
        let notify = timer.is_some();
        lock(&self.inner.timers).set(saga_id, timer);
        if notify {
            self.inner.timer_changed.notify_one();
        }
    }

    async fn process(
        &self,
        saga_id: &str,
        input: ShellInput<'_>,
        causation: Option<&str>,
    ) -> Result<Disposition> {
        let span = tracing::info_span!(
            "eventflow.saga",
            saga_id = %saga_id,
            saga_type = %self.inner.definition.name,
            input = input.name(),
            step = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
        );
        if let ShellInput::Reply(reply) = &input {
            span.record("step", reply.step.as_str());
        }
        async {
            let slot = self.slot(saga_id);
            let mut guard = slot.lock().await;
            let result = self
                .process_locked(saga_id, &mut guard, &input, causation)
                .await;
            let finished = match guard.as_ref() {
                Some(c) => c.state.status.is_none_or(SagaStatus::is_terminal),
                None => false,
            };
            let unknown = guard.is_none();
            drop(guard);
            if result.is_err() && unknown {
                self.after_failure(saga_id);
            }
            if finished {
                let mut slots = lock(&self.inner.slots);
                if slots.get(saga_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(saga_id);
                }
            }
            match result {
                Ok(Disposition::Duplicate) => bump(&self.inner.counters.duplicates),
                Ok(Disposition::Late) => bump(&self.inner.counters.late),
                _ => {}
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn process_locked(
        &self,
        saga_id: &str,
        cached: &mut Option<Cached>,
        input: &ShellInput<'_>,
        causation: Option<&str>,
    ) -> Result<Disposition> {
        let inner = &self.inner;
        let mut conflicts = 0;
        loop {
            let entry = match cached {
                Some(entry) => entry,
                None => {
                    let (state, version) = inner.query.load(saga_id).await?;
                    let entry = cached.insert(Cached { state, version });
                    // Loaded, not written by this process: redo what may not have happened.
                    if let Err(error) = self.restore(saga_id, &entry.state).await {
                        *cached = None;
                        return Err(error);
                    }
                    entry
                }
            };
            if let Some(id) = &entry.state.correlation_id {
                tracing::Span::current().record("correlation_id", id.as_str());
            }
            let now = inner.clock.now();
            let machine_input = match input {
                ShellInput::Start { data, metadata } => Input::Start {
                    data,
                    correlation_id: metadata.correlation_id.as_deref(),
                },
                ShellInput::Reply(reply) => Input::Reply(reply),
                ShellInput::Timer(key) => Input::Timer(key),
                ShellInput::Retry { requested_by } => Input::RetryCompensation {
                    requested_by: *requested_by,
                },
                ShellInput::Load => return Ok(Disposition::Ignored),
            };
            let decision = machine::decide(&inner.definition, &entry.state, machine_input, now);
            if decision.events.is_empty() {
                tracing::debug!(disposition = ?decision.disposition, "input changed nothing");
                return Ok(decision.disposition);
            }
            if let ShellInput::Start { .. } = input {
                // Registered before the saga's first event, so `resume` can always find it.
                self.append_index(IndexEvent::Registered {
                    saga_id: saga_id.to_owned(),
                })
                .await?;
            }
            let mut metadata = match input {
                ShellInput::Start { metadata, .. } => (*metadata).clone(),
                _ => Metadata::new(),
            };
            if metadata.correlation_id.is_none() {
                metadata
                    .correlation_id
                    .clone_from(&entry.state.correlation_id);
            }
            if let Some(causation) = causation {
                metadata.causation_id = Some(causation.to_owned());
            }
            let new_events = decision
                .events
                .iter()
                .map(|e| NewEvent::encode(e, metadata.clone()))
                .collect::<eventflow_core::Result<Vec<_>>>()?;
            let request = AppendRequest::new(
                saga_stream(&inner.definition.name, saga_id),
                ExpectedVersion::Exact(entry.version),
                new_events,
            );
            match inner.store.append(request).await {
                Ok(result) => {
                    if let ShellInput::Start { .. } = input {
                        bump(&inner.counters.started);
                    }
                    for event in &decision.events {
                        entry.state.apply(event);
                    }
                    entry.version = result.last_version;
                    let effects = machine::effects(&decision.events);
                    if let Err(error) = self.execute(saga_id, &entry.state, &effects).await {
                        // Recorded but not (all) sent: forget the state so the next input reloads
                        // it and resends.
                        *cached = None;
                        return Err(error);
                    }
                    return Ok(decision.disposition);
                }
                Err(eventflow_core::Error::Conflict { .. })
                    if conflicts < inner.max_conflict_retries =>
                {
                    conflicts += 1;
                    tracing::debug!(conflicts, "saga written concurrently; reloading");
                    *cached = None;
                }
                Err(error) => {
                    // The append may or may not have happened: reload next time.
                    *cached = None;
                    return Err(error.into());
                }
            }
        }
    }

    /// After loading a saga this process did not write: resend its command in flight, re-arm its
    /// timer.
    async fn restore(&self, saga_id: &str, state: &SagaState) -> Result<()> {
        let effects = machine::pending_effects(state);
        if !effects.is_empty() {
            tracing::info!(%saga_id, status = ?state.status, "saga loaded; resending what is in flight");
        }
        self.execute(saga_id, state, &effects).await
    }

    async fn execute(&self, saga_id: &str, state: &SagaState, effects: &[Effect]) -> Result<()> {
        let mut messages = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(outgoing) => {
                    if let Some(message) = self.command_message(state, *outgoing)? {
                        messages.push(message);
                    }
                }
                // A saga has one timer at a time; it is set from the state below.
                Effect::Timer(..) => {}
                Effect::NeedsAttention => {
                    bump(&self.inner.counters.needs_attention);
                    tracing::error!(
                        %saga_id,
                        reason = state.attention.as_deref().unwrap_or(""),
                        "saga needs attention: a compensation cannot finish"
                    );
                }
                Effect::Finished(_) => {}
            }
        }
        if !messages.is_empty() {
            let count = messages.len() as u64;
            for message in &messages {
                let span = tracing::info_span!(
                    "eventflow.saga.step",
                    saga_id = %saga_id,
                    saga_type = %self.inner.definition.name,
                    step = message.attribute(attributes::STEP).unwrap_or(""),
                    kind = message.attribute(attributes::KIND).unwrap_or(""),
                    attempt = message.attribute(attributes::ATTEMPT).unwrap_or(""),
                    correlation_id = message.correlation_id().unwrap_or(""),
                );
                span.in_scope(|| {
                    tracing::info!(command = %message.message_type, "saga command sent");
                });
            }
            self.inner.bus.publish(messages).await?;
            self.inner
                .counters
                .commands_sent
                .fetch_add(count, Ordering::Relaxed);
        }
        self.set_timer(saga_id, timer_of(state));
        for effect in effects {
            if let Effect::Finished(outcome) = effect {
                self.finish(saga_id, state, *outcome).await;
            }
        }
        Ok(())
    }

    async fn finish(&self, saga_id: &str, state: &SagaState, outcome: SagaOutcome) {
        let counters = &self.inner.counters;
        match outcome {
            SagaOutcome::Completed => bump(&counters.completed),
            SagaOutcome::Compensated => bump(&counters.compensated),
        }
        tracing::info!(%saga_id, ?outcome, reason = state.failure.as_deref().unwrap_or(""), "saga finished");
        // Best effort: if this fails, `resume` settles the saga later; queries load it meanwhile.
        if let Err(error) = self.settle(saga_id, outcome, state.failure.clone()).await {
            tracing::warn!(%saga_id, %error, "could not settle the saga in the index; resume will");
        }
        self.set_timer(saga_id, None);
        self.inner.finished.notify_waiters();
    }

    async fn settle(
        &self,
        saga_id: &str,
        outcome: SagaOutcome,
        reason: Option<String>,
    ) -> Result<()> {
        self.append_index(IndexEvent::Settled {
            saga_id: saga_id.to_owned(),
            outcome,
            reason,
        })
        .await
    }

    async fn append_index(&self, event: IndexEvent) -> Result<()> {
        let new_event = NewEvent::encode(&event, Metadata::new())?;
        self.inner
            .store
            .append(AppendRequest::new(
                index_stream(&self.inner.definition.name),
                ExpectedVersion::Any,
                vec![new_event],
            ))
            .await?;
        Ok(())
    }

    /// The bus message of a command the state machine asked for.
    fn command_message(&self, state: &SagaState, outgoing: Outgoing) -> Result<Option<Message>> {
        let definition = &self.inner.definition;
        let (command_type, step, kind, attempt, result, reason) = match outgoing {
            Outgoing::Action { step } => {
                let Some(def) = definition.steps.get(step as usize) else {
                    return Ok(None);
                };
                (
                    def.action.command.clone(),
                    def.name.clone(),
                    CommandKind::Action,
                    1,
                    None,
                    None,
                )
            }
            Outgoing::Compensation { position, attempt } => {
                let Some(c) = &state.compensation else {
                    return Ok(None);
                };
                let Some(target) = c.plan.get(position as usize) else {
                    return Ok(None);
                };
                let Some(command) = machine::compensation_command(definition, target) else {
                    return Ok(None);
                };
                let reason = Some(Value::String(c.reason.clone()));
                match target {
                    CompensationTarget::Step { step, name } => {
                        let result = state
                            .steps
                            .get(*step as usize)
                            .and_then(|s| s.result.clone())
                            .unwrap_or(Value::Null);
                        (
                            command.command.clone(),
                            name.clone(),
                            CommandKind::Compensation,
                            attempt,
                            Some(result),
                            reason,
                        )
                    }
                    CompensationTarget::Final { command: c } => (
                        command.command.clone(),
                        c.clone(),
                        CommandKind::Final,
                        attempt,
                        None,
                        reason,
                    ),
                }
            }
        };
        let key = idempotency_key(&definition.name, &state.saga_id, &step, kind);
        let command = SagaCommand {
            saga_id: state.saga_id.clone(),
            saga_type: definition.name.clone(),
            step: step.clone(),
            kind,
            attempt,
            idempotency_key: key.clone(),
            data: state.data.clone(),
            result,
            reason,
            task_token: None,
            command_type: command_type.clone(),
            message_id: String::new(),
            correlation_id: state.correlation_id.clone(),
        };
        let payload = serde_json::to_value(&command)
            .map_err(|e| Error::serialization(format!("command {command_type}"), e))?;
        let mut message = Message::new(command_type, self.inner.source.as_str(), payload)
            .with_id(format!("{key}#{attempt}"))
            .with_attribute(attributes::SAGA_ID, state.saga_id.as_str())
            .with_attribute(attributes::SAGA_TYPE, definition.name.as_str())
            .with_attribute(attributes::STEP, step)
            .with_attribute(attributes::KIND, kind.as_str())
            .with_attribute(attributes::ATTEMPT, attempt.to_string())
            .with_attribute(attributes::IDEMPOTENCY_KEY, key);
        if let Some(id) = &state.correlation_id {
            message = message.with_correlation_id(id.as_str());
        }
        Ok(Some(message.with_attribute(
            core_attributes::CAUSATION_ID,
            state.saga_id.as_str(),
        )))
    }
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
