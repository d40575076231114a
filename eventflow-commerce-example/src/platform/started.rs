//! The one shape of a context's start: every context exposes
//! `start(&ContextInfra, &Config) -> Result<Started, StartError>`, and the app runs them in a loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventflow_core::SubscriptionHandle;
use tokio::task::JoinHandle;

use super::config::Config;
use super::messaging::ContextInfra;
use super::server::Service;
use super::startup::StartError;

/// A step the app awaits after every context has started: a seed, or a wait for one.
pub(crate) type Phase = Pin<Box<dyn Future<Output = Result<(), StartError>> + Send>>;

/// A context's start, as the app's list of contexts holds it.
pub(crate) type Start =
    for<'a> fn(
        &'a ContextInfra,
        &'a Config,
    ) -> Pin<Box<dyn Future<Output = Result<Started, StartError>> + Send + 'a>>;

/// A started context, as the app keeps it.
pub(crate) struct Started {
    /// Its HTTP service.
    pub(crate) service: Service,
    /// Its bus consumers, stopped on shutdown.
    pub(crate) consumers: Vec<SubscriptionHandle>,
    /// Tasks that run until shutdown (the orchestrator's timers), awaited on stop.
    pub(crate) tasks: Vec<JoinHandle<()>>,
    /// Its seed data, written once every context runs (so every subscriber sees it), when the
    /// role seeds ([`Role::seeds`](super::config::Role::seeds)).
    pub(crate) seed: Option<Phase>,
    /// What must hold before the app says it started, awaited after every seed (ordering: the
    /// seeded prices reached its price list, so the first order can be priced).
    pub(crate) ready: Option<Phase>,
    /// Ordering's read model, for the app's probes that must not go through HTTP.
    pub(crate) orders: Option<Arc<dyn OrderProbe>>,
}

impl Started {
    /// A context serving `service` and consuming with `consumers`, with nothing else to do.
    pub(crate) fn new(service: Service, consumers: Vec<SubscriptionHandle>) -> Self {
        Started {
            service,
            consumers,
            tasks: Vec::new(),
            seed: None,
            ready: None,
            orders: None,
        }
    }

    /// Writes `seed` once every context runs, when the role seeds.
    pub(crate) fn seeding(mut self, config: &Config, seed: Phase) -> Self {
        if config.role.seeds() {
            self.seed = Some(seed);
        }
        self
    }
}

/// What load generators ask of ordering's read model without adding HTTP load.
#[async_trait]
pub(crate) trait OrderProbe: Send + Sync {
    /// How many orders the read model holds.
    async fn count(&self) -> usize;
    /// An order's status (`PENDING`, `COMPLETED`, `CANCELLED`).
    async fn status(&self, order_id: &str) -> Option<&'static str>;
    /// Waits, up to `timeout`, until the order is completed or cancelled; its status then.
    async fn settled(&self, order_id: &str, timeout: Duration) -> Option<&'static str>;
}
