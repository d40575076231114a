//! Loading a stream's state (snapshot, then later events) and saving snapshots.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{DeciderRepository, Loaded};
use crate::decider::Decider;
use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
use crate::store::{READ_PAGE_SIZE, StreamId};

/// How a repository snapshots its states.
pub(super) struct Snapshotting<A> {
    pub(super) store: Arc<dyn SnapshotStore>,
    pub(super) policy: SnapshotPolicy,
    pub(super) format_version: u32,
    pub(super) encode: fn(&A) -> serde_json::Result<Vec<u8>>,
    pub(super) decode: fn(&[u8]) -> serde_json::Result<A>,
}

pub(super) fn encode_state<A: Serialize>(state: &A) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(state)
}

pub(super) fn decode_state<A: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<A> {
    serde_json::from_slice(bytes)
}

impl<D: Decider> DeciderRepository<D> {
    /// Moved: [`snapshot_loaded`](crate::extension::RepositoryExt::snapshot_loaded).
    #[deprecated(
        since = "0.3.0",
        note = "use `eventflow_core::extension::RepositoryExt::snapshot_loaded`"
    )]
    pub async fn save_snapshot(&self, id: &str, loaded: &Loaded<D::State>) -> Result<()> {
        self.snapshot_state(id, loaded).await
    }

    /// See [`snapshot_loaded`](crate::extension::RepositoryExt::snapshot_loaded).
    pub(super) async fn snapshot_state(&self, id: &str, loaded: &Loaded<D::State>) -> Result<()> {
        let Some(snapshots) = &self.snapshots else {
            return Err(Error::InvalidRequest(format!(
                "no snapshot store for {} streams",
                self.decider.stream_type()
            )));
        };
        let bytes =
            (snapshots.encode)(&loaded.state).map_err(|e| Error::serialization("snapshot", e))?;
        let snapshot = Snapshot::new(
            self.stream_id(id),
            loaded.version,
            snapshots.format_version,
            bytes.into(),
        );
        snapshots.store.save(snapshot).await
    }

    pub(super) async fn load_stream(
        &self,
        id: &str,
        stream: &StreamId,
        cached: Option<(u64, D::State)>,
    ) -> Result<(D::State, u64)> {
        let span = tracing::debug_span!("eventflow.load", %stream, cached = cached.is_some());
        self.load_stream_in_span(id, stream, cached)
            .instrument(span)
            .await
    }

    async fn load_stream_in_span(
        &self,
        id: &str,
        stream: &StreamId,
        cached: Option<(u64, D::State)>,
    ) -> Result<(D::State, u64)> {
        let (mut state, mut version) = match cached {
            Some((version, state)) => (state, version),
            None => self.load_snapshot(id, stream).await?,
        };
        // Decoded while the store visits its records (no record is copied), evolved after: a
        // store may hold a lock while it visits, and the decider's code does not run under it.
        let mut page: Vec<(u64, D::Event)> = Vec::new();
        loop {
            let visited = self
                .dyn_store()
                .visit_stream(stream, version + 1, READ_PAGE_SIZE, &mut |recorded| {
                    page.push((recorded.version, self.upcasters.decode(recorded)?));
                    Ok(())
                })
                .await?;
            for (recorded_version, event) in page.drain(..) {
                self.decider.evolve(&mut state, &event);
                version = recorded_version;
            }
            if visited < READ_PAGE_SIZE {
                return Ok((state, version));
            }
        }
    }

    async fn load_snapshot(&self, id: &str, stream: &StreamId) -> Result<(D::State, u64)> {
        let initial = || Ok((self.decider.initial_state(id), 0));
        let Some(snapshots) = &self.snapshots else {
            return initial();
        };
        let Some(snapshot) = snapshots.store.load(stream).await? else {
            return initial();
        };
        if snapshot.format_version != snapshots.format_version {
            tracing::debug!(%stream, "snapshot of another format version; replaying the stream");
            return initial();
        }
        match (snapshots.decode)(&snapshot.state) {
            Ok(state) => Ok((state, snapshot.version)),
            Err(error) => {
                tracing::warn!(%stream, %error, "snapshot does not deserialise; replaying the stream");
                initial()
            }
        }
    }

    /// Snapshot failures are logged, not returned: the events are already committed, and a missing
    /// snapshot only costs a longer replay.
    pub(super) async fn maybe_snapshot(
        &self,
        stream: &StreamId,
        before: u64,
        after: u64,
        state: &D::State,
    ) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        if !snapshots.policy.should_snapshot(before, after) {
            return;
        }
        let saved = match (snapshots.encode)(state) {
            Ok(bytes) => {
                let snapshot = Snapshot::new(
                    stream.clone(),
                    after,
                    snapshots.format_version,
                    bytes.into(),
                );
                snapshots.store.save(snapshot).await
            }
            Err(e) => Err(Error::serialization("snapshot", e)),
        };
        if let Err(error) = saved {
            tracing::warn!(%stream, %error, "could not save snapshot");
        }
    }
}
