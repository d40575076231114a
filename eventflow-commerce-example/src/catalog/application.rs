//! Listing products (the seed) and reading the catalog.

use std::sync::Arc;

use eventflow_core::{CommandContext, CommandError, Projector, Repository, Result};

use super::domain::{Product, ProductCommand, ProductError};
use super::infrastructure::CatalogView;
use crate::contract::ProductListed;

pub(crate) struct Catalog {
    pub(crate) products: Repository<Product>,
    pub(crate) view: Arc<Projector<CatalogView>>,
}

impl Catalog {
    /// Lists a product; listing it again the same way changes nothing.
    pub(crate) async fn list(
        &self,
        listing: ProductListed,
        context: CommandContext,
    ) -> Result<(), CommandError<ProductError>> {
        let id = listing.product_id.clone();
        self.products
            .execute(&id, &ProductCommand::List(listing), context)
            .await
            .map(drop)
    }

    pub(crate) async fn all(&self) -> Result<Vec<ProductListed>> {
        self.view.projection().products.select(|_| true).await
    }

    pub(crate) async fn get(&self, product_id: &str) -> Result<Option<ProductListed>> {
        self.view.projection().products.get(product_id).await
    }
}
