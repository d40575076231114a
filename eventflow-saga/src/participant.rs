//! The participant side: handle saga commands exactly once per (saga, step, kind), even though the
//! bus delivers at least once.
//!
//! A [`Participant`] wraps an aggregate's [`Repository`]. For each command type it handles, a
//! closure maps the [`SagaCommand`] to `(aggregate id, aggregate command)`; the participant runs it
//! with the command's idempotency key, which the event store records atomically with the events.
//! A redelivered command therefore appends nothing and gets the same reply as the first time, so
//! stock is never reserved twice and a card never charged twice.
//!
//! Refusals are recorded too (in a small ledger stream, under the same key), so a redelivered
//! command that was refused stays refused even if the aggregate would now accept it. And a
//! compensation that arrives **before** its action (reordered or delayed messages, or a step that
//! timed out before its command was delivered) records a tombstone under the action's key: the
//! late action is then refused instead of applied, and nothing is left uncompensated.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use std::convert::Infallible;

use eventflow_core::{
    Aggregate, CommandContext, CommandError, Decider, DeciderRepository, Delivery, DomainEvent,
    EventBus, EventStore, Executed, Filter, HandlerError, Message, MessageHandler, Metadata,
    Repository, Subscription,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::message::{CommandKind, SagaCommand};

/// Metadata header carrying the idempotency key on the events a participant records, so an audit
/// (or a test) can check that no key was applied twice.
pub const IDEMPOTENCY_KEY_HEADER: &str = "saga-idempotency-key";

/// Why a participant's mapping refused a command. For an action it is final (recorded, failure
/// reply); for a compensation or final command it is a failed attempt the orchestrator retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal(reason.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal(reason)
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal(error.to_string())
    }
}

/// Maps a saga command to the aggregate commands to run: one `(aggregate id, command)` for
/// [`Participant::handles`], several (run all or none) for [`Participant::handles_all`].
pub type CommandMap<A> = Arc<
    dyn Fn(&SagaCommand) -> std::result::Result<Vec<(String, <A as Aggregate>::Command)>, Refusal>
        + Send
        + Sync,
>;

struct Route<A: Aggregate> {
    success: String,
    failure: String,
    map: CommandMap<A>,
}

/// The reply a participant gives to a command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParticipantReply {
    /// True for a success reply.
    pub success: bool,
    /// The reply's message type.
    pub reply_type: String,
    /// The payload: for success `{"aggregateId", "events": [...], "applied"}`; for failure
    /// `{"reason"}`.
    pub payload: Value,
    /// True when this delivery changed nothing because the command had been handled before.
    pub deduplicated: bool,
}

impl ParticipantReply {
    /// The reply as a bus message answering `command`, published from `source`.
    pub fn to_message(&self, command: &SagaCommand, source: &str) -> Message {
        command.reply(self.reply_type.as_str(), source, self.payload.clone())
    }
}

/// Records refusals and tombstones under an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
enum LedgerEvent {
    ActionRefused { step: String, reason: String },
    ActionCancelled { step: String },
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LedgerEvent::ActionRefused { .. } => "SagaActionRefused",
            LedgerEvent::ActionCancelled { .. } => "SagaActionCancelled",
        }
    }
}

/// A participant's ledger of refusals and tombstones, one stream per saga:
/// `saga-ledger-{participant}-{saga type}-{saga id}`. Each entry is recorded under the idempotency
/// key it settles.
#[derive(Debug)]
struct Ledger {
    stream_type: String,
}

impl Decider for Ledger {
    type State = ();
    type Command = LedgerEvent;
    type Event = LedgerEvent;
    type Error = Infallible;

    fn stream_type(&self) -> &str {
        &self.stream_type
    }

    fn initial_state(&self, _: &str) {}

    fn decide(
        &self,
        _: &(),
        entry: &LedgerEvent,
    ) -> std::result::Result<Vec<LedgerEvent>, Infallible> {
        Ok(vec![entry.clone()])
    }

    fn evolve(&self, _: &mut (), _: &LedgerEvent) {
        // Stateless: the store's idempotency keys, not a fold, say what the ledger settled.
    }
}

/// What the store says about an idempotency key.
enum Recorded {
    /// Nothing yet.
    Nothing,
    /// The aggregate applied it: these are the event payloads, and whether they record a failure
    /// ([`Participant::fails_when`]).
    Applied {
        aggregate_id: String,
        events: Vec<Value>,
        failure: Option<String>,
    },
    /// Refused, with the reason.
    Refused(String),
    /// Cancelled by a compensation that came first.
    Cancelled,
}

/// A saga participant over aggregate `A`: a [`MessageHandler`] that runs saga commands once per
/// idempotency key and publishes the replies.
///
/// ```
/// # use eventflow_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Default)] struct Stock { available: i64 }
/// # enum StockCommand { Reserve(i64), Release(i64) }
/// # #[derive(Debug, Clone, Serialize, Deserialize)] enum StockEvent { Reserved(i64), Released(i64) }
/// # impl DomainEvent for StockEvent { fn event_type(&self) -> &'static str { "Stock" } }
/// # #[derive(Debug, thiserror::Error)] #[error("out of stock")] struct OutOfStock;
/// # impl Aggregate for Stock {
/// #     const STREAM_TYPE: &'static str = "stock";
/// #     type Command = StockCommand; type Event = StockEvent; type Error = OutOfStock;
/// #     fn handle(&self, c: &StockCommand) -> Result<Vec<StockEvent>, OutOfStock> {
/// #         match c { StockCommand::Reserve(n) if *n > self.available => Err(OutOfStock),
/// #                   StockCommand::Reserve(n) => Ok(vec![StockEvent::Reserved(*n)]),
/// #                   StockCommand::Release(n) => Ok(vec![StockEvent::Released(*n)]) } }
/// #     fn apply(&mut self, e: &StockEvent) { match e { StockEvent::Reserved(n) => self.available -= n,
/// #                                                    StockEvent::Released(n) => self.available += n } }
/// # }
/// use std::sync::Arc;
/// use eventflow_core::{InMemoryBus, InMemoryEventStore, Repository};
/// use eventflow_saga::Participant;
///
/// let store = Arc::new(InMemoryEventStore::new());
/// let inventory = Participant::new("inventory", Repository::<Stock>::new(store), Arc::new(InMemoryBus::new()))
///     .handles("ReserveInventory", "InventoryReserved", "InventoryReservationFailed", |cmd| {
///         let quantity = cmd.data["quantity"].as_i64().ok_or("no quantity")?;
///         Ok(("sku-1".to_owned(), StockCommand::Reserve(quantity)))
///     })
///     .handles("ReleaseInventory", "InventoryReleased", "InventoryReleaseFailed", |cmd| {
///         let quantity = cmd.data["quantity"].as_i64().ok_or("no quantity")?;
///         Ok(("sku-1".to_owned(), StockCommand::Release(quantity)))
///     });
/// assert_eq!(inventory.subscription().filter.message_types.len(), 2);
/// ```
pub struct Participant<A: Aggregate> {
    name: String,
    repository: Arc<Repository<A>>,
    ledger: DeciderRepository<Ledger>,
    store: Arc<dyn EventStore>,
    bus: Arc<dyn EventBus>,
    routes: HashMap<String, Route<A>>,
    failure_of: Option<FailureOf<A>>,
}

/// Reads a recorded failure out of an event ([`Participant::fails_when`]).
type FailureOf<A> = Arc<dyn Fn(&<A as Aggregate>::Event) -> Option<String> + Send + Sync>;

/// What running a command's aggregate commands came to.
enum Outcome {
    /// Applied; the payload of the success reply.
    Applied { payload: Value, deduplicated: bool },
    /// Recorded, and the events record a failure ([`Participant::fails_when`]).
    Failed { reason: String, deduplicated: bool },
    /// The aggregate refused: nothing was recorded.
    Refused(String),
}

impl<A: Aggregate> fmt::Debug for Participant<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut commands: Vec<&String> = self.routes.keys().collect();
        commands.sort();
        f.debug_struct("Participant")
            .field("name", &self.name)
            .field("commands", &commands)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Participant<A> {
    /// A participant named `name` (the source of its replies) over `repository`, publishing replies
    /// on `bus`. The repository's store also keeps the participant's refusals and tombstones.
    pub fn new(
        name: impl Into<String>,
        repository: impl Into<Arc<Repository<A>>>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        let name = name.into();
        let repository = repository.into();
        let store = Arc::clone(repository.store());
        let ledger = Ledger {
            stream_type: format!("saga-ledger-{name}"),
        };
        Participant {
            ledger: DeciderRepository::for_decider(ledger, Arc::clone(&store)),
            name,
            repository,
            store,
            bus,
            routes: HashMap::new(),
            failure_of: None,
        }
    }

    /// Declares which of the aggregate's events record a **failed** action, with the reason:
    /// for a business outcome worth keeping as a fact (a payment declined, with its amount), where a
    /// refusal would leave no trace in the aggregate. When an action's events include one, the
    /// reply is the failure reply (the first time and on every redelivery), and the failed step is
    /// not compensated, like a refused one.
    #[must_use]
    pub fn fails_when(
        mut self,
        failure_of: impl Fn(&A::Event) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.failure_of = Some(Arc::new(failure_of));
        self
    }

    /// The failure the events record, if any.
    fn failure_in<'e>(&self, events: impl IntoIterator<Item = &'e A::Event>) -> Option<String> {
        let failure_of = self.failure_of.as_ref()?;
        events.into_iter().find_map(|event| failure_of(event))
    }

    /// Handles commands of type `command_type`: `map` gives the aggregate id and command; the
    /// reply is `success_reply` or `failure_reply`. Whether it runs as an action, a compensation or
    /// a final command is read from the command itself.
    #[must_use]
    pub fn handles(
        self,
        command_type: impl Into<String>,
        success_reply: impl Into<String>,
        failure_reply: impl Into<String>,
        map: impl Fn(&SagaCommand) -> std::result::Result<(String, A::Command), Refusal>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.handles_all(command_type, success_reply, failure_reply, move |command| {
            map(command).map(|target| vec![target])
        })
    }

    /// Like [`handles`](Self::handles), for a command that changes several aggregates at once:
    /// `map` gives one command per aggregate, and they run all or none, in one atomic
    /// multi-stream append ([`DeciderRepository::execute_all`]). If any aggregate refuses, the
    /// command is refused and nothing is written. A redelivery's reply lists the events of the
    /// first aggregate only (the idempotency key records one stream).
    #[must_use]
    pub fn handles_all(
        mut self,
        command_type: impl Into<String>,
        success_reply: impl Into<String>,
        failure_reply: impl Into<String>,
        map: impl Fn(&SagaCommand) -> std::result::Result<Vec<(String, A::Command)>, Refusal>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.routes.insert(
            command_type.into(),
            Route {
                success: success_reply.into(),
                failure: failure_reply.into(),
                map: Arc::new(map),
            },
        );
        self
    }

    /// The participant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A subscription named `saga-participant-{name}` receiving the command types it handles.
    pub fn subscription(&self) -> Subscription {
        let mut types: Vec<&String> = self.routes.keys().collect();
        types.sort();
        let filter = types
            .into_iter()
            .fold(Filter::all(), |f, t| f.message_type(t.as_str()));
        Subscription::new(format!("saga-participant-{}", self.name)).with_filter(filter)
    }

    /// Handles a command message: runs it (once per idempotency key) and publishes the reply.
    /// Returns the reply, or `None` when the message is not a command this participant handles.
    pub async fn handle_message(&self, message: &Message) -> Result<Option<Message>> {
        if !self.routes.contains_key(&message.message_type) {
            return Ok(None);
        }
        let command = SagaCommand::from_message(message)?;
        let Some(reply) = self.execute(&command).await? else {
            return Ok(None);
        };
        let reply = reply.to_message(&command, &self.name);
        self.bus.publish(vec![reply.clone()]).await?;
        Ok(Some(reply))
    }

    /// Runs a command (once per idempotency key) and returns the reply without publishing it: for
    /// transports other than the bus, such as Step Functions task tokens.
    pub async fn execute(&self, command: &SagaCommand) -> Result<Option<ParticipantReply>> {
        let Some(route) = self.routes.get(&command.command_type) else {
            return Ok(None);
        };
        let span = tracing::info_span!(
            "eventflow.saga.participant",
            participant = %self.name,
            saga_id = %command.saga_id,
            step = %command.step,
            kind = %command.kind,
            attempt = command.attempt,
            correlation_id = command.correlation_id.as_deref().unwrap_or(""),
        );
        let run = async {
            match command.kind {
                CommandKind::Action => self.act(command, route).await,
                CommandKind::Compensation => self.compensate(command, route).await,
                CommandKind::Final => self.run_once(command, route).await,
            }
        };
        let reply = run.instrument(span.clone()).await?;
        span.in_scope(|| {
            tracing::info!(
                reply = %reply.reply_type,
                success = reply.success,
                deduplicated = reply.deduplicated,
                "saga command handled"
            );
        });
        Ok(Some(reply))
    }

    /// The ledger id of a command's saga.
    fn ledger_id(command: &SagaCommand) -> String {
        format!("{}-{}", command.saga_type, command.saga_id)
    }

    /// Metadata for what a command records, under idempotency key `key`.
    fn context(&self, command: &SagaCommand, key: &str) -> CommandContext {
        let mut metadata = Metadata::new()
            .with_causation_id(command.message_id.as_str())
            .with_header(IDEMPOTENCY_KEY_HEADER, command.idempotency_key.as_str())
            .with_header("saga-id", command.saga_id.as_str());
        metadata.correlation_id.clone_from(&command.correlation_id);
        metadata.traceparent.clone_from(&command.traceparent);
        CommandContext::new()
            .with_metadata(metadata)
            .with_idempotency_key(key)
    }

    fn success(&self, route: &Route<A>, payload: Value, deduplicated: bool) -> ParticipantReply {
        ParticipantReply {
            success: true,
            reply_type: route.success.clone(),
            payload,
            deduplicated,
        }
    }

    fn failure(&self, route: &Route<A>, reason: &str, deduplicated: bool) -> ParticipantReply {
        ParticipantReply {
            success: false,
            reply_type: route.failure.clone(),
            payload: json!({ "reason": reason }),
            deduplicated,
        }
    }

    /// What was recorded under `key`: the aggregate's events (typed, through its repository), or
    /// a ledger entry.
    async fn recorded(&self, key: &str) -> Result<Recorded> {
        let Some(original) = self.store.find_idempotency_key(key).await? else {
            return Ok(Recorded::Nothing);
        };
        if let Some(executed) = self.repository.replay(original.clone()).await? {
            let aggregate_id = self
                .repository
                .id_of(&executed.stream_id)
                .unwrap_or_default()
                .to_owned();
            let events = Self::event_values(&executed)?;
            let failure = self.failure_in(executed.events.iter().map(|e| &e.event));
            return Ok(Recorded::Applied {
                aggregate_id,
                events,
                failure,
            });
        }
        let Some(entry) = self.ledger.replay(original.clone()).await? else {
            return Err(Error::Core(eventflow_core::Error::InvalidRequest(format!(
                "idempotency key {key:?} was used on stream {}, which participant {} does not own",
                original.stream, self.name
            ))));
        };
        Ok(match entry.events.first().map(|e| &e.event) {
            Some(LedgerEvent::ActionRefused { reason, .. }) => Recorded::Refused(reason.clone()),
            Some(LedgerEvent::ActionCancelled { .. }) | None => Recorded::Cancelled,
        })
    }

    /// Records a ledger entry under `key`; `Ok(false)` when the key was recorded meanwhile.
    async fn record(&self, command: &SagaCommand, key: &str, entry: LedgerEvent) -> Result<bool> {
        let context = self.context(command, key);
        match self
            .ledger
            .execute(&Self::ledger_id(command), &entry, context)
            .await
        {
            Ok(executed) => Ok(!executed.deduplicated),
            // Recorded meanwhile by the aggregate's own stream.
            Err(CommandError::Store(eventflow_core::Error::DuplicateIdempotencyKey { .. })) => {
                Ok(false)
            }
            Err(CommandError::Store(error)) => Err(error.into()),
            Err(other) => Err(Error::Core(eventflow_core::Error::backend(
                "saga participant",
                other.to_string(),
            ))),
        }
    }

    /// The events a command recorded, as the JSON a success reply carries.
    fn event_values(executed: &Executed<A::Event>) -> Result<Vec<Value>> {
        Self::values_of(std::slice::from_ref(executed))
    }

    fn values_of(executed: &[Executed<A::Event>]) -> Result<Vec<Value>> {
        executed
            .iter()
            .flat_map(|executed| &executed.events)
            .map(|e| {
                serde_json::to_value(&e.event)
                    .map_err(|err| Error::serialization(e.event.event_type(), err))
            })
            .collect()
    }

    fn applied_payload(aggregate_id: &str, events: &[Value], applied: bool) -> Value {
        json!({ "aggregateId": aggregate_id, "events": events, "applied": applied })
    }

    async fn run_aggregate(
        &self,
        command: &SagaCommand,
        targets: &[(String, A::Command)],
    ) -> Result<Outcome> {
        let context = self.context(command, &command.idempotency_key);
        let outcome = match targets {
            [(id, one)] => self
                .repository
                .execute(id, one, context)
                .await
                .map(|e| vec![e]),
            several => self.repository.execute_all(several, context).await,
        };
        match outcome {
            Ok(executed) => {
                let deduplicated = executed.iter().any(|e| e.deduplicated);
                let recorded = executed.iter().flat_map(|e| &e.events);
                if let Some(reason) = self.failure_in(recorded.map(|e| &e.event)) {
                    return Ok(Outcome::Failed {
                        reason,
                        deduplicated,
                    });
                }
                let events = Self::values_of(&executed)?;
                let aggregate_id = targets.first().map_or("", |(id, _)| id.as_str());
                Ok(Outcome::Applied {
                    payload: Self::applied_payload(aggregate_id, &events, true),
                    deduplicated,
                })
            }
            Err(CommandError::Rejected(e)) => Ok(Outcome::Refused(e.to_string())),
            Err(CommandError::Store(e)) => Err(e.into()),
            Err(other) => Err(Error::Core(eventflow_core::Error::backend(
                "saga participant",
                other.to_string(),
            ))),
        }
    }

    /// The reply for an earlier application of the same key.
    fn replay_reply(
        &self,
        route: &Route<A>,
        aggregate_id: &str,
        events: &[Value],
        failure: Option<String>,
    ) -> ParticipantReply {
        match failure {
            Some(reason) => self.failure(route, &reason, true),
            None => self.success(
                route,
                Self::applied_payload(aggregate_id, events, true),
                true,
            ),
        }
    }

    async fn act(&self, command: &SagaCommand, route: &Route<A>) -> Result<ParticipantReply> {
        let key = command.idempotency_key.as_str();
        until_settled(key, || self.act_once(command, route)).await
    }

    /// One try of [`act`](Self::act); `None` when another delivery changed the key's record
    /// between our read and our write.
    async fn act_once(
        &self,
        command: &SagaCommand,
        route: &Route<A>,
    ) -> Result<Option<ParticipantReply>> {
        let key = command.idempotency_key.as_str();
        match self.recorded(key).await? {
            Recorded::Applied {
                aggregate_id,
                events,
                failure,
            } => {
                return Ok(Some(self.replay_reply(
                    route,
                    &aggregate_id,
                    &events,
                    failure,
                )));
            }
            Recorded::Refused(reason) => return Ok(Some(self.failure(route, &reason, true))),
            Recorded::Cancelled => {
                return Ok(Some(self.failure(
                    route,
                    "cancelled: its compensation arrived first",
                    true,
                )));
            }
            Recorded::Nothing => {}
        }
        let refusal = match (route.map)(command) {
            Ok(targets) => {
                match self.run_aggregate(command, &targets).await {
                    Ok(Outcome::Applied {
                        payload,
                        deduplicated,
                    }) => return Ok(Some(self.success(route, payload, deduplicated))),
                    Ok(Outcome::Failed {
                        reason,
                        deduplicated,
                    }) => return Ok(Some(self.failure(route, &reason, deduplicated))),
                    Ok(Outcome::Refused(reason)) => reason,
                    // E.g. a tombstone written between our check and the append: look again.
                    Err(error) => match self.recorded(key).await? {
                        Recorded::Nothing => return Err(error),
                        _ => return Ok(None),
                    },
                }
            }
            Err(refusal) => refusal.0,
        };
        if self
            .record(
                command,
                key,
                LedgerEvent::ActionRefused {
                    step: command.step.clone(),
                    reason: refusal.clone(),
                },
            )
            .await?
        {
            return Ok(Some(self.failure(route, &refusal, false)));
        }
        Ok(None)
    }

    async fn compensate(
        &self,
        command: &SagaCommand,
        route: &Route<A>,
    ) -> Result<ParticipantReply> {
        let action_key = command.action_key();
        until_settled(&action_key, || {
            self.compensate_once(command, route, &action_key)
        })
        .await
    }

    /// One try of [`compensate`](Self::compensate); `None` when another delivery changed the
    /// action's record between our read and our write.
    async fn compensate_once(
        &self,
        command: &SagaCommand,
        route: &Route<A>,
        action_key: &str,
    ) -> Result<Option<ParticipantReply>> {
        if let Recorded::Applied {
            aggregate_id,
            events,
            failure,
        } = self.recorded(&command.idempotency_key).await?
        {
            return Ok(Some(self.replay_reply(
                route,
                &aggregate_id,
                &events,
                failure,
            )));
        }
        match self.recorded(action_key).await? {
            Recorded::Nothing => {
                // The action has not run (yet): make sure it never will.
                if self
                    .record(
                        command,
                        action_key,
                        LedgerEvent::ActionCancelled {
                            step: command.step.clone(),
                        },
                    )
                    .await?
                {
                    let payload = json!({ "applied": false, "note": "the action never ran; it is cancelled" });
                    return Ok(Some(self.success(route, payload, false)));
                }
            }
            Recorded::Refused(_)
            | Recorded::Cancelled
            | Recorded::Applied {
                failure: Some(_), ..
            } => {
                let payload = json!({ "applied": false, "note": "the action had no effect" });
                return Ok(Some(self.success(route, payload, true)));
            }
            Recorded::Applied { .. } => return self.run_once(command, route).await.map(Some),
        }
        Ok(None)
    }

    /// Runs a compensation or final command once per key; a refusal is a failed attempt (not
    /// recorded: the orchestrator retries).
    async fn run_once(&self, command: &SagaCommand, route: &Route<A>) -> Result<ParticipantReply> {
        if let Recorded::Applied {
            aggregate_id,
            events,
            failure,
        } = self.recorded(&command.idempotency_key).await?
        {
            return Ok(self.replay_reply(route, &aggregate_id, &events, failure));
        }
        let targets = match (route.map)(command) {
            Ok(targets) => targets,
            Err(refusal) => return Ok(self.failure(route, &refusal.0, false)),
        };
        Ok(match self.run_aggregate(command, &targets).await? {
            Outcome::Applied {
                payload,
                deduplicated,
            } => self.success(route, payload, deduplicated),
            Outcome::Failed {
                reason,
                deduplicated,
            } => self.failure(route, &reason, deduplicated),
            Outcome::Refused(reason) => self.failure(route, &reason, false),
        })
    }
}

#[async_trait]
impl<A: Aggregate> MessageHandler for Participant<A> {
    async fn handle(&self, delivery: Delivery) -> std::result::Result<(), HandlerError> {
        self.handle_message(&delivery.message)
            .await
            .map(|_| ())
            .map_err(HandlerError::from)
    }
}

/// How many times a participant reads and writes a key's record before it gives up: each retry
/// means another delivery of the same command wrote the record between our read and our write.
const SETTLE_ATTEMPTS: usize = 4;

/// Runs `attempt` until it settles (`Some`), at most [`SETTLE_ATTEMPTS`] times; then a transient
/// error, so the delivery is retried later.
async fn until_settled<F, Fut>(key: &str, mut attempt: F) -> Result<ParticipantReply>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<ParticipantReply>>>,
{
    for _ in 0..SETTLE_ATTEMPTS {
        if let Some(reply) = attempt().await? {
            return Ok(reply);
        }
    }
    Err(Error::Core(eventflow_core::Error::transient(
        "saga participant",
        format!("idempotency key {key} kept changing"),
    )))
}
