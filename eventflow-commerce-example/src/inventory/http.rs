//! `GET /inventory/{productId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use eventflow_core::Repository;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::Stock;
use crate::platform::error::{ApiError, ErrorBody};

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
    State(stock): State<Arc<Repository<Stock>>>,
    Path(product_id): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    let loaded = stock
        .load(&product_id)
        .await
        .map_err(ApiError::internal)?
        .state;
    if !loaded.stocked {
        return Err(ApiError::not_found(format!("{product_id} is not stocked")));
    }
    Ok(Json(StockView {
        product_id,
        available: loaded.available,
        reserved: loaded.reserved,
    }))
}

pub(crate) fn routes(stock: Arc<Repository<Stock>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(stock)
}
