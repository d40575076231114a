//! `GET /shipments/{orderId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::{Shipment, ShipmentStatus};
use crate::contract::Address;
use crate::platform::auth::Customer;
use crate::platform::error::{ApiError, ErrorBody};
use crate::platform::records::{Records, Shown};

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
    State(shipments): State<Arc<Records<Shipment>>>,
    Customer(customer_id): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<ShipmentView>, ApiError> {
    shipments
        .view(&order_id, Some(&customer_id))
        .await
        .map(Json)
}

impl Shown for Shipment {
    type View = ShipmentView;

    fn shown(&self, order_id: &str, caller: Option<&str>) -> Option<ShipmentView> {
        let (status, address) = (self.status?, self.address.clone()?);
        (caller == Some(self.customer_id.as_str())).then(|| ShipmentView {
            order_id: order_id.to_owned(),
            status,
            tracking_number: self.tracking_number.clone(),
            address,
        })
    }

    fn not_found(order_id: &str) -> String {
        format!("no shipment for order {order_id}")
    }
}

pub(crate) fn routes(shipments: Arc<Records<Shipment>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(shipments)
}
