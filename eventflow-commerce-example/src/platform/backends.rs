//! Where the contexts keep their data and exchange messages: in this process, or on DynamoDB
//! and a cloud bus (the `cloud` feature). The contexts' code is the same on both.

use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::{DeadLetterQueue, InMemoryWorkQueue, QueueSettings, Redelivery};
use eventflow_core::{
    CheckpointStore, EventBus, EventStore, InMemoryBus, InMemoryCheckpointStore,
    InMemoryEventStore, InMemorySnapshotStore, Outbox, ParkedEntries, SnapshotStore,
};

use super::read_model::DocumentStore;

use crate::platform::config::Backend;
use crate::platform::startup::StartError;

/// Where one context keeps its data: its own, no other context reads it.
pub(crate) struct Persistence {
    pub(crate) store: Arc<dyn EventStore>,
    /// The same store's outbox.
    pub(crate) outbox: Arc<dyn Outbox>,
    /// The same outbox's parked entries.
    pub(crate) parked: Arc<dyn ParkedEntries>,
    /// The same store when it is the in-memory one, for its global feed (memory reports).
    pub(crate) feed: Option<Arc<InMemoryEventStore>>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) checkpoints: Arc<dyn CheckpointStore>,
    /// Where read models are kept: `None` in memory.
    pub(crate) documents: Option<Arc<dyn DocumentStore>>,
}

/// The backends a process of the app runs on.
#[derive(Debug, Clone)]
pub(crate) enum Backends {
    /// In memory: one bus shared by every context of this process.
    Local { bus: Arc<InMemoryBus> },
    /// DynamoDB and EventBridge + SQS or Pub/Sub.
    #[cfg(feature = "cloud")]
    Cloud(Arc<super::cloud::Cloud>),
    /// `inner`, in a process that an event invokes (AWS Lambda): subscriptions are recorded in
    /// `subscribers` rather than polled, and no loop runs between invocations.
    #[cfg(feature = "lambda")]
    Invoked {
        inner: Box<Backends>,
        subscribers: super::lambda::bus::Subscribers,
    },
}

impl Backends {
    /// Connects to what `backend` names (nothing to connect to in memory).
    pub(crate) async fn connect(backend: &Backend) -> Result<Backends, StartError> {
        match backend {
            Backend::Local => Ok(Backends::Local {
                bus: Arc::new(InMemoryBus::new()),
            }),
            #[cfg(feature = "cloud")]
            Backend::Cloud(settings) => Ok(Backends::Cloud(Arc::new(
                super::cloud::Cloud::connect(settings).await?,
            ))),
            #[cfg(not(feature = "cloud"))]
            Backend::Cloud(_) => Err(StartError::wiring(
                "backends",
                "this build has no cloud backends: build with --features cloud",
            )),
        }
    }

    /// Where an invoked process records its subscriptions (`None` elsewhere).
    #[cfg(feature = "lambda")]
    pub(crate) fn subscribers(&self) -> Option<&super::lambda::bus::Subscribers> {
        match self {
            Backends::Invoked { subscribers, .. } => Some(subscribers),
            _ => None,
        }
    }

    /// Whether loops run between requests (the outbox relay's): not in an invoked process,
    /// which is frozen between invocations.
    pub(crate) fn runs_loops(&self) -> bool {
        #[cfg(feature = "lambda")]
        if let Backends::Invoked { .. } = self {
            return false;
        }
        true
    }

    /// `service`'s event store, outbox, snapshots, checkpoints and read models: fresh in memory,
    /// or its own DynamoDB tables.
    pub(crate) fn persistence(&self, service: &str) -> Persistence {
        #[cfg(not(feature = "cloud"))]
        let _ = service;
        match self {
            #[cfg(feature = "lambda")]
            Backends::Invoked { inner, .. } => inner.persistence(service),
            Backends::Local { .. } => {
                let store = Arc::new(InMemoryEventStore::new());
                Persistence {
                    store: store.clone(),
                    outbox: store.clone(),
                    parked: store.clone(),
                    feed: Some(store),
                    snapshots: Arc::new(InMemorySnapshotStore::new()),
                    checkpoints: Arc::new(InMemoryCheckpointStore::new()),
                    documents: None,
                }
            }
            #[cfg(feature = "cloud")]
            Backends::Cloud(cloud) => {
                let store = Arc::new(cloud.event_store(service));
                Persistence {
                    store: store.clone(),
                    outbox: store.clone(),
                    parked: store.clone(),
                    feed: None,
                    snapshots: Arc::new(store.snapshot_store()),
                    checkpoints: Arc::new(store.checkpoint_store()),
                    documents: Some(Arc::new(store.documents())),
                }
            }
        }
    }

    /// How often a relay looks at its outbox when nobody kicked it: the safety net for entries a
    /// kick missed (a crash between commit and kick). Every command and handler kicks its relay,
    /// so this is not the latency of an event; on DynamoDB each look is two queries, so a
    /// service that sits idle should not look often.
    pub(crate) fn relay_interval(&self) -> Duration {
        match self {
            Backends::Local { .. } => Duration::from_millis(200),
            #[cfg(feature = "cloud")]
            Backends::Cloud(_) => Duration::from_secs(2),
            #[cfg(feature = "lambda")]
            Backends::Invoked { inner, .. } => inner.relay_interval(),
        }
    }

    /// How long the bus may take to deliver again a message a dead process held (`None` in
    /// memory).
    pub(crate) fn redelivery(&self) -> Option<Redelivery> {
        match self {
            Backends::Local { .. } => None,
            #[cfg(feature = "cloud")]
            Backends::Cloud(cloud) => cloud.redelivery(),
            #[cfg(feature = "lambda")]
            Backends::Invoked { inner, .. } => inner.redelivery(),
        }
    }

    /// The bus every context of the deployment shares.
    pub(crate) fn bus(&self) -> Arc<dyn EventBus> {
        match self {
            Backends::Local { bus } => Arc::clone(bus) as Arc<dyn EventBus>,
            #[cfg(feature = "cloud")]
            Backends::Cloud(cloud) => cloud.bus(),
            #[cfg(feature = "lambda")]
            Backends::Invoked { inner, subscribers } => Arc::new(super::lambda::bus::InvokedBus {
                inner: inner.bus(),
                subscribers: subscribers.clone(),
            }),
        }
    }

    /// The work queue `settings` names: in memory, or an SQS queue (with its dead-letter queue)
    /// that every instance of the consuming service shares.
    pub(crate) async fn work_queue(
        &self,
        settings: QueueSettings,
    ) -> Result<Arc<dyn DeadLetterQueue>, StartError> {
        match self {
            Backends::Local { .. } => Ok(Arc::new(InMemoryWorkQueue::new(settings))),
            #[cfg(feature = "cloud")]
            Backends::Cloud(cloud) => cloud.work_queue(&settings).await,
            #[cfg(feature = "lambda")]
            Backends::Invoked { inner, .. } => Box::pin(inner.work_queue(settings)).await,
        }
    }
}
