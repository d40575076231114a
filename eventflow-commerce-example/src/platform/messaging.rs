//! Persistence and bus plumbing a context needs: its own event store with an outbox relayed to
//! the shared bus, its snapshots, checkpoints and read models, and message handlers that run in
//! the context's span (service + correlation id in every log line) and relay at once what they
//! recorded. [`Backends`] decides where all of it lives. Each context counts its work in its own
//! [`Metrics`]: commands through its store, deliveries, dead letters, projections, its outbox.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderValue;
use eventflow_bus::{DeadLetterQueue, QueueSettings, WorkQueue};
use eventflow_core::{
    Aggregate, Backoff, CheckpointStore, Delivery, EventBus, EventStore, Filter, GlobalFeed,
    HandlerError, InMemoryEventStore, MessageHandler, Outbox, OutboxRelay, ParkedEntries,
    Projection, Projector, Repository, SnapshotPolicy, SnapshotStore, StreamId, Subscription,
    SubscriptionHandle,
};
use eventflow_saga::Participant;
use metrics::Counter;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;

use super::auth::Jwt;
use super::backends::{Backends, Persistence};
use super::metrics::{
    DEAD_LETTERS, MeasuredProjector, MeteredStore, Metrics, OUTBOX_COUNT_LIMIT, OUTBOX_PARKED,
    OUTBOX_PENDING,
};
use super::read_model::{DocumentStore, Documents};
use super::server::{ReadyCheck, Service, Shutdown};
use crate::platform::startup::StartError;

/// How many aggregates a context's repository keeps in memory between commands, so a hot one
/// (a product's stock) is not replayed for every command.
const CACHED_AGGREGATES: usize = 10_000;

/// A context's persistence and messaging: its own event store (no other context reads it), the
/// relay of its outbox, the shared bus, and its metrics.
#[derive(Clone)]
pub(crate) struct ContextInfra {
    pub(crate) service: &'static str,
    /// Counted: every command that writes goes through it.
    pub(crate) store: Arc<dyn EventStore>,
    /// The same store when it is the in-memory one, for its global feed (memory reports).
    feed: Option<Arc<InMemoryEventStore>>,
    snapshots: Arc<dyn SnapshotStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    /// Where read models are kept: `None` in memory.
    documents: Option<Arc<dyn DocumentStore>>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) relay: Arc<OutboxRelay>,
    /// The app's token signer and verifier (identity issues tokens, every service checks them).
    pub(crate) jwt: Arc<Jwt>,
    /// Resolves when the app stops: for the context's own long-running tasks.
    pub(crate) shutdown: Shutdown,
    /// The service's registry, rendered by its `/metrics`.
    pub(crate) metrics: Metrics,
    /// `x-app-version` of every response.
    app_version: HeaderValue,
    backends: Backends,
}

impl ContextInfra {
    /// The context's store, snapshots, checkpoints and read models on `backends`, its outbox
    /// relayed to the shared bus with the context's name as the messages' source, and its
    /// metrics, reporting `app_version`. The relay runs until `shutdown`.
    pub(crate) fn new(
        service: &'static str,
        backends: &Backends,
        shutdown: &Shutdown,
        jwt: &Arc<Jwt>,
        app_version: &str,
    ) -> Self {
        let bus = backends.bus();
        let Persistence {
            store,
            outbox,
            parked,
            feed,
            snapshots,
            checkpoints,
            documents,
        } = backends.persistence(service);
        let metrics = Metrics::new(service, app_version);
        metrics.keep_up(shutdown.clone());
        sample_outbox(&metrics, service, &outbox, parked);
        let store: Arc<dyn EventStore> = Arc::new(MeteredStore::new(store, &metrics));
        let relay = Arc::new(OutboxRelay::new(outbox, Arc::clone(&bus), service));
        if backends.runs_loops() {
            let relaying = Arc::clone(&relay);
            let stop = shutdown.clone();
            let interval = backends.relay_interval();
            tokio::spawn(async move { relaying.run(interval, stop.wait()).await });
        }
        ContextInfra {
            service,
            store,
            feed,
            snapshots,
            checkpoints,
            documents,
            bus,
            relay,
            jwt: Arc::clone(jwt),
            shutdown: shutdown.clone(),
            metrics,
            // The configuration checked it: visible ASCII.
            app_version: HeaderValue::from_str(app_version)
                .unwrap_or_else(|_| HeaderValue::from_static(env!("CARGO_PKG_VERSION"))),
            backends: backends.clone(),
        }
    }

    /// Whether the context's loops run between requests: not in a process an event invokes
    /// (AWS Lambda), whose queues invoke it instead.
    pub(crate) fn runs_loops(&self) -> bool {
        self.backends.runs_loops()
    }

    /// The work queue `settings` names, on this context's backends.
    pub(crate) async fn work_queue(
        &self,
        settings: QueueSettings,
    ) -> Result<Arc<dyn DeadLetterQueue>, StartError> {
        self.backends.work_queue(settings).await
    }

    /// The read-model collection `collection` of this context.
    pub(crate) fn documents<T>(&self, collection: &str) -> Documents<T> {
        match &self.documents {
            None => Documents::in_memory(collection),
            Some(store) => Documents::new(Arc::clone(store), collection),
        }
    }

    /// Subscribes `handler` to the bus, running each delivery in this context's span and relaying
    /// what it recorded right after.
    pub(crate) async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<SubscriptionHandle, StartError> {
        let name = subscription.name.clone();
        let handler = self.in_context(handler, &name, subscription.retry.max_attempts);
        self.bus
            .subscribe(subscription, handler)
            .await
            .map_err(|e| StartError::wiring(self.service, format!("subscription {name}: {e}")))
    }

    /// Subscribes the context's saga participant to the commands it handles. An invoked process
    /// (AWS Lambda) also records it, to answer Step Functions tasks with it.
    pub(crate) async fn participate<A: Aggregate>(
        &self,
        participant: Participant<A>,
    ) -> Result<SubscriptionHandle, StartError> {
        let participant = Arc::new(participant);
        #[cfg(feature = "lambda")]
        if let Some(subscribers) = self.backends.subscribers() {
            subscribers.add_participant(Arc::clone(&participant) as _);
        }
        self.subscribe(participant.subscription(), participant)
            .await
    }

    /// A repository of `A` on this context's store, with the context's cache; `outbox` when its
    /// events are published.
    pub(crate) fn repository<A: Aggregate>(&self, outbox: bool) -> Repository<A> {
        Repository::new(Arc::clone(&self.store))
            .with_cache(CACHED_AGGREGATES)
            .with_outbox(outbox)
    }

    /// Like [`repository`](Self::repository), for a hot aggregate whose stream grows without end
    /// (every order touches a product's stock): snapshotted every `every` events, so a process
    /// that starts cold does not replay the whole history, and retried more on conflicts, which
    /// concurrent orders for one product make common.
    pub(crate) fn snapshotted<A>(&self, every: u64) -> Repository<A>
    where
        A: Aggregate + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.repository(false)
            .with_snapshots(Arc::clone(&self.snapshots), SnapshotPolicy::every(every))
            .with_conflict_retry(
                Backoff::new(17, Duration::from_millis(1), Duration::from_millis(20))
                    .with_full_jitter(),
            )
    }

    /// A projector fed by the bus, keeping its progress in this context's checkpoint store.
    pub(crate) fn projector<P: Projection>(&self, projection: P) -> Arc<Projector<P>> {
        Arc::new(Projector::new(
            Arc::new(projection),
            Arc::clone(&self.checkpoints),
        ))
    }

    /// Subscribes `projector` to the messages `filter` selects, under `name`.
    pub(crate) async fn project<P: Projection>(
        &self,
        name: &str,
        filter: Filter,
        projector: &Arc<Projector<P>>,
    ) -> Result<SubscriptionHandle, StartError> {
        self.subscribe(
            Subscription::new(name).with_filter(filter),
            self.measured(projector),
        )
        .await
    }

    /// `projector` as a message handler counted in the context's projection families.
    pub(crate) fn measured<P: Projection>(
        &self,
        projector: &Arc<Projector<P>>,
    ) -> Arc<dyn MessageHandler> {
        Arc::new(MeasuredProjector::new(projector, &self.metrics))
    }

    /// `handler`, running each delivery in this context's span and relaying what it recorded
    /// right after; a failure of delivery `max_attempts` (the last: the bus or queue then
    /// dead-letters the message) counts as a dead letter of `consumer`. For consumers other
    /// than bus subscriptions too, such as a work-queue worker.
    pub(crate) fn in_context(
        &self,
        handler: Arc<dyn MessageHandler>,
        consumer: &str,
        max_attempts: u32,
    ) -> Arc<dyn MessageHandler> {
        Arc::new(InContext {
            service: self.service,
            inner: handler,
            relay: Arc::clone(&self.relay),
            dead_letters: self
                .metrics
                .counter(DEAD_LETTERS, &[("subscription", consumer)]),
            max_attempts,
        })
    }

    /// How many events the context's store holds and their payload bytes (in memory only:
    /// `None` elsewhere).
    pub(crate) async fn stored(&self) -> eventflow_core::Result<Option<(u64, u64)>> {
        let Some(feed) = &self.feed else {
            return Ok(None);
        };
        let (mut events, mut bytes, mut from) = (0, 0, 1);
        loop {
            let page = feed.read_all(from, 1_000).await?;
            let Some(last) = page.last() else {
                return Ok(Some((events, bytes)));
            };
            from = last.position.unwrap_or(from) + 1;
            events += page.len() as u64;
            bytes += page.iter().map(|e| e.payload.len() as u64).sum::<u64>();
        }
    }

    /// The context's HTTP service: `routes`, and `/ready` checking its store.
    pub(crate) fn service(&self, routes: OpenApiRouter) -> Service {
        Service {
            name: self.service,
            routes,
            ready: self.ready_check(),
            metrics: self.metrics.clone(),
            app_version: self.app_version.clone(),
        }
    }

    /// `/ready`: the store answers a read and the bus a probe.
    fn ready_check(&self) -> ReadyCheck {
        let store = Arc::clone(&self.store);
        let bus = Arc::clone(&self.bus);
        Arc::new(move || {
            let (store, bus) = (Arc::clone(&store), Arc::clone(&bus));
            Box::pin(async move {
                store
                    .read_stream(&StreamId::new("readiness-probe"), 1, 1)
                    .await
                    .map_err(|e| format!("event store unreachable: {e}"))?;
                bus.health_check()
                    .await
                    .map_err(|e| format!("event bus unreachable: {e}"))
            })
        })
    }
}

/// `ready`, and then `queue` answering its probe.
pub(crate) fn ready_with_queue(ready: ReadyCheck, queue: Arc<dyn WorkQueue>) -> ReadyCheck {
    Arc::new(move || {
        let (ready, queue) = (Arc::clone(&ready), Arc::clone(&queue));
        Box::pin(async move {
            ready().await?;
            queue
                .health_check()
                .await
                .map_err(|e| format!("work queue unreachable: {e}"))
        })
    })
}

/// Reads the outbox's pending and parked entries into their gauges on each scrape (up to
/// [`OUTBOX_COUNT_LIMIT`] each: a scrape costs at most two bounded reads of the store).
fn sample_outbox(
    metrics: &Metrics,
    service: &'static str,
    outbox: &Arc<dyn Outbox>,
    parked: Arc<dyn ParkedEntries>,
) {
    let (pending_gauge, parked_gauge) = (
        metrics.gauge(OUTBOX_PENDING, &[]),
        metrics.gauge(OUTBOX_PARKED, &[]),
    );
    let outbox = Arc::clone(outbox);
    metrics.sample_on_scrape(move || {
        let (outbox, parked) = (Arc::clone(&outbox), Arc::clone(&parked));
        let (pending_gauge, parked_gauge) = (pending_gauge.clone(), parked_gauge.clone());
        async move {
            // A failed read keeps the last value; the store's failure shows on /ready.
            match outbox.pending(OUTBOX_COUNT_LIMIT).await {
                Ok(pending) => pending_gauge.set(pending.len() as f64),
                Err(error) => tracing::debug!(service, %error, "outbox not read for /metrics"),
            }
            match parked.parked(OUTBOX_COUNT_LIMIT).await {
                Ok(entries) => parked_gauge.set(entries.len() as f64),
                Err(error) => {
                    tracing::debug!(service, %error, "parked entries not read for /metrics")
                }
            }
        }
    });
}

/// A filter on message types (any source).
pub(crate) fn of_types(types: &[&str]) -> Filter {
    types.iter().fold(Filter::all(), |f, t| f.message_type(*t))
}

/// A handler running in its context's span.
struct InContext {
    service: &'static str,
    inner: Arc<dyn MessageHandler>,
    relay: Arc<OutboxRelay>,
    dead_letters: Counter,
    /// The delivery whose failure dead-letters the message.
    max_attempts: u32,
}

#[async_trait]
impl MessageHandler for InContext {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let span = tracing::info_span!(
            "message",
            service = self.service,
            correlation_id = delivery.message.correlation_id().unwrap_or(""),
            traceparent = delivery.message.traceparent().unwrap_or(""),
            message_type = %delivery.message.message_type,
            attempt = delivery.attempt,
        );
        if let Some(traceparent) = delivery.message.traceparent() {
            super::telemetry::continue_trace(&span, traceparent);
        }
        let last = delivery.attempt >= self.max_attempts;
        let handled = self.inner.handle(delivery).instrument(span).await;
        self.relay.kick();
        if handled.is_err() && last {
            self.dead_letters.increment(1);
        }
        handled
    }
}
