//! The catalog's read model: every listed product, projected from the catalog's own events as
//! they come back over the bus.

use async_trait::async_trait;
use eventflow_core::{Envelope, Projection, Result};

use super::domain::{Product, ProductEvent};
use crate::contract::ProductListed;
use crate::platform::read_model::Documents;

#[derive(Debug, Default)]
pub(crate) struct CatalogView {
    pub(crate) products: Documents<ProductListed>,
}

#[async_trait]
impl Projection for CatalogView {
    type Aggregate = Product;

    fn name(&self) -> &str {
        "catalog-view"
    }

    async fn apply(&self, id: &str, event: &Envelope<ProductEvent>) -> Result<()> {
        let ProductEvent::ProductListed(listing) = &event.event;
        self.products.put(id, listing.clone());
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        self.products.clear();
        Ok(())
    }
}
