//! Wiring: every context on its own in-memory event store, one shared in-memory bus, the seed,
//! and each context's HTTP service on its port. The contexts meet only on the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventflow_bus::{
    DeadLetterQueue, InMemoryWorkQueue, QueueSettings, WorkQueue, Worker, WorkerOptions,
};
use eventflow_core::{
    Aggregate, CheckpointStore, CommandContext, EventBus, Filter, InMemoryBus,
    InMemoryCheckpointStore, MessageHandler, Projection, Projector, Repository, StreamId,
    Subscription, SubscriptionHandle,
};
use eventflow_saga::Orchestrator;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::application::Catalog;
use crate::catalog::infrastructure::CatalogView;
use crate::config::Config;
use crate::contract::{self, PlacedOrder, ProductListed, events};
use crate::identity::application::Identity;
use crate::notification::application::{ForwardToQueue, LoggingSender, NotificationWorker};
use crate::notification::http::NotificationState;
use crate::ordering::application::Ordering;
use crate::ordering::domain::Order;
use crate::ordering::infrastructure::{OrderViews, PriceList};
use crate::platform::auth::Jwt;
use crate::platform::messaging::ContextInfra;
use crate::platform::server::{Service, Shutdown};
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

/// A product's stock stream grows by an event per order: snapshots keep a cold load short.
const STOCK_SNAPSHOT_EVERY: u64 = 200;

/// How long the notification queue hides a message being handled, and how many receives it gets
/// before it is dead-lettered.
const NOTIFICATION_VISIBILITY: Duration = Duration::from_secs(30);
const NOTIFICATION_MAX_RECEIVES: u32 = 5;

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

fn wiring(what: &'static str) -> impl FnOnce(eventflow_core::Error) -> StartError {
    move |e| StartError::Wiring {
        what,
        cause: e.to_string(),
    }
}

fn types(types: &[&str]) -> Filter {
    types.iter().fold(Filter::all(), |f, t| f.message_type(*t))
}

/// A projector fed by the bus, with its own checkpoints.
fn projector<P: Projection>(projection: P) -> Arc<Projector<P>> {
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    Arc::new(Projector::new(Arc::new(projection), checkpoints))
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
        let mut consumers = Vec::new();
        let mut services = Vec::new();

        // Catalog.
        let catalog_infra = infra("catalog");
        let catalog = Arc::new(Catalog {
            products: catalog_infra.repository(true),
            view: projector(CatalogView::default()),
        });
        consumers.push(
            catalog_infra
                .subscribe(
                    Subscription::new("catalog-view").with_filter(types(&[events::PRODUCT_LISTED])),
                    Arc::clone(&catalog.view) as Arc<dyn MessageHandler>,
                )
                .await
                .map_err(wiring("catalog view"))?,
        );
        services.push(Service {
            name: "catalog",
            routes: catalog::http::routes(Arc::clone(&catalog)),
            ready: catalog_infra.ready_check(),
        });

        // Ordering.
        let ordering_infra = infra("ordering");
        let ordering = Arc::new(Ordering {
            orders: ordering_infra.repository(true),
            views: projector(OrderViews::default()),
            prices: projector(PriceList::default()),
            relay: Arc::clone(&ordering_infra.relay),
        });
        let order_events = types(&[
            events::ORDER_PLACED,
            events::ORDER_COMPLETED,
            events::ORDER_CANCELLED,
        ]);
        consumers.push(
            ordering_infra
                .subscribe(
                    Subscription::new("ordering-order-views")
                        .with_filter(order_events.clone().source("ordering")),
                    Arc::clone(&ordering.views) as Arc<dyn MessageHandler>,
                )
                .await
                .map_err(wiring("order views"))?,
        );
        consumers.push(
            ordering_infra
                .subscribe(
                    Subscription::new("ordering-price-list")
                        .with_filter(types(&[events::PRODUCT_LISTED])),
                    Arc::clone(&ordering.prices) as Arc<dyn MessageHandler>,
                )
                .await
                .map_err(wiring("price list"))?,
        );
        let order_participant =
            ordering::application::participant(ordering_infra.repository(true), Arc::clone(&bus));
        consumers.push(
            ordering_infra
                .subscribe(
                    order_participant.subscription(),
                    Arc::new(order_participant),
                )
                .await
                .map_err(wiring("ordering participant"))?,
        );
        services.push(Service {
            name: "ordering",
            routes: ordering::http::routes(Arc::clone(&ordering)),
            ready: ordering_infra.ready_check(),
        });

        // Payment.
        let payment_infra = infra("payment");
        let payments = Arc::new(payment_infra.repository(false));
        let payment_participant = payment::application::participant(
            payment_infra.repository(false),
            Arc::clone(&bus),
            config.payment_max_order_cents,
        );
        consumers.push(
            payment_infra
                .subscribe(
                    payment_participant.subscription(),
                    Arc::new(payment_participant),
                )
                .await
                .map_err(wiring("payment participant"))?,
        );
        consumers.push(
            payment_infra
                .subscribe(
                    Subscription::new("payment-capture")
                        .with_filter(types(&[events::ORDER_COMPLETED]).source("ordering")),
                    Arc::new(payment::application::CaptureOnCompletion {
                        payments: Arc::clone(&payments),
                    }),
                )
                .await
                .map_err(wiring("payment capture"))?,
        );
        services.push(Service {
            name: "payment",
            routes: payment::http::routes(payments),
            ready: payment_infra.ready_check(),
        });

        // Inventory.
        let inventory_infra = infra("inventory");
        let stock = Arc::new(inventory_infra.snapshotted(STOCK_SNAPSHOT_EVERY));
        let inventory_participant = inventory::application::participant(
            inventory_infra.snapshotted(STOCK_SNAPSHOT_EVERY),
            Arc::clone(&bus),
        );
        consumers.push(
            inventory_infra
                .subscribe(
                    inventory_participant.subscription(),
                    Arc::new(inventory_participant),
                )
                .await
                .map_err(wiring("inventory participant"))?,
        );
        services.push(Service {
            name: "inventory",
            routes: inventory::http::routes(Arc::clone(&stock)),
            ready: inventory_infra.ready_check(),
        });

        // Shipping.
        let shipping_infra = infra("shipping");
        let shipping_participant =
            shipping::application::participant(shipping_infra.repository(false), Arc::clone(&bus));
        consumers.push(
            shipping_infra
                .subscribe(
                    shipping_participant.subscription(),
                    Arc::new(shipping_participant),
                )
                .await
                .map_err(wiring("shipping participant"))?,
        );
        services.push(Service {
            name: "shipping",
            routes: shipping::http::routes(Arc::new(shipping_infra.repository(false))),
            ready: shipping_infra.ready_check(),
        });

        // Notification: bus -> queue -> worker.
        let notification_infra = infra("notification");
        let queue = Arc::new(InMemoryWorkQueue::new(
            QueueSettings::new("notifications")
                .with_visibility_timeout(NOTIFICATION_VISIBILITY)
                .with_max_receives(Some(NOTIFICATION_MAX_RECEIVES)),
        ));
        let log = Arc::new(notification_infra.repository(false));
        consumers.push(
            notification_infra
                .subscribe(
                    Subscription::new("notification-queue-rule").with_filter(
                        types(&[events::ORDER_COMPLETED, events::ORDER_CANCELLED])
                            .source("ordering"),
                    ),
                    Arc::new(ForwardToQueue {
                        queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
                    }),
                )
                .await
                .map_err(wiring("notification rule"))?,
        );
        let worker = notification_infra.in_context(Arc::new(NotificationWorker {
            log: Arc::clone(&log),
            sender: Arc::new(LoggingSender),
        }));
        consumers.push(
            Worker::new(Arc::clone(&queue) as Arc<dyn WorkQueue>, worker)
                .with_options(WorkerOptions::new().with_wait_time(Duration::from_millis(500)))
                .start()
                .map_err(wiring("notification worker"))?,
        );
        services.push(Service {
            name: "notification",
            routes: notification::http::routes(NotificationState {
                log,
                queue: queue as Arc<dyn DeadLetterQueue>,
            }),
            ready: notification_infra.ready_check(),
        });

        // The saga orchestrator.
        let saga_infra = infra("saga");
        let orchestrator =
            Arc::new(
                Orchestrator::<PlacedOrder>::builder(
                    contract::place_order(config.step_timeout),
                    Arc::clone(&saga_infra.store),
                    Arc::clone(&bus),
                )
                .source("saga")
                .trigger(|message| {
                    if message.source != "ordering" {
                        return Ok(None);
                    }
                    let order: PlacedOrder = serde_json::from_value(message.payload.clone())
                        .map_err(|source| eventflow_saga::Error::Serialization {
                            what: format!("OrderPlaced {}", message.id),
                            source,
                        })?;
                    Ok(Some((order.order_id.clone(), order)))
                })
                .build()
                .map_err(|e| StartError::Wiring {
                    what: "saga orchestrator",
                    cause: e.to_string(),
                })?,
            );
        consumers.push(
            saga_infra
                .subscribe(
                    orchestrator.subscription(),
                    Arc::clone(&orchestrator) as Arc<dyn MessageHandler>,
                )
                .await
                .map_err(wiring("saga orchestrator"))?,
        );
        orchestrator
            .resume()
            .await
            .map_err(|e| StartError::Wiring {
                what: "saga resume",
                cause: e.to_string(),
            })?;
        let timers = {
            let orchestrator = Arc::clone(&orchestrator);
            let stop = shutdown.clone();
            tokio::spawn(async move { orchestrator.run_timers(stop.wait()).await })
        };
        services.push(Service {
            name: "saga",
            routes: orchestration::http::routes(orchestrator.query().clone()),
            ready: saga_infra.ready_check(),
        });

        // Identity.
        let identity_infra = infra("identity");
        let identity = Arc::new(
            Identity::new(identity_infra.repository(false), Arc::clone(&jwt))
                .await
                .map_err(|e| StartError::Wiring {
                    what: "identity",
                    cause: e.to_string(),
                })?,
        );
        services.push(Service {
            name: "identity",
            routes: identity::http::routes(Arc::clone(&identity)),
            ready: identity_infra.ready_check(),
        });

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
