//! `GET /payments/{orderId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::{Payment, PaymentStatus};
use crate::platform::auth::Customer;
use crate::platform::error::{ApiError, ErrorBody};
use crate::platform::records::{Records, Shown};

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
    State(payments): State<Arc<Records<Payment>>>,
    Customer(customer_id): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    payments.view(&order_id, Some(&customer_id)).await.map(Json)
}

impl Shown for Payment {
    type View = PaymentView;

    fn shown(&self, order_id: &str, caller: Option<&str>) -> Option<PaymentView> {
        let status = self.status?;
        (caller == Some(self.customer_id.as_str())).then(|| PaymentView {
            order_id: order_id.to_owned(),
            status,
            amount_cents: self.amount_cents,
        })
    }

    fn not_found(order_id: &str) -> String {
        format!("no payment for order {order_id}")
    }
}

pub(crate) fn routes(payments: Arc<Records<Payment>>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_one))
        .with_state(payments)
}
