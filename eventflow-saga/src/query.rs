//! Reading sagas back: one saga's state and history, and the list of sagas by status.
//!
//! Each saga type keeps an index stream, `saga-index-{saga type}`, in the same event store: a
//! `SagaRegistered` entry is appended before a saga's first event, and a `SagaSettled` entry once it
//! ends. The unfinished sagas are the registered ones not settled, which is how a new orchestrator
//! finds what to resume on any [`EventStore`] (no global feed needed). The index is appended to
//! with [`ExpectedVersion::Any`](eventflow_core::ExpectedVersion::Any); on a backend where one hot
//! stream limits throughput, that stream is the thing to watch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventflow_core::{EventStore, EventStoreExt, Metadata, StreamId};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{IndexEvent, SagaEvent, SagaOutcome};
use crate::state::{SagaState, SagaStatus};

/// The stream holding saga `saga_id` of type `saga_type`: `saga-{saga_type}-{saga_id}`.
pub fn saga_stream(saga_type: &str, saga_id: &str) -> StreamId {
    StreamId::new(format!("saga-{saga_type}-{saga_id}"))
}

/// The index stream of saga type `saga_type`: `saga-index-{saga_type}`.
pub fn index_stream(saga_type: &str) -> StreamId {
    StreamId::new(format!("saga-index-{saga_type}"))
}

/// One recorded event of a saga's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HistoryEntry {
    /// Its version in the saga's stream (1-based).
    pub version: u64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The stable event type name, e.g. `SagaStepSucceeded`.
    pub event_type: String,
    /// Correlation and causation (the reply or timer that caused it).
    pub metadata: Metadata,
    /// The event.
    pub event: SagaEvent,
}

/// A saga in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SagaSummary {
    /// The saga id.
    pub saga_id: String,
    /// Its status.
    pub status: SagaStatus,
    /// Why it failed (compensating or compensated sagas).
    pub failure: Option<String>,
    /// Why it needs attention.
    pub attention: Option<String>,
}

/// Reads sagas of one type from an event store. Cheap to clone.
#[derive(Clone)]
pub struct SagaQuery {
    store: Arc<dyn EventStore>,
    saga_type: String,
}

impl fmt::Debug for SagaQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaQuery")
            .field("saga_type", &self.saga_type)
            .finish_non_exhaustive()
    }
}

/// The index: every registered saga in registration order, with its outcome once settled.
pub(crate) struct Index {
    pub(crate) order: Vec<String>,
    pub(crate) settled: BTreeMap<String, (SagaOutcome, Option<String>)>,
}

impl Index {
    /// Registered and not settled, in registration order.
    pub(crate) fn unsettled(&self) -> impl Iterator<Item = &String> {
        self.order
            .iter()
            .filter(|id| !self.settled.contains_key(id.as_str()))
    }
}

impl SagaQuery {
    /// Queries over sagas of type `saga_type` (the definition's name) in `store`.
    pub fn new(store: Arc<dyn EventStore>, saga_type: impl Into<String>) -> Self {
        SagaQuery {
            store,
            saga_type: saga_type.into(),
        }
    }

    /// The saga type queried.
    pub fn saga_type(&self) -> &str {
        &self.saga_type
    }

    /// The current state of saga `saga_id`, or `None` when it does not exist.
    pub async fn get(&self, saga_id: &str) -> Result<Option<SagaState>> {
        let (state, _) = self.load(saga_id).await?;
        Ok(state.status.is_some().then_some(state))
    }

    /// Saga `saga_id`'s history, oldest first (empty when it does not exist).
    pub async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>> {
        let stream = saga_stream(&self.saga_type, saga_id);
        let recorded = self.store.read_stream_to_end(&stream, 1).await?;
        recorded
            .into_iter()
            .map(|r| {
                let event = r.decode_as_stored::<SagaEvent>()?;
                Ok(HistoryEntry {
                    version: r.version,
                    recorded_at: r.recorded_at,
                    event_type: r.event_type,
                    metadata: r.metadata,
                    event,
                })
            })
            .collect()
    }

    /// Every saga of this type, in the order they started; only those with `status` when given.
    /// Ended sagas are listed from the index; unfinished ones are loaded for their status.
    pub async fn list(&self, status: Option<SagaStatus>) -> Result<Vec<SagaSummary>> {
        let index = self.index().await?;
        let mut out = Vec::new();
        for saga_id in &index.order {
            let summary = match index.settled.get(saga_id) {
                Some((outcome, reason)) => {
                    if status.is_some_and(|s| s != SagaStatus::from(*outcome)) {
                        continue;
                    }
                    SagaSummary {
                        saga_id: saga_id.clone(),
                        status: (*outcome).into(),
                        failure: reason.clone(),
                        attention: None,
                    }
                }
                None => {
                    let (state, _) = self.load(saga_id).await?;
                    let Some(current) = state.status else {
                        continue; // registered, never started
                    };
                    if status.is_some_and(|s| s != current) {
                        continue;
                    }
                    SagaSummary {
                        saga_id: saga_id.clone(),
                        status: current,
                        failure: state.failure,
                        attention: state.attention,
                    }
                }
            };
            out.push(summary);
        }
        Ok(out)
    }

    /// The ids of sagas that have not ended (running, compensating, needing attention), in the
    /// order they started.
    pub async fn unfinished(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for summary in self.list(None).await? {
            if !summary.status.is_terminal() {
                ids.push(summary.saga_id);
            }
        }
        Ok(ids)
    }

    /// Loads a saga's state and stream version.
    pub(crate) async fn load(&self, saga_id: &str) -> Result<(SagaState, u64)> {
        let stream = saga_stream(&self.saga_type, saga_id);
        let recorded = self.store.read_stream_to_end(&stream, 1).await?;
        let mut state = SagaState::new(saga_id);
        let mut version = 0;
        for r in &recorded {
            state.apply(&r.decode_as_stored::<SagaEvent>()?);
            version = r.version;
        }
        Ok((state, version))
    }

    pub(crate) async fn index(&self) -> Result<Index> {
        let recorded = self
            .store
            .read_stream_to_end(&index_stream(&self.saga_type), 1)
            .await?;
        let mut index = Index {
            order: Vec::new(),
            settled: BTreeMap::new(),
        };
        let mut registered = std::collections::BTreeSet::new();
        for r in &recorded {
            match r.decode_as_stored::<IndexEvent>()? {
                IndexEvent::Registered { saga_id } => {
                    if registered.insert(saga_id.clone()) {
                        index.order.push(saga_id);
                    }
                }
                IndexEvent::Settled {
                    saga_id,
                    outcome,
                    reason,
                } => {
                    index.settled.insert(saga_id, (outcome, reason));
                }
            }
        }
        Ok(index)
    }
}
