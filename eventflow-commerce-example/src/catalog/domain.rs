//! A product: one stream per product id (`product-{id}`).

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::contract::{ProductListed, events};

#[derive(Debug, Default)]
pub(crate) struct Product {
    listed: Option<ProductListed>,
}

pub(crate) enum ProductCommand {
    List(ProductListed),
}

/// The catalog's events; `ProductListed` is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum ProductEvent {
    ProductListed(ProductListed),
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::ProductListed(_) => events::PRODUCT_LISTED,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProductError {
    #[error("product {0} is listed already with other details")]
    ListedDifferently(String),
    #[error("a price must be positive")]
    FreeProduct,
}

impl Aggregate for Product {
    const STREAM_TYPE: &'static str = crate::contract::streams::PRODUCT;
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn handle(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::List(listing) if listing.price_cents == 0 => {
                Err(ProductError::FreeProduct)
            }
            // Listing the same product the same way again is a no-op (a restart seeding it).
            ProductCommand::List(listing) => match &self.listed {
                Some(listed) if listed == listing => Ok(vec![]),
                Some(_) => Err(ProductError::ListedDifferently(listing.product_id.clone())),
                None => Ok(vec![ProductEvent::ProductListed(listing.clone())]),
            },
        }
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductListed(listing) => self.listed = Some(listing.clone()),
        }
    }
}
