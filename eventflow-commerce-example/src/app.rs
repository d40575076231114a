//! Wiring: every context on its own in-memory event store, one shared in-memory bus, the seed,
//! and each context's HTTP service on its port. The contexts meet only on the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventflow_core::{
    Aggregate, CommandContext, EventBus, InMemoryBus, Projector, Repository, StreamId,
    SubscriptionHandle,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::application::Catalog;
use crate::config::Config;
use crate::contract::ProductListed;
use crate::identity::application::Identity;
use crate::ordering::domain::Order;
use crate::ordering::infrastructure::{OrderViews, PriceList};
use crate::platform::auth::Jwt;
use crate::platform::messaging::ContextInfra;
use crate::platform::server::Shutdown;
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
    timers: JoinHandle<()>,
    orders: Arc<Projector<OrderViews>>,
    contexts: Vec<ContextInfra>,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A service could not listen on its address.
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    /// A part could not be wired or seeded.
    #[error("{what}: {cause}")]
    Wiring {
        /// The part.
        what: &'static str,
        /// Why.
        cause: String,
    },
}

impl StartError {
    pub(crate) fn wiring(what: &'static str, cause: impl std::fmt::Display) -> Self {
        StartError::Wiring {
            what,
            cause: cause.to_string(),
        }
    }
}

impl RunningApp {
    /// Starts every context and service in this process, on in-memory backends, seeds the
    /// data, and returns once the catalog is visible to ordering (so the first order can be
    /// priced).
    pub async fn start(config: &Config) -> Result<RunningApp, StartError> {
        let (stop, shutdown) = Shutdown::new();
        let bus: Arc<dyn EventBus> = Arc::new(InMemoryBus::new());
        let jwt = Arc::new(Jwt::new(config.jwt_secret.as_bytes(), config.token_ttl));
        let mut contexts = Vec::new();
        let mut infra = |name: &'static str| {
            let infra = ContextInfra::in_memory(name, Arc::clone(&bus), &shutdown);
            contexts.push(infra.clone());
            infra
        };
        let (catalog, catalog_started) = catalog::infrastructure::start(&infra("catalog")).await?;
        let (ordering, ordering_started) =
            ordering::infrastructure::start(&infra("ordering")).await?;
        let payment_started =
            payment::infrastructure::start(&infra("payment"), config.payment_max_order_cents)
                .await?;
        let (stock, inventory_started) =
            inventory::infrastructure::start(&infra("inventory")).await?;
        let shipping_started = shipping::infrastructure::start(&infra("shipping")).await?;
        let notification_started =
            notification::infrastructure::start(&infra("notification")).await?;
        let (saga_started, timers) =
            orchestration::infrastructure::start(&infra("saga"), config.step_timeout, &shutdown)
                .await?;
        let (identity, identity_started) =
            identity::infrastructure::start(&infra("identity"), Arc::clone(&jwt)).await?;
        let started = [
            catalog_started,
            ordering_started,
            payment_started,
            inventory_started,
            shipping_started,
            notification_started,
            saga_started,
            identity_started,
        ];
        let mut consumers = Vec::new();
        let mut services = Vec::new();
        for context in started {
            consumers.extend(context.consumers);
            services.push(context.service);
        }

        seed(&catalog, &identity, &stock, config.seed_stock).await?;
        wait_until_priced(ordering.prices.projection()).await?;

        let mut addresses = Vec::new();
        let mut servers = Vec::new();
        for service in services {
            let name = service.name;
            let addr = SocketAddr::new(config.host, config.port_of(name));
            let (local, task) = service
                .serve(addr, Arc::clone(&jwt), shutdown.clone())
                .await?;
            addresses.push((name, local));
            servers.push(task);
        }
        addresses.sort_by_key(|(name, _)| crate::config::SERVICES.iter().position(|s| s == name));
        Ok(RunningApp {
            addresses,
            stop,
            servers,
            consumers: std::sync::Mutex::new(consumers),
            timers,
            orders: Arc::clone(&ordering.views),
            contexts,
        })
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

    /// How many orders ordering's read model holds.
    pub fn order_count(&self) -> usize {
        self.orders.projection().len()
    }

    /// The status an order has in ordering's read model (`PENDING`, `COMPLETED`, `CANCELLED`),
    /// without going through HTTP: for load generators that must not add polling load.
    pub fn order_status(&self, order_id: &str) -> Option<&'static str> {
        self.orders
            .projection()
            .get(order_id)
            .map(|o| o.status.as_str())
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
        self.orders.wait_for(&stream, 2, timeout).await.ok()?;
        self.order_status(order_id)
    }

    /// Per context: the events its store holds and their payload bytes (what the in-memory
    /// stores keep; a memory report).
    pub async fn stored_events(&self) -> Vec<(&'static str, u64, u64)> {
        let mut report = Vec::new();
        for context in &self.contexts {
            let (events, bytes) = context.stored().await.unwrap_or_default();
            report.push((context.service, events, bytes));
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
        let _ = self.timers.await;
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
    for _ in 0..500 {
        if prices.len() >= PRODUCTS.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(StartError::Wiring {
        what: "seed",
        cause: "the catalog did not reach ordering's price list within 5 s".into(),
    })
}
