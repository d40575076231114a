//! Wiring: every context on its own in-memory event store, one shared in-memory bus, the seed,
//! and each context's HTTP service on its port. The contexts meet only on the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventflow_core::SubscriptionHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::contract;
use crate::platform::auth::Jwt;
use crate::platform::backends::Backends;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::server::{Service, Shutdown};
use crate::platform::started::{OrderProbe, Start};
pub use crate::platform::startup::StartError;
use crate::{
    catalog, identity, inventory, notification, orchestration, ordering, payment, shipping,
};

/// `start` of a context, boxed into the one [`Start`] type.
macro_rules! boxed {
    ($context:ident) => {{
        fn start<'a>(
            infra: &'a ContextInfra,
            config: &'a Config,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<crate::platform::started::Started, StartError>,
                    > + Send
                    + 'a,
            >,
        > {
            Box::pin($context::start(infra, config))
        }
        start as Start
    }};
}

/// Every context, by its service name, in [`SERVICES`](crate::SERVICES) order.
fn every_context() -> [(&'static str, Start); 8] {
    [
        ("identity", boxed!(identity)),
        ("catalog", boxed!(catalog)),
        ("ordering", boxed!(ordering)),
        ("payment", boxed!(payment)),
        ("inventory", boxed!(inventory)),
        ("shipping", boxed!(shipping)),
        ("notification", boxed!(notification)),
        ("saga", boxed!(orchestration)),
    ]
}

/// Starts the context `service` names on `infra` (for a process that runs one context alone).
#[cfg(feature = "lambda")]
pub(crate) async fn start_context(
    service: &str,
    infra: &ContextInfra,
    config: &Config,
) -> Result<crate::platform::started::Started, StartError> {
    let (_, start) = every_context()
        .into_iter()
        .find(|(name, _)| *name == service)
        .ok_or_else(|| StartError::wiring("start", format!("no context {service:?}")))?;
    start(infra, config).await
}

/// The running app: every service of [`SERVICES`](crate::SERVICES) on its port.
pub struct RunningApp {
    addresses: Vec<(&'static str, SocketAddr)>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// In a mutex only so the app is `Sync` (a handle's stop function is not); used by `stop`.
    consumers: std::sync::Mutex<Vec<SubscriptionHandle>>,
    tasks: Vec<JoinHandle<()>>,
    orders: Option<Arc<dyn OrderProbe>>,
    contexts: Vec<ContextInfra>,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl RunningApp {
    /// Starts the services [`Config::role`] names on the [`Config::backend`], seeds the data
    /// when it runs them all, and returns once the catalog is visible to ordering (so the first
    /// order can be priced).
    pub async fn start(config: &Config) -> Result<RunningApp, StartError> {
        let (stop, shutdown) = Shutdown::new();
        let backends = Backends::connect(&config.backend).await?;
        let contexts = Contexts::start(config, &backends, &shutdown).await?;
        let mut addresses = Vec::new();
        let mut servers = Vec::new();
        for service in contexts.services {
            let name = service.name;
            let addr = SocketAddr::new(config.host, config.port_of(name));
            let (local, task) = service
                .serve(
                    addr,
                    Arc::clone(&contexts.jwt),
                    shutdown.clone(),
                    config.request_timeout,
                )
                .await?;
            addresses.push((name, local));
            servers.push(task);
        }
        addresses.sort_by_key(|(name, _)| {
            crate::platform::config::SERVICES
                .iter()
                .position(|s| s == name)
        });
        Ok(RunningApp {
            addresses,
            stop,
            servers,
            consumers: std::sync::Mutex::new(contexts.consumers),
            tasks: contexts.tasks,
            orders: contexts.orders,
            contexts: contexts.infra,
        })
    }

    /// `provision`: creates every context's tables, the bus, every subscription's queue or
    /// subscription and the work queue, seeds the catalog, stock and users, waits until the
    /// seed's prices reached ordering, and stops. Running it again changes nothing.
    #[cfg(feature = "cloud")]
    pub async fn provision(config: &Config) -> Result<(), StartError> {
        let (stop, shutdown) = Shutdown::new();
        let backends = Backends::connect(&config.backend).await?;
        let Backends::Cloud(cloud) = &backends else {
            return Err(StartError::wiring(
                "provision",
                "provisioning is for the distributed mode (EVENT_BUS_ADAPTER)",
            ));
        };
        cloud.create_tables().await?;
        let config = Config {
            role: crate::platform::config::Role::Provision,
            ..config.clone()
        };
        let contexts = Contexts::start(&config, &backends, &shutdown).await?;
        stop.send_replace(true);
        for consumer in contexts.consumers {
            consumer.unsubscribe().await;
        }
        for task in contexts.tasks {
            let _ = task.await;
        }
        Ok(())
    }

    /// Each service's name and address, in [`SERVICES`](crate::SERVICES) order.
    pub fn addresses(&self) -> &[(&'static str, SocketAddr)] {
        &self.addresses
    }

    /// The address of `service`, if it is one of [`SERVICES`](crate::SERVICES).
    pub fn address(&self, service: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, addr)| *addr)
    }

    /// How many orders ordering's read model holds (0 when ordering does not run here).
    pub async fn order_count(&self) -> usize {
        match &self.orders {
            Some(orders) => orders.count().await,
            None => 0,
        }
    }

    /// The status an order has in ordering's read model (`PENDING`, `COMPLETED`, `CANCELLED`),
    /// without going through HTTP: for load generators that must not add polling load.
    pub async fn order_status(&self, order_id: &str) -> Option<&'static str> {
        self.orders.as_ref()?.status(order_id).await
    }

    /// Waits, up to `timeout`, until the order is settled (completed or cancelled) in
    /// ordering's read model, and returns its status then. It wakes on the projection's progress
    /// rather than polling, so a load generator can time every order without adding load.
    pub async fn wait_until_settled(
        &self,
        order_id: &str,
        timeout: Duration,
    ) -> Option<&'static str> {
        self.orders.as_ref()?.settled(order_id, timeout).await
    }

    /// Per context: the events its store holds and their payload bytes (what the in-memory
    /// stores keep, a memory report; empty on the cloud backends).
    pub async fn stored_events(&self) -> Vec<(&'static str, u64, u64)> {
        let mut report = Vec::new();
        for context in &self.contexts {
            if let Ok(Some((events, bytes))) = context.stored().await {
                report.push((context.service, events, bytes));
            }
        }
        report
    }

    /// Stops gracefully: the servers stop accepting and finish the requests in flight, the
    /// outboxes relay what was committed, then every consumer finishes its deliveries in flight.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for server in self.servers {
            let _ = server.await;
        }
        let consumers = self
            .consumers
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        for consumer in consumers {
            consumer.unsubscribe().await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The contexts [`Config::role`] names, started on one set of backends.
struct Contexts {
    jwt: Arc<Jwt>,
    services: Vec<Service>,
    consumers: Vec<SubscriptionHandle>,
    tasks: Vec<JoinHandle<()>>,
    orders: Option<Arc<dyn OrderProbe>>,
    infra: Vec<ContextInfra>,
}

impl Contexts {
    /// Starts every context the role runs, then writes their seeds (every subscriber exists by
    /// then), then waits until each is ready.
    async fn start(
        config: &Config,
        backends: &Backends,
        shutdown: &Shutdown,
    ) -> Result<Contexts, StartError> {
        let place_order = contract::place_order(config.step_timeout, config.step_sends);
        orchestration::infrastructure::check_timing(&place_order, backends.redelivery(), config)?;
        let jwt = Arc::new(Jwt::new(config.jwt_secret.as_bytes(), config.token_ttl));
        let mut contexts = Contexts {
            jwt: Arc::clone(&jwt),
            services: Vec::new(),
            consumers: Vec::new(),
            tasks: Vec::new(),
            orders: None,
            infra: Vec::new(),
        };
        let (mut seeds, mut readiness) = (Vec::new(), Vec::new());
        for (name, start) in every_context() {
            if !config.role.runs(name) {
                continue;
            }
            let infra = ContextInfra::new(name, backends, shutdown, &jwt, &config.app_version);
            let started = start(&infra, config).await?;
            contexts.infra.push(infra);
            contexts.services.push(started.service);
            contexts.consumers.extend(started.consumers);
            contexts.tasks.extend(started.tasks);
            seeds.extend(started.seed);
            readiness.extend(started.ready);
            contexts.orders = contexts.orders.or(started.orders);
        }
        for seed in seeds {
            seed.await?;
        }
        for ready in readiness {
            ready.await?;
        }
        Ok(contexts)
    }
}
