//! The saga families: outcomes (the orchestrator's own counters, read on each scrape) and step
//! durations, timed from the messages the orchestrator sends and receives. Nothing here changes
//! what the orchestrator does: the bus it is given and the handler it is subscribed with are
//! wrapped, and only look at the saga attributes of the messages going by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventflow_core::bus::BusCapabilities;
use eventflow_core::{
    Delivery, EventBus, HandlerError, Message, MessageHandler, Subscription, SubscriptionHandle,
};
use eventflow_saga::message::attributes::{KIND, SAGA_ID, STEP};
use eventflow_saga::{CommandKind, Orchestrator, SagaData, SagaDefinition};

use crate::platform::metrics::{Metrics, SAGA_OUTCOMES, SAGA_STEP_DURATION, SAGAS_STARTED};

/// How many steps in flight are timed at once, and how long one is remembered: a step whose
/// reply another orchestrator instance received is never settled here.
const TIMED_AT_MOST: usize = 10_000;
const FORGET_AFTER: Duration = Duration::from_secs(3_600);

/// Reads the orchestrator's counters into the outcome families on each scrape.
pub(crate) fn sample_outcomes<D: SagaData>(orchestrator: &Arc<Orchestrator<D>>, metrics: &Metrics) {
    let saga = orchestrator.definition().name.as_str();
    let started = metrics.counter(SAGAS_STARTED, &[("saga", saga)]);
    let outcome = |outcome| metrics.counter(SAGA_OUTCOMES, &[("saga", saga), ("outcome", outcome)]);
    let (completed, compensated, attention) = (
        outcome("completed"),
        outcome("compensated"),
        outcome("needs_attention"),
    );
    let orchestrator = Arc::clone(orchestrator);
    metrics.sample_on_scrape(move || {
        let stats = orchestrator.stats();
        started.absolute(stats.started);
        completed.absolute(stats.completed);
        compensated.absolute(stats.compensated);
        attention.absolute(stats.needs_attention);
        std::future::ready(())
    });
}

/// Times each step of one saga definition from its command's first send to what settles it: a
/// success or failure reply, or, for a step that timed out, its compensation being sent.
/// Measured by the instance that sent the step; one that never sees the end (another instance
/// got the reply, or it restarted meanwhile) does not time it.
pub(crate) struct StepClock {
    saga: String,
    metrics: Metrics,
    /// Reply message type -> (step, `succeeded` or `failed`).
    replies: HashMap<String, (String, &'static str)>,
    /// (saga id, step) -> when its command was first sent.
    open: Mutex<HashMap<(String, String), Instant>>,
}

impl StepClock {
    /// A clock for the steps of `definition`, recording into `metrics`.
    pub(crate) fn new(definition: &SagaDefinition, metrics: &Metrics) -> Arc<Self> {
        let mut replies = HashMap::new();
        for step in definition.steps() {
            for (types, outcome) in [
                (&step.action.success, "succeeded"),
                (&step.action.failure, "failed"),
            ] {
                for reply in types {
                    replies.insert(reply.clone(), (step.name.clone(), outcome));
                }
            }
        }
        Arc::new(StepClock {
            saga: definition.name.clone(),
            metrics: metrics.clone(),
            replies,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// `bus`, with every saga command it publishes seen by this clock.
    pub(crate) fn watching(self: &Arc<Self>, bus: Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        Arc::new(Sending {
            clock: Arc::clone(self),
            bus,
        })
    }

    /// `handler` (the orchestrator), with every reply it handled seen by this clock.
    pub(crate) fn replies_to(
        self: &Arc<Self>,
        handler: Arc<dyn MessageHandler>,
    ) -> Arc<dyn MessageHandler> {
        Arc::new(Receiving {
            clock: Arc::clone(self),
            handler,
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        // Timings only: a poisoned map is still usable.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A saga command is about to be published.
    fn sent(&self, message: &Message) {
        let (Some(saga_id), Some(step), Some(kind)) = (
            message.attributes.get(SAGA_ID),
            message.attributes.get(STEP),
            message.attributes.get(KIND),
        ) else {
            return;
        };
        let key = (saga_id.clone(), step.clone());
        let mut open = self.open();
        match kind.parse() {
            Ok(CommandKind::Action) => {
                if open.len() >= TIMED_AT_MOST {
                    open.retain(|_, sent| sent.elapsed() < FORGET_AFTER);
                }
                if open.len() < TIMED_AT_MOST {
                    // A resend keeps the first send's time.
                    open.entry(key).or_insert_with(Instant::now);
                }
            }
            // Still open when its compensation goes out: no reply came in its budget.
            Ok(CommandKind::Compensation) => {
                if let Some(sent) = open.remove(&key) {
                    drop(open);
                    self.record(step, "timed_out", sent);
                }
            }
            _ => {}
        }
    }

    /// What `message` settles when the orchestrator has handled it: a step of a saga, with the
    /// outcome its reply type means.
    fn settles(&self, message: &Message) -> Option<Settles<'_>> {
        let (step, outcome) = self.replies.get(&message.message_type)?;
        let saga_id = message.attributes.get(SAGA_ID)?;
        let kind = message.attributes.get(KIND)?;
        (kind.parse() == Ok(CommandKind::Action)).then(|| Settles {
            key: (saga_id.clone(), step.clone()),
            outcome,
        })
    }

    /// The orchestrator handled a reply that settles a step.
    fn settled(&self, settles: &Settles<'_>) {
        let sent = self.open().remove(&settles.key);
        if let Some(sent) = sent {
            self.record(&settles.key.1, settles.outcome, sent);
        }
    }

    fn record(&self, step: &str, outcome: &str, sent: Instant) {
        self.metrics
            .histogram(
                SAGA_STEP_DURATION,
                &[("saga", &self.saga), ("step", step), ("outcome", outcome)],
            )
            .record(sent.elapsed());
    }
}

/// A reply's step: (saga id, step), and `succeeded` or `failed`.
struct Settles<'a> {
    key: (String, String),
    outcome: &'a str,
}

/// The orchestrator's bus, telling the clock what it sends.
struct Sending {
    clock: Arc<StepClock>,
    bus: Arc<dyn EventBus>,
}

#[async_trait]
impl EventBus for Sending {
    async fn publish(&self, messages: Vec<Message>) -> eventflow_core::Result<()> {
        for message in &messages {
            self.clock.sent(message);
        }
        self.bus.publish(messages).await
    }

    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> eventflow_core::Result<SubscriptionHandle> {
        self.bus.subscribe(subscription, handler).await
    }

    fn capabilities(&self) -> BusCapabilities {
        self.bus.capabilities()
    }
}

/// The orchestrator's handler, telling the clock which replies it handled.
struct Receiving {
    clock: Arc<StepClock>,
    handler: Arc<dyn MessageHandler>,
}

#[async_trait]
impl MessageHandler for Receiving {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let settles = self.clock.settles(&delivery.message);
        self.handler.handle(delivery).await?;
        if let Some(settles) = settles {
            self.clock.settled(&settles);
        }
        Ok(())
    }
}
