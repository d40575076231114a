//! `POST /orders`, `GET /orders/{orderId}`, `GET /orders`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::application::{NewOrder, Ordering, PlaceError};
use super::domain::OrderStatus;
use super::infrastructure::OrderView;
use crate::contract::Address;
use crate::platform::auth::Customer;
use crate::platform::context::RequestContext;
use crate::platform::error::{ApiError, ErrorBody, JsonBody, QueryParams};
use crate::platform::text;

/// The highest page number accepted.
const MAX_PAGE: u32 = 100_000;

/// The header that makes `POST /orders` safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderItemRequest {
    #[schema(example = "prod-1", min_length = 1, max_length = 100, pattern = r"\S")]
    product_id: String,
    #[schema(example = 2, minimum = 1, maximum = 1000)]
    quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateOrderRequest {
    /// Optional; when given it must be the token's customer.
    #[schema(example = "customer-1")]
    customer_id: Option<String>,
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<OrderItemRequest>,
    shipping_address: Address,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderAccepted {
    order_id: String,
    #[schema(value_type = String, example = "PENDING")]
    status: OrderStatus,
}

/// Places an order; the PlaceOrder saga then reserves stock, authorizes payment and ships.
#[utoipa::path(post, path = "/orders", tag = "ordering",
    request_body = CreateOrderRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key returns the same order"),
        ("x-correlation-id" = Option<String>, Header, description = "Carried through every context the order touches"),
    ),
    responses(
        (status = 202, description = "Accepted; follow `Location`", body = OrderAccepted,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "`customerId` is not the token's customer, or the token's customer is not registered", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another order", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid; `details.field` names it", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn create(
    State(ordering): State<Arc<Ordering>>,
    Customer(customer_id): Customer,
    request_context: RequestContext,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    if let Some(claimed) = &request.customer_id
        && claimed != &customer_id
    {
        return Err(ApiError::forbidden(
            "customerId is not the authenticated customer",
        ));
    }
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Idempotency-Key",
                        "1 to 128 visible ASCII characters (no spaces)",
                    )
                })?,
        ),
        None => None,
    };
    let order = NewOrder {
        customer_id,
        lines: request
            .items
            .into_iter()
            .map(|i| (i.product_id, i.quantity))
            .collect(),
        shipping_address: request.shipping_address,
    };
    let placed = ordering
        .place(order, key, &request_context)
        .await
        .map_err(|e| match e {
            PlaceError::Invalid { field, message } => {
                ApiError::invalid(&field, format!("{field}: {message}"))
            }
            PlaceError::KeyReused(_) => ApiError::conflict(e.to_string()),
            PlaceError::UnknownCustomer => ApiError::forbidden(e.to_string()),
            PlaceError::Internal(cause) => ApiError::internal(cause),
            PlaceError::Store(error) => ApiError::store(&error),
        })?;
    if placed.created {
        tracing::info!(order_id = %placed.order_id, "order placed");
    } else {
        tracing::info!(order_id = %placed.order_id, "retry with a known Idempotency-Key: the original order is returned");
    }
    let status = ordering
        .views
        .projection()
        .get(&placed.order_id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .map_or(OrderStatus::Pending, |o| o.status);
    let location = HeaderValue::from_str(&format!("/orders/{}", placed.order_id))
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        [(LOCATION, location)],
        Json(OrderAccepted {
            order_id: placed.order_id,
            status,
        }),
    )
        .into_response())
}

/// One of the caller's orders, from the read model.
#[utoipa::path(get, path = "/orders/{orderId}", tag = "ordering",
    params(("orderId" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such order for this customer", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_one(
    State(ordering): State<Arc<Ordering>>,
    Customer(customer_id): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    ordering
        .get(&order_id, &customer_id)
        .await
        .map_err(|e| ApiError::store(&e))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no order {}", text::echo(&order_id))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct Page {
    /// 1-based page number (default 1).
    #[param(minimum = 1, maximum = 100000)]
    page: Option<u32>,
    /// Orders per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderPage {
    items: Vec<OrderView>,
    page: u32,
    page_size: u32,
    total: usize,
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "ordering",
    params(Page),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Invalid paging parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list(
    State(ordering): State<Arc<Ordering>>,
    Customer(customer_id): Customer,
    QueryParams(page): QueryParams<Page>,
) -> Result<Json<OrderPage>, ApiError> {
    let number = page.page.unwrap_or(1);
    let size = page.page_size.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&number) || !(1..=100).contains(&size) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("page must be between 1 and {MAX_PAGE}, and pageSize between 1 and 100"),
        ));
    }
    let offset = (number as usize - 1).saturating_mul(size as usize);
    let (items, total) = ordering
        .list(&customer_id, offset, size as usize)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(Json(OrderPage {
        items,
        page: number,
        page_size: size,
        total,
    }))
}

pub(crate) fn routes(ordering: Arc<Ordering>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
        .with_state(ordering)
}
