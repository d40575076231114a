//! `GET /inventory/{productId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::Stock;
use crate::platform::error::{ApiError, ErrorBody};
use crate::platform::records::{Records, Shown};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StockView {
    product_id: String,
    available: u64,
    reserved: u64,
}

/// A product's stock.
#[utoipa::path(get, path = "/inventory/{productId}", tag = "inventory",
    params(("productId" = String, Path, description = "The product id", example = "prod-1")),
    responses(
        (status = 200, description = "Available and reserved units", body = StockView),
        (status = 404, description = "The product is not stocked", body = ErrorBody),
    ))]
async fn get_one(
    State(stock): State<Arc<Records<Stock>>>,
    Path(product_id): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    stock.view(&product_id, None).await.map(Json)
}

impl Shown for Stock {
    type View = StockView;

    /// Stock is open to everyone: the caller does not matter.
    fn shown(&self, product_id: &str, _: Option<&str>) -> Option<StockView> {
        self.stocked.then(|| StockView {
            product_id: product_id.to_owned(),
            available: self.available,
            reserved: self.reserved,
        })
    }

    fn not_found(product_id: &str) -> String {
        format!("{product_id} is not stocked")
    }
}

pub(crate) fn routes(stock: Arc<Records<Stock>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(stock)
}
