//! `GET /shipments/{orderId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use eventflow_core::Repository;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::{Shipment, ShipmentStatus};
use crate::contract::Address;
use crate::platform::auth::Customer;
use crate::platform::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShipmentView {
    order_id: String,
    #[schema(value_type = String, example = "CREATED")]
    status: ShipmentStatus,
    tracking_number: String,
    address: Address,
}

/// The shipment of one of the caller's orders.
#[utoipa::path(get, path = "/shipments/{orderId}", tag = "shipping",
    params(("orderId" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "The shipment", body = ShipmentView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No shipment for this order and customer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_one(
    State(shipments): State<Arc<Repository<Shipment>>>,
    Customer(customer_id): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<ShipmentView>, ApiError> {
    let shipment = shipments
        .load(&order_id)
        .await
        .map_err(ApiError::internal)?
        .state;
    match (shipment.status, shipment.address) {
        (Some(status), Some(address)) if shipment.customer_id == customer_id => {
            Ok(Json(ShipmentView {
                order_id,
                status,
                tracking_number: shipment.tracking_number,
                address,
            }))
        }
        _ => Err(ApiError::not_found(format!(
            "no shipment for order {order_id}"
        ))),
    }
}

pub(crate) fn routes(shipments: Arc<Repository<Shipment>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(shipments)
}
