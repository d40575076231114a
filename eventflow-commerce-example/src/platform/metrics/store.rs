//! The command families, counted where every command ends: the context's event store.

use std::sync::Arc;

use async_trait::async_trait;
use eventflow_core::{
    AppendRequest, AppendResult, Error, EventStore, RecordedEvent, Result, StreamId,
};
use metrics::Counter;

use super::{COMMANDS, CONFLICTS, Metrics};

/// A context's event store, counting appends. Every write of the app is a command's, through a
/// repository (aggregates, saga participants and the orchestrator alike), so the store sees each
/// command that wrote and each version conflict, with no counting at the call sites.
pub(crate) struct MeteredStore {
    inner: Arc<dyn EventStore>,
    recorded: Counter,
    duplicate: Counter,
    failed: Counter,
    conflicts: Counter,
}

impl MeteredStore {
    /// `inner`, counted in `metrics` (every outcome starts at zero).
    pub(crate) fn new(inner: Arc<dyn EventStore>, metrics: &Metrics) -> Self {
        let outcome = |outcome| metrics.counter(COMMANDS, &[("outcome", outcome)]);
        MeteredStore {
            inner,
            recorded: outcome("recorded"),
            duplicate: outcome("duplicate"),
            failed: outcome("failed"),
            conflicts: metrics.counter(CONFLICTS, &[]),
        }
    }
}

#[async_trait]
impl EventStore for MeteredStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let appended = self.inner.append(request).await;
        match &appended {
            Ok(_) => &self.recorded,
            Err(Error::Conflict { .. }) => &self.conflicts,
            Err(Error::DuplicateIdempotencyKey { .. }) => &self.duplicate,
            Err(_) => &self.failed,
        }
        .increment(1);
        appended
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_stream(stream, from_version, max_count)
            .await
    }

    async fn find_idempotency_key(&self, key: &str) -> Result<Option<AppendResult>> {
        self.inner.find_idempotency_key(key).await
    }

    /// Forwarded, so that the in-memory store still replays without copying.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        max_count: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        self.inner
            .visit_stream(stream, from_version, max_count, visit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use eventflow_core::{ExpectedVersion, InMemoryEventStore, Metadata, NewEvent};

    use super::*;

    #[tokio::test]
    async fn counts_recorded_appends_and_conflicts() {
        let metrics = Metrics::new("test", "t");
        let store = MeteredStore::new(Arc::new(InMemoryEventStore::new()), &metrics);
        let stream = StreamId::new("thing-1");
        let event = || NewEvent::new("ThingHappened", 1, (&b"{}"[..]).into(), Metadata::new());
        let first = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(0), vec![event()]);
        store.append(first).await.unwrap_or_else(|e| panic!("{e}"));
        let stale = AppendRequest::new(stream, ExpectedVersion::Exact(0), vec![event()]);
        assert!(matches!(
            store.append(stale).await,
            Err(Error::Conflict { .. })
        ));
        let text = metrics.render().await;
        assert!(
            text.contains(r#"eventflow_commands_total{outcome="recorded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"eventflow_commands_total{outcome="failed"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("eventflow_command_conflicts_total 1"),
            "{text}"
        );
    }
}
