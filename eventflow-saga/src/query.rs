//! Reading sagas back: one saga's state and history, and the list of sagas by status.
//!
//! A saga's state is the fold of its stream (`saga-{saga type}-{saga id}`) through the same
//! [`DeciderRepository`] the orchestrator writes with; the sagas that exist and those that have
//! not ended come from the type's [`SagaIndex`], so a new orchestrator finds what to resume on any
//! [`EventStore`] (no global feed needed).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventflow_core::{
    DeciderRepository, DomainEvent, EventStore, InMemorySnapshotStore, Metadata, SnapshotStore,
};
use serde::{Deserialize, Serialize};

use crate::definition::SagaDefinition;
use crate::error::Result;
use crate::event::SagaEvent;
use crate::index::SagaIndex;
use crate::machine::SagaDecider;
use crate::state::{SagaState, SagaStatus};

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
    sagas: Arc<DeciderRepository<SagaDecider>>,
    index: Arc<SagaIndex>,
}

impl fmt::Debug for SagaQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaQuery")
            .field("saga_type", &self.saga_type())
            .finish_non_exhaustive()
    }
}

impl SagaQuery {
    /// Queries over sagas of `definition` in `store`. The index's shard snapshots are kept in
    /// memory; an [`Orchestrator`](crate::Orchestrator)'s [`query`](crate::Orchestrator::query)
    /// shares its own.
    pub fn new(store: Arc<dyn EventStore>, definition: Arc<SagaDefinition>) -> Self {
        let snapshots: Arc<dyn SnapshotStore> = Arc::new(InMemorySnapshotStore::new());
        let index = SagaIndex::new(Arc::clone(&store), &definition.name, snapshots);
        let sagas = DeciderRepository::for_decider(SagaDecider::new(definition), store);
        SagaQuery::from_parts(Arc::new(sagas), Arc::new(index))
    }

    pub(crate) fn from_parts(
        sagas: Arc<DeciderRepository<SagaDecider>>,
        index: Arc<SagaIndex>,
    ) -> Self {
        SagaQuery { sagas, index }
    }

    /// The saga type queried.
    pub fn saga_type(&self) -> &str {
        &self.sagas.decider().definition().name
    }

    /// The definition of the sagas queried (to show a step's budget or the pivot beside its
    /// state).
    pub fn definition(&self) -> &SagaDefinition {
        self.sagas.decider().definition()
    }

    /// The index of this saga type.
    pub fn index(&self) -> &SagaIndex {
        &self.index
    }

    /// The current state of saga `saga_id`, or `None` when it does not exist.
    pub async fn get(&self, saga_id: &str) -> Result<Option<SagaState>> {
        let state = self.sagas.load(saga_id).await?.state;
        Ok(state.status.is_some().then_some(state))
    }

    /// Saga `saga_id`'s history, oldest first (empty when it does not exist).
    pub async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>> {
        let events = self.sagas.read_events(saga_id).await?;
        Ok(events
            .into_iter()
            .map(|e| HistoryEntry {
                version: e.version,
                recorded_at: e.recorded_at,
                event_type: e.event.event_type().to_owned(),
                metadata: std::sync::Arc::unwrap_or_clone(e.metadata),
                event: e.event,
            })
            .collect())
    }

    /// Every saga of this type, in the order they were registered; only those with `status` when
    /// given. Ended sagas are listed from the index; unfinished ones are loaded for their status.
    /// Reads the whole index: to find what is still running, [`unfinished`](Self::unfinished) is
    /// cheaper.
    pub async fn list(&self, status: Option<SagaStatus>) -> Result<Vec<SagaSummary>> {
        let entries = self.index.entries().await?;
        let mut out = Vec::new();
        for saga_id in &entries.order {
            let summary = match entries.settled.get(saga_id) {
                Some((outcome, reason)) => SagaSummary {
                    saga_id: saga_id.clone(),
                    status: (*outcome).into(),
                    failure: reason.clone(),
                    attention: None,
                },
                None => match self.summary(saga_id).await? {
                    Some(summary) => summary,
                    None => continue, // registered, never started
                },
            };
            if status.is_none_or(|s| s == summary.status) {
                out.push(summary);
            }
        }
        Ok(out)
    }

    /// The ids of sagas that have not ended (running, compensating, needing attention). Reads the
    /// index's open sets (in proportion to the unfinished sagas) and loads each of them.
    pub async fn unfinished(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for saga_id in self.index.unfinished().await? {
            if let Some(summary) = self.summary(&saga_id).await?
                && !summary.status.is_terminal()
            {
                ids.push(saga_id);
            }
        }
        Ok(ids)
    }

    async fn summary(&self, saga_id: &str) -> Result<Option<SagaSummary>> {
        let state = self.sagas.load(saga_id).await?.state;
        Ok(state.status.map(|status| SagaSummary {
            saga_id: saga_id.to_owned(),
            status,
            failure: state.failure,
            attention: state.attention,
        }))
    }
}
