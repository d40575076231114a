//! Ordering's read side: the order view (its own events) and the price list (catalog's
//! `ProductListed`, received over the bus: ordering never reads the catalog's store).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventflow_core::{Envelope, Projection, Result};
use serde::Serialize;
use utoipa::ToSchema;

use super::domain::{Order, OrderEvent, OrderStatus};
use crate::catalog::domain::{Product, ProductEvent};
use crate::contract::{Address, OrderLine, ProductListed};

/// An order as queries see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
#[derive(Debug, Default)]
pub(crate) struct OrderViews {
    orders: RwLock<HashMap<String, OrderView>>,
}

impl OrderViews {
    pub(crate) fn get(&self, order_id: &str) -> Option<OrderView> {
        self.orders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(order_id)
            .cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.orders.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A customer's orders, newest first: `(page, total)`.
    pub(crate) fn of_customer(
        &self,
        customer_id: &str,
        offset: usize,
        limit: usize,
    ) -> (Vec<OrderView>, usize) {
        let orders = self.orders.read().unwrap_or_else(|e| e.into_inner());
        let mut mine: Vec<&OrderView> = orders
            .values()
            .filter(|o| o.customer_id == customer_id)
            .collect();
        mine.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.order_id.cmp(&a.order_id))
        });
        let total = mine.len();
        let page = mine.into_iter().skip(offset).take(limit).cloned().collect();
        (page, total)
    }
}

#[async_trait]
impl Projection for OrderViews {
    type Aggregate = Order;

    fn name(&self) -> &str {
        "order-views"
    }

    async fn apply(&self, id: &str, event: &Envelope<OrderEvent>) -> Result<()> {
        let mut orders = self.orders.write().unwrap_or_else(|e| e.into_inner());
        let at = event.recorded_at;
        match &event.event {
            OrderEvent::OrderPlaced(placed) => {
                orders.insert(
                    id.to_owned(),
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
                );
            }
            OrderEvent::OrderCompleted(_) | OrderEvent::OrderCancelled(_) => {
                // The projector applies a stream's events in order: the order is there.
                if let Some(view) = orders.get_mut(id) {
                    view.updated_at = at;
                    if let OrderEvent::OrderCancelled(settled) = &event.event {
                        view.status = OrderStatus::Cancelled;
                        view.cancellation_reason.clone_from(&settled.reason);
                    } else {
                        view.status = OrderStatus::Completed;
                    }
                }
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        self.orders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}

/// Ordering's copy of the catalog's prices, projected from `ProductListed`.
#[derive(Debug, Default)]
pub(crate) struct PriceList {
    products: RwLock<HashMap<String, ProductListed>>,
}

impl PriceList {
    pub(crate) fn price_of(&self, product_id: &str) -> Option<u64> {
        self.products
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(product_id)
            .map(|p| p.price_cents)
    }

    pub(crate) fn len(&self) -> usize {
        self.products
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[async_trait]
impl Projection for PriceList {
    // The catalog's event schema is its published language; the projection decodes it and keeps
    // only what ordering needs.
    type Aggregate = Product;

    fn name(&self) -> &str {
        "ordering-price-list"
    }

    async fn apply(&self, id: &str, event: &Envelope<ProductEvent>) -> Result<()> {
        let ProductEvent::ProductListed(listing) = &event.event;
        self.products
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), listing.clone());
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        self.products
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}
