//! Wiring: every context on its own in-memory event store, one shared in-memory bus, the seed,
//! and each context's HTTP service on its port. The contexts meet only on the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventflow_core::{
    Aggregate, CommandContext, Projector, Repository, StreamId, SubscriptionHandle,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::application::Catalog;
use crate::contract::{self, ProductListed};
use crate::identity::application::Identity;
use crate::ordering::domain::Order;
use crate::ordering::infrastructure::{OrderViews, PriceList};
use crate::platform::auth::Jwt;
use crate::platform::backends::Backends;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::server::{Service, Shutdown};
pub use crate::platform::startup::StartError;
use crate::{
    catalog, identity, inventory, notification, orchestration, ordering, payment, shipping,
};

/// The seeded catalog: id, name, price in cents, stock.
pub(crate) const PRODUCTS: [(&str, &str, u64, u64); 5] = [
    ("prod-1", "Mechanical Keyboard", 8_999, 100),
    ("prod-2", "4K Monitor", 39_900, 50),
    ("prod-3", "USB-C Hub", 4_950, 200),
    ("prod-4", "Noise-Cancelling Headphones", 24_999, 30),
    ("prod-5", "Limited Edition Poster", 1_999, 5),
];

/// The seeded users: login, password, customer id.
pub(crate) const USERS: [(&str, &str, &str); 2] = [
    ("user@example.com", "password", "customer-1"),
    ("other@example.com", "password", "customer-2"),
];

/// The running app: every service of [`SERVICES`](crate::SERVICES) on its port.
pub struct RunningApp {
    addresses: Vec<(&'static str, SocketAddr)>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// In a mutex only so the app is `Sync` (a handle's stop function is not); used by `stop`.
    consumers: std::sync::Mutex<Vec<SubscriptionHandle>>,
    timers: Option<JoinHandle<()>>,
    orders: Option<Arc<Projector<OrderViews>>>,
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
                .serve(addr, Arc::clone(&contexts.jwt), shutdown.clone())
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
            timers: contexts.timers,
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
        if let Some(timers) = contexts.timers {
            let _ = timers.await;
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
            Some(orders) => orders.projection().len().await.unwrap_or_default(),
            None => 0,
        }
    }

    /// The status an order has in ordering's read model (`PENDING`, `COMPLETED`, `CANCELLED`),
    /// without going through HTTP: for load generators that must not add polling load.
    pub async fn order_status(&self, order_id: &str) -> Option<&'static str> {
        let view = self.orders.as_ref()?.projection().get(order_id).await;
        view.ok().flatten().map(|o| o.status.as_str())
    }

    /// Waits, up to `timeout`, until the order is settled (completed or cancelled) in
    /// ordering's read model, and returns its status then. It wakes on the projection's progress
    /// rather than polling, so a load generator can time every order without adding load.
    pub async fn wait_until_settled(
        &self,
        order_id: &str,
        timeout: Duration,
    ) -> Option<&'static str> {
        let stream = StreamId::for_aggregate(<Order as Aggregate>::STREAM_TYPE, order_id);
        // Placed is version 1; completed or cancelled is version 2.
        let orders = self.orders.as_ref()?;
        orders.wait_for(&stream, 2, timeout).await.ok()?;
        self.order_status(order_id).await
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
        if let Some(timers) = self.timers {
            let _ = timers.await;
        }
    }
}

/// The contexts [`Config::role`] names, started on one set of backends.
struct Contexts {
    jwt: Arc<Jwt>,
    services: Vec<Service>,
    consumers: Vec<SubscriptionHandle>,
    timers: Option<JoinHandle<()>>,
    orders: Option<Arc<Projector<OrderViews>>>,
    infra: Vec<ContextInfra>,
}

impl Contexts {
    async fn start(
        config: &Config,
        backends: &Backends,
        shutdown: &Shutdown,
    ) -> Result<Contexts, StartError> {
        let place_order = contract::place_order(config.step_timeout, config.step_sends);
        orchestration::infrastructure::check_timing(&place_order, backends.redelivery(), config)?;
        let jwt = Arc::new(Jwt::new(config.jwt_secret.as_bytes(), config.token_ttl));
        let runs = |service: &str| config.role.runs(service);
        let mut infra = Vec::new();
        let mut context = |name: &'static str| {
            let context = ContextInfra::new(name, backends, shutdown);
            infra.push(context.clone());
            context
        };
        let mut started = Vec::new();
        let mut catalog = None;
        if runs("catalog") {
            let (context, s) = catalog::infrastructure::start(&context("catalog")).await?;
            catalog = Some(context);
            started.push(s);
        }
        let mut ordering = None;
        if runs("ordering") {
            let (context, s) = ordering::infrastructure::start(&context("ordering")).await?;
            ordering = Some(context);
            started.push(s);
        }
        if runs("payment") {
            let payment = &context("payment");
            started.push(
                payment::infrastructure::start(payment, config.payment_max_order_cents).await?,
            );
        }
        let mut stock = None;
        if runs("inventory") {
            let (context, s) = inventory::infrastructure::start(&context("inventory")).await?;
            stock = Some(context);
            started.push(s);
        }
        if runs("shipping") {
            started.push(shipping::infrastructure::start(&context("shipping")).await?);
        }
        if runs("notification") {
            let notification = &context("notification");
            started.push(
                notification::infrastructure::start(
                    notification,
                    config.notification_visibility,
                    config.email_latency,
                )
                .await?,
            );
        }
        let mut timers = None;
        if runs("saga") {
            let saga = &context("saga");
            let (s, running) =
                orchestration::infrastructure::start(saga, place_order, shutdown).await?;
            timers = Some(running);
            started.push(s);
        }
        let mut identity = None;
        if runs("identity") {
            let identity_context = &context("identity");
            let (context, s) =
                identity::infrastructure::start(identity_context, Arc::clone(&jwt)).await?;
            identity = Some(context);
            started.push(s);
        }
        if let (Some(catalog), Some(identity), Some(stock)) = (&catalog, &identity, &stock) {
            seed(catalog, identity, stock, config.seed_stock).await?;
        }
        if let (Some(_), Some(ordering)) = (&catalog, &ordering) {
            wait_until_priced(ordering.prices.projection()).await?;
        }
        let mut consumers = Vec::new();
        let mut services = Vec::new();
        for context in started {
            consumers.extend(context.consumers);
            services.push(context.service);
        }
        Ok(Contexts {
            jwt,
            services,
            consumers,
            timers,
            orders: ordering.map(|o| Arc::clone(&o.views)),
            infra,
        })
    }
}

async fn seed(
    catalog: &Catalog,
    identity: &Identity,
    stock: &Repository<inventory::domain::Stock>,
    seed_stock: Option<u64>,
) -> Result<(), StartError> {
    let failed = |what: &'static str| move |cause: String| StartError::Wiring { what, cause };
    for (product_id, name, price_cents, quantity) in PRODUCTS {
        let listing = ProductListed {
            product_id: product_id.to_owned(),
            name: name.to_owned(),
            price_cents,
            currency: "USD".to_owned(),
        };
        catalog
            .list(listing, CommandContext::new().with_correlation_id("seed"))
            .await
            .map_err(|e| failed("seeding the catalog")(e.to_string()))?;
        inventory::application::seed(stock, product_id, seed_stock.unwrap_or(quantity))
            .await
            .map_err(|e| failed("seeding inventory")(e.to_string()))?;
    }
    for (username, password, customer_id) in USERS {
        match identity.register(username, customer_id, password).await {
            Ok(()) | Err(identity::application::IdentityError::AlreadyRegistered) => {}
            Err(e) => return Err(failed("seeding users")(e.to_string())),
        }
    }
    Ok(())
}

/// The seed's products reach ordering's price list over the bus; orders are refused until then.
async fn wait_until_priced(prices: &PriceList) -> Result<(), StartError> {
    // A cloud bus takes a few polls of its queue; memory takes milliseconds.
    for _ in 0..3_000 {
        if prices.len().await.unwrap_or_default() >= PRODUCTS.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(StartError::Wiring {
        what: "seed",
        cause: "the catalog did not reach ordering's price list within 30 s".into(),
    })
}
