//! `GET /notifications?orderId=`, `GET /notifications/dead-letters`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use eventflow_bus::DeadLetterQueue;
use eventflow_core::Repository;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::{DeliveryStatus, NotificationKind, Notifications};
use crate::platform::auth::{Customer, Operator};
use crate::platform::error::{ApiError, ErrorBody, QueryParams};

#[derive(Clone)]
pub(crate) struct NotificationState {
    pub(crate) log: Arc<Repository<Notifications>>,
    pub(crate) queue: Arc<dyn DeadLetterQueue>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ByOrder {
    /// The order whose notifications to list.
    order_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationView {
    order_id: String,
    kind: NotificationKind,
    recipient: String,
    subject: String,
    status: DeliveryStatus,
}

/// The notifications sent for one of the caller's orders.
#[utoipa::path(get, path = "/notifications", tag = "notification",
    params(ByOrder),
    responses(
        (status = 200, description = "Notifications, oldest first", body = [NotificationView]),
        (status = 400, description = "orderId missing", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list(
    State(state): State<NotificationState>,
    Customer(customer_id): Customer,
    QueryParams(query): QueryParams<ByOrder>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let loaded = state
        .log
        .load(&query.order_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        loaded
            .state
            .sent
            .into_iter()
            .filter(|n| n.email.customer() == customer_id)
            .map(|n| NotificationView {
                order_id: query.order_id.clone(),
                kind: n.email.kind,
                recipient: n.email.recipient,
                subject: n.email.subject,
                status: n.status,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetterView {
    message_id: String,
    message_type: String,
    attempts: u32,
    last_error: Option<String>,
}

/// Messages the worker gave up on (operators).
#[utoipa::path(get, path = "/notifications/dead-letters", tag = "notification",
    responses(
        (status = 200, description = "Dead-lettered messages", body = [DeadLetterView]),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn dead_letters(
    State(state): State<NotificationState>,
    _: Operator,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let letters = state
        .queue
        .dead_letters(100)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        letters
            .into_iter()
            .map(|d| DeadLetterView {
                message_id: d.message.id,
                message_type: d.message.message_type,
                attempts: d.attempts,
                last_error: d.last_error,
            })
            .collect(),
    ))
}

pub(crate) fn routes(state: NotificationState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(dead_letters))
        .with_state(state)
}
