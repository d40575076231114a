//! The catalog's read model (every listed product, projected from the catalog's own events as
//! they come back over the bus), and the catalog's wiring.

use std::sync::Arc;

use eventflow_core::{Envelope, Projection, Result};

use super::application::Catalog;
use super::domain::ProductEvent;
use crate::contract::{ProductListed, events};
use crate::platform::messaging::{ContextInfra, Started, of_types};
use crate::platform::read_model::Documents;
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

/// Starts the catalog: its repository, its view (fed by its own events over the bus), its routes.
pub(crate) async fn start(infra: &ContextInfra) -> Result<(Arc<Catalog>, Started), StartError> {
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
    let started = Started {
        service: infra.service(super::http::routes(Arc::clone(&catalog))),
        consumers: vec![view],
    };
    Ok((catalog, started))
}
