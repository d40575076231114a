//! Building an orchestrator: its definition, backends and options.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventflow_core::{
    Backoff, DeciderRepository, EventBus, EventStore, InMemorySnapshotStore, Message, SnapshotStore,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::timers::Timers;
use super::{Counters, Inner, Orchestrator};
use crate::clock::{Clock, SystemClock};
use crate::definition::SagaDefinition;
use crate::error::{Error, Result};
use crate::index::SagaIndex;
use crate::machine::SagaDecider;
use crate::query::SagaQuery;

/// Saga data: the typed payload a saga carries (for PlaceOrder: order id, items, amount, address).
/// Any serde type that is `Send + Sync + 'static` qualifies.
pub trait SagaData: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SagaData for T {}

/// Maps a trigger message to the saga it starts: `Ok(None)` ignores the message.
pub type TriggerFn<D> = Arc<dyn Fn(&Message) -> Result<Option<(String, D)>> + Send + Sync>;

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
    cache_capacity: usize,
    index_snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl<D> fmt::Debug for OrchestratorBuilder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field("saga_type", &self.definition.name)
            .finish_non_exhaustive()
    }
}

impl<D: SagaData> OrchestratorBuilder<D> {
    pub(super) fn new(
        definition: SagaDefinition,
        store: Arc<dyn EventStore>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
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
            cache_capacity: 10_000,
            index_snapshots: None,
        }
    }

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

    /// How many sagas it keeps in memory between inputs (default 10,000); others are reloaded.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Where the saga index keeps its shard snapshots (default: in memory). A durable store
    /// (the same one as the events, e.g. DynamoDB's) keeps [`resume`](Orchestrator::resume)
    /// cheap after a restart; without one the first resume reads the index whole.
    pub fn index_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.index_snapshots = Some(snapshots);
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
        let definition = Arc::new(self.definition);
        let sagas = Arc::new(
            DeciderRepository::for_decider(
                SagaDecider::new(Arc::clone(&definition)),
                Arc::clone(&self.store),
            )
            .with_cache(self.cache_capacity)
            .with_conflict_retry(
                Backoff::new(
                    self.max_conflict_retries.saturating_add(1),
                    Duration::from_millis(1),
                    Duration::from_millis(20),
                )
                .with_full_jitter(),
            ),
        );
        let snapshots = self
            .index_snapshots
            .unwrap_or_else(|| Arc::new(InMemorySnapshotStore::new()));
        let index = Arc::new(SagaIndex::new(self.store, &name, snapshots));
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                query: SagaQuery::from_parts(Arc::clone(&sagas), Arc::clone(&index)),
                sagas,
                index,
                definition,
                bus: self.bus,
                clock: self.clock,
                source: self.source.unwrap_or_else(|| format!("saga-{name}")),
                subscription_name: self
                    .subscription_name
                    .unwrap_or_else(|| format!("saga-{name}")),
                trigger,
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
