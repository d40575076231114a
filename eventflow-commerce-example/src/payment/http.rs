//! `GET /payments/{orderId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use eventflow_core::Repository;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::{Payment, PaymentStatus};
use crate::platform::auth::Customer;
use crate::platform::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentView {
    order_id: String,
    #[schema(value_type = String, example = "AUTHORIZED")]
    status: PaymentStatus,
    amount_cents: u64,
}

/// The payment of one of the caller's orders.
#[utoipa::path(get, path = "/payments/{orderId}", tag = "payment",
    params(("orderId" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No payment for this order and customer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_one(
    State(payments): State<Arc<Repository<Payment>>>,
    Customer(customer_id): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    let payment = payments
        .load(&order_id)
        .await
        .map_err(ApiError::internal)?
        .state;
    match payment.status {
        Some(status) if payment.customer_id == customer_id => Ok(Json(PaymentView {
            order_id,
            status,
            amount_cents: payment.amount_cents,
        })),
        _ => Err(ApiError::not_found(format!(
            "no payment for order {order_id}"
        ))),
    }
}

pub(crate) fn routes(payments: Arc<Repository<Payment>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(payments)
}
