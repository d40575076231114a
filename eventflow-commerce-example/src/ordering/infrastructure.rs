//! Ordering's read side (the order view of its own events, and the price list of the catalog's
//! `ProductListed`, received over the bus: ordering never reads the catalog's store), and
//! ordering's wiring.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::{Envelope, Projection, Projector, Result, StreamId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::application::{Ordering, participant};
use super::domain::{OrderEvent, OrderStatus};
use crate::contract::{
    Address, CatalogFact, OrderLine, SEED_CUSTOMERS, SEED_PRODUCTS, events, streams,
};
use crate::platform::config::Config;
use crate::platform::customers::CustomerDirectory;
use crate::platform::messaging::{ContextInfra, of_types};
use crate::platform::read_model::Documents;
use crate::platform::started::{OrderProbe, Started};
use crate::platform::startup::StartError;

/// An order as queries see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderView {
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    #[schema(value_type = String, example = "PENDING")]
    pub(crate) status: OrderStatus,
    pub(crate) items: Vec<OrderLine>,
    pub(crate) total_cents: u64,
    pub(crate) shipping_address: Address,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cancellation_reason: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// The projected orders, by id.
#[derive(Debug)]
pub(crate) struct OrderViews {
    orders: Documents<OrderView>,
}

impl OrderViews {
    pub(crate) async fn get(&self, order_id: &str) -> Result<Option<OrderView>> {
        self.orders.get(order_id).await
    }

    pub(crate) async fn len(&self) -> Result<usize> {
        self.orders.len().await
    }

    /// A customer's orders, newest first: `(page, total)`.
    pub(crate) async fn of_customer(
        &self,
        customer_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<OrderView>, usize)> {
        let mut mine = self.orders.select(|o| o.customer_id == customer_id).await?;
        mine.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.order_id.cmp(&a.order_id))
        });
        let total = mine.len();
        Ok((mine.into_iter().skip(offset).take(limit).collect(), total))
    }
}

impl Projection for OrderViews {
    type Event = OrderEvent;
    const STREAMS: &'static [&'static str] = &[streams::ORDER];

    fn name(&self) -> &str {
        "order-views"
    }

    async fn apply(&self, id: &str, event: &Envelope<OrderEvent>) -> Result<()> {
        let at = event.recorded_at;
        match &event.event {
            OrderEvent::OrderPlaced(placed) => {
                self.orders
                    .put(
                        id,
                        OrderView {
                            order_id: placed.order_id.clone(),
                            customer_id: placed.customer_id.clone(),
                            status: OrderStatus::Pending,
                            items: placed.items.clone(),
                            total_cents: placed.total_cents,
                            shipping_address: placed.shipping_address.clone(),
                            cancellation_reason: None,
                            created_at: at,
                            updated_at: at,
                        },
                    )
                    .await
            }
            // The projector applies a stream's events in order: the order is there.
            OrderEvent::OrderCompleted(_) => {
                self.orders
                    .update(id, |view| {
                        view.status = OrderStatus::Completed;
                        view.updated_at = at;
                    })
                    .await
            }
            OrderEvent::OrderCancelled(settled) => {
                self.orders
                    .update(id, |view| {
                        view.status = OrderStatus::Cancelled;
                        view.cancellation_reason.clone_from(&settled.reason);
                        view.updated_at = at;
                    })
                    .await
            }
        }
    }

    async fn reset(&self) -> Result<()> {
        self.orders.clear().await
    }
}

/// Ordering's copy of the catalog's prices, projected from `ProductListed`.
#[derive(Debug)]
pub(crate) struct PriceList {
    prices: Documents<u64>,
}

impl PriceList {
    pub(crate) async fn price_of(&self, product_id: &str) -> Result<Option<u64>> {
        self.prices.get(product_id).await
    }

    pub(crate) async fn len(&self) -> Result<usize> {
        self.prices.len().await
    }
}

impl Projection for PriceList {
    // The catalog's published language, decoded into ordering's own type: ordering never
    // imports the catalog's domain.
    type Event = CatalogFact;
    const STREAMS: &'static [&'static str] = &[streams::PRODUCT];

    fn name(&self) -> &str {
        "ordering-price-list"
    }

    async fn apply(&self, id: &str, event: &Envelope<CatalogFact>) -> Result<()> {
        let CatalogFact::ProductListed(listing) = &event.event;
        self.prices.put(id, listing.price_cents).await
    }

    async fn reset(&self) -> Result<()> {
        self.prices.clear().await
    }
}

/// Starts ordering: the order repository (published through the outbox), the order view and the
/// price list (fed over the bus), the saga participant, the routes. When the role seeds, it is
/// ready once the seed's prices reached its price list (orders are refused until then).
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    // One repository (one cache) for commands, the saga participant and the reads.
    let orders = Arc::new(infra.repository(true));
    let ordering = Arc::new(Ordering {
        orders: Arc::clone(&orders),
        views: infra.projector(OrderViews {
            orders: infra.documents("ordering-orders"),
        }),
        prices: infra.projector(PriceList {
            prices: infra.documents("ordering-prices"),
        }),
        customers: infra.projector(CustomerDirectory::new(
            "ordering-customers",
            infra.documents("ordering-customers"),
        )),
        relay: Arc::clone(&infra.relay),
    });
    let own_events = of_types(&[
        events::ORDER_PLACED,
        events::ORDER_COMPLETED,
        events::ORDER_CANCELLED,
    ])
    .source(infra.service);
    let participant = participant(orders, Arc::clone(&infra.bus));
    let consumers = vec![
        infra
            .project("ordering-order-views", own_events, &ordering.views)
            .await?,
        infra
            .project(
                "ordering-price-list",
                of_types(&[events::PRODUCT_LISTED]),
                &ordering.prices,
            )
            .await?,
        infra
            .project(
                "ordering-customers",
                of_types(&[events::CUSTOMER_REGISTERED]),
                &ordering.customers,
            )
            .await?,
        infra.participate(participant).await?,
    ];
    let mut started = Started::new(
        infra.service(super::http::routes(Arc::clone(&ordering))),
        consumers,
    );
    if config.role.seeds() {
        started.ready = Some(Box::pin(wait_for_the_seed(Arc::clone(&ordering))));
    }
    started.orders = Some(Arc::clone(&ordering.views) as Arc<dyn OrderProbe>);
    Ok(started)
}

/// The seed's products and customers reach ordering's price list and customers over the bus;
/// orders are refused until then.
async fn wait_for_the_seed(ordering: Arc<Ordering>) -> Result<(), StartError> {
    // A cloud bus takes a few polls of its queue; memory takes milliseconds.
    for _ in 0..3_000 {
        let prices = ordering.prices.projection().len().await.unwrap_or_default();
        let customers = ordering
            .customers
            .projection()
            .len()
            .await
            .unwrap_or_default();
        if prices >= SEED_PRODUCTS.len() && customers >= SEED_CUSTOMERS.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(StartError::wiring(
        "seed",
        "the catalog's products and identity's customers did not reach ordering within 30 s",
    ))
}

#[async_trait]
impl OrderProbe for Projector<OrderViews> {
    async fn count(&self) -> usize {
        self.projection().len().await.unwrap_or_default()
    }

    async fn status(&self, order_id: &str) -> Option<&'static str> {
        let view = self.projection().get(order_id).await;
        view.ok().flatten().map(|o| o.status.as_str())
    }

    async fn settled(&self, order_id: &str, timeout: Duration) -> Option<&'static str> {
        let stream = StreamId::for_aggregate(streams::ORDER, order_id);
        // Placed is version 1; completed or cancelled is version 2.
        self.wait_for(&stream, 2, timeout).await.ok()?;
        self.status(order_id).await
    }
}
