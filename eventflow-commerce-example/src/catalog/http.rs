//! `GET /catalog`, `GET /catalog/{productId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::application::Catalog;
use crate::contract::ProductListed;
use crate::platform::error::{ApiError, ErrorBody};
use crate::platform::text;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProductView {
    #[schema(example = "prod-1")]
    product_id: String,
    #[schema(example = "Mechanical Keyboard")]
    name: String,
    #[schema(example = 8999)]
    price_cents: u64,
    #[schema(example = "USD")]
    currency: String,
}

impl From<ProductListed> for ProductView {
    fn from(p: ProductListed) -> Self {
        ProductView {
            product_id: p.product_id,
            name: p.name,
            price_cents: p.price_cents,
            currency: p.currency,
        }
    }
}

/// Every product for sale.
#[utoipa::path(get, path = "/catalog", tag = "catalog",
    responses(
        (status = 200, description = "The catalog", body = [ProductView]),
        (status = 503, description = "The catalog's store is unavailable", body = ErrorBody),
    ))]
async fn list(State(catalog): State<Arc<Catalog>>) -> Result<Json<Vec<ProductView>>, ApiError> {
    let products = catalog.all().await.map_err(|e| ApiError::store(&e))?;
    Ok(Json(products.into_iter().map(ProductView::from).collect()))
}

/// One product.
#[utoipa::path(get, path = "/catalog/{productId}", tag = "catalog",
    params(("productId" = String, Path, description = "The product id", example = "prod-1")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, description = "No such product", body = ErrorBody),
    ))]
async fn get_one(
    State(catalog): State<Arc<Catalog>>,
    Path(product_id): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    catalog
        .get(&product_id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .map(|p| Json(p.into()))
        .ok_or_else(|| ApiError::not_found(format!("no product {}", text::echo(&product_id))))
}

pub(crate) fn routes(catalog: Arc<Catalog>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .with_state(catalog)
}
