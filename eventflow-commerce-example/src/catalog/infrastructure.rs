//! The catalog's read model (every listed product, projected from the catalog's own events as
//! they come back over the bus), and the catalog's wiring.

use std::sync::Arc;

use eventflow_core::{CommandContext, Envelope, Projection, Result};

use super::application::Catalog;
use super::domain::ProductEvent;
use crate::contract::{ProductListed, SEED_PRODUCTS, events};
use crate::platform::config::Config;
use crate::platform::messaging::{ContextInfra, of_types};
use crate::platform::read_model::Documents;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

#[derive(Debug)]
pub(crate) struct CatalogView {
    pub(crate) products: Documents<ProductListed>,
}

impl Projection for CatalogView {
    type Event = ProductEvent;
    const STREAMS: &'static [&'static str] = &[crate::contract::streams::PRODUCT];

    fn name(&self) -> &str {
        "catalog-view"
    }

    async fn apply(&self, id: &str, event: &Envelope<ProductEvent>) -> Result<()> {
        let ProductEvent::ProductListed(listing) = &event.event;
        self.products.put(id, listing.clone()).await
    }

    async fn reset(&self) -> Result<()> {
        self.products.clear().await
    }
}

/// Starts the catalog: its repository, its view (fed by its own events over the bus), its routes,
/// and the seed's listings.
pub(crate) async fn start(
    infra: &ContextInfra,
    config: &Config,
) -> std::result::Result<Started, StartError> {
    let catalog = Arc::new(Catalog {
        products: infra.repository(true),
        view: infra.projector(CatalogView {
            products: infra.documents("catalog-products"),
        }),
    });
    let view = infra
        .project(
            "catalog-view",
            of_types(&[events::PRODUCT_LISTED]),
            &catalog.view,
        )
        .await?;
    let service = infra.service(super::http::routes(Arc::clone(&catalog)));
    Ok(Started::new(service, vec![view]).seeding(config, Box::pin(seed(catalog))))
}

/// Lists the seed's products (listing one again the same way changes nothing).
async fn seed(catalog: Arc<Catalog>) -> std::result::Result<(), StartError> {
    for (product_id, name, price_cents, _) in SEED_PRODUCTS {
        let listing = ProductListed {
            product_id: product_id.to_owned(),
            name: name.to_owned(),
            price_cents,
            currency: "USD".to_owned(),
        };
        catalog
            .list(listing, CommandContext::new().with_correlation_id("seed"))
            .await
            .map_err(|e| StartError::wiring("seeding the catalog", e))?;
    }
    Ok(())
}
