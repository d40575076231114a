//! The catalog's read model: every listed product, projected from the catalog's own events as
//! they come back over the bus.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;
use eventflow_core::{Envelope, Projection, Result};

use super::domain::{Product, ProductEvent};
use crate::contract::ProductListed;

#[derive(Debug, Default)]
pub(crate) struct CatalogView {
    products: RwLock<BTreeMap<String, ProductListed>>,
}

impl CatalogView {
    pub(crate) fn all(&self) -> Vec<ProductListed> {
        self.products
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn get(&self, product_id: &str) -> Option<ProductListed> {
        self.products
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(product_id)
            .cloned()
    }
}

#[async_trait]
impl Projection for CatalogView {
    type Aggregate = Product;

    fn name(&self) -> &str {
        "catalog-view"
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
