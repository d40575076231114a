//! `GET /sagas/{orderId}` (the order's customer or an operator), `GET /sagas?status=&limit=&cursor=`
//! (operators).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use eventflow_saga::{SagaDefinition, SagaQuery, SagaState, SagaStatus, StepStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::auth::{Operator, Principal, Role};
use crate::platform::error::{ApiError, ErrorBody, QueryParams};

/// The most sagas one page of `GET /sagas` holds.
const MAX_PAGE_SIZE: usize = 200;

fn status_name(status: Option<SagaStatus>) -> &'static str {
    match status {
        Some(SagaStatus::Running) | None => "RUNNING",
        Some(SagaStatus::Compensating) => "COMPENSATING",
        Some(SagaStatus::NeedsAttention) => "NEEDS_ATTENTION",
        Some(SagaStatus::Completed) => "COMPLETED",
        Some(SagaStatus::Compensated) => "COMPENSATED",
        Some(_) => "UNKNOWN",
    }
}

fn step_status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "PENDING",
        StepStatus::Succeeded => "SUCCEEDED",
        StepStatus::Failed => "FAILED",
        StepStatus::TimedOut => "TIMED_OUT",
        _ => "UNKNOWN",
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StepView {
    name: String,
    /// PENDING, SUCCEEDED, FAILED or TIMED_OUT.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// How many times the command was sent: a deadline without a reply resends it.
    attempts: u32,
    /// The sends the step may take before it fails (its resend budget); absent at and after
    /// the pivot, where the step is resent until it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    /// How long the step waits for a reply over all its sends before it fails, in
    /// milliseconds; absent at and after the pivot.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_ms: Option<u64>,
    /// True for the pivot: once it is sent, the saga only goes forward.
    pivot: bool,
    /// When the command is sent again, while a deadline has passed and the resend waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    resend_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryView {
    version: u64,
    event_type: String,
    recorded_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SagaView {
    saga_id: String,
    saga_type: String,
    /// RUNNING, COMPENSATING, NEEDS_ATTENTION, COMPLETED or COMPENSATED.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    steps: Vec<StepView>,
    /// Compensations done, in the order they ran (the reverse of the steps).
    compensations: Vec<String>,
    history: Vec<HistoryView>,
}

fn view(definition: &SagaDefinition, state: SagaState, history: Vec<HistoryView>) -> SagaView {
    SagaView {
        saga_id: state.saga_id,
        saga_type: state.saga_type,
        status: status_name(state.status),
        failure: state.failure,
        attention: state.attention,
        correlation_id: state.correlation_id,
        steps: state
            .steps
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                let def = definition.step(index);
                let bounded = def.filter(|_| !definition.is_forward_only(index));
                StepView {
                    name: s.name,
                    status: step_status_name(s.status),
                    reason: s.reason,
                    attempts: s.attempt,
                    max_attempts: bounded.map(|d| d.resend.max_attempts),
                    budget_ms: bounded.map(|d| d.budget().as_millis() as u64),
                    pivot: def.is_some_and(|d| d.pivot),
                    resend_at: s.resend_at,
                }
            })
            .collect(),
        compensations: state
            .compensation
            .map(|c| c.done.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        history,
    }
}

/// The PlaceOrder saga of an order: its customer's, or any for an operator.
#[utoipa::path(get, path = "/sagas/{orderId}", tag = "saga",
    params(("orderId" = String, Path, description = "The order id (the saga id)")),
    responses(
        (status = 200, description = "Status, steps, compensations and history", body = SagaView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No saga for this order among the caller's", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn get_one(
    State(query): State<SagaQuery>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<SagaView>, ApiError> {
    let not_found = || ApiError::not_found("no saga for this order among yours");
    let state = query
        .get(&order_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    // Another customer's saga is answered as missing: its existence is not theirs to learn.
    let owner = state.data.get("customerId").and_then(|c| c.as_str());
    if caller.role != Role::Operator && owner != Some(caller.subject.as_str()) {
        return Err(not_found());
    }
    let history = query
        .history(&order_id)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|h| HistoryView {
            version: h.version,
            event_type: h.event_type,
            recorded_at: h.recorded_at,
        })
        .collect();
    Ok(Json(view(query.definition(), state, history)))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum StatusParam {
    Running,
    Compensating,
    NeedsAttention,
    Completed,
    Compensated,
}

impl From<StatusParam> for SagaStatus {
    fn from(status: StatusParam) -> Self {
        match status {
            StatusParam::Running => SagaStatus::Running,
            StatusParam::Compensating => SagaStatus::Compensating,
            StatusParam::NeedsAttention => SagaStatus::NeedsAttention,
            StatusParam::Completed => SagaStatus::Completed,
            StatusParam::Compensated => SagaStatus::Compensated,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusFilter {
    /// Only sagas in this status.
    #[param(inline)]
    status: Option<StatusParam>,
    /// Sagas per page (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "^[0-9]{1,9}$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SagaPage {
    sagas: Vec<SagaSummaryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SagaSummaryView {
    saga_id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// Sagas in the order they started, optionally by status, a page at a time (operators).
#[utoipa::path(get, path = "/sagas", tag = "saga",
    params(StatusFilter),
    responses(
        (status = 200, description = "One page of matching sagas", body = SagaPage),
        (status = 400, description = "Unknown status", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 422, description = "`limit` out of range or `cursor` not a number", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn list(
    State(query): State<SagaQuery>,
    _: Operator,
    QueryParams(filter): QueryParams<StatusFilter>,
) -> Result<Json<SagaPage>, ApiError> {
    let limit = filter.limit.unwrap_or(50);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit: 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    // The cursor is a place in the list of every saga in the order they started, which only
    // grows at its end: a page starts where the last ended, whatever changed status meanwhile.
    let start: usize = match &filter.cursor {
        None => 0,
        Some(cursor) => cursor
            .parse()
            .map_err(|_| ApiError::invalid("cursor", "cursor: a nextCursor of this list"))?,
    };
    let wanted = filter.status.map(SagaStatus::from);
    let all = query.list(None).await.map_err(ApiError::internal)?;
    let mut sagas = Vec::new();
    let mut next_cursor = None;
    for (place, saga) in all.into_iter().enumerate().skip(start) {
        if wanted.is_some_and(|status| status != saga.status) {
            continue;
        }
        if sagas.len() == limit {
            next_cursor = Some(place.to_string());
            break;
        }
        sagas.push(SagaSummaryView {
            saga_id: saga.saga_id,
            status: status_name(Some(saga.status)),
            failure: saga.failure,
        });
    }
    Ok(Json(SagaPage { sagas, next_cursor }))
}

pub(crate) fn routes(query: SagaQuery) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .with_state(query)
}
