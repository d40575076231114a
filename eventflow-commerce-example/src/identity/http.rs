//! `POST /auth/login`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::application::{Identity, IdentityError};
use crate::platform::error::{ApiError, ErrorBody, JsonBody};

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    #[schema(example = "user@example.com")]
    username: String,
    #[schema(example = "password")]
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenResponse {
    token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

/// Logs in and returns a bearer token.
#[utoipa::path(post, path = "/auth/login", tag = "identity",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
        (status = 429, description = "Too many logins for this account or from this address; `Retry-After` says when to try again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Every password check is busy; `Retry-After` says when to try again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
async fn login(
    State(identity): State<Arc<Identity>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let client = peer.map(|Extension(ConnectInfo(address))| address.ip());
    match identity
        .login(&request.username, &request.password, client)
        .await
    {
        Ok(token) => Ok(Json(TokenResponse {
            token: token.token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        })),
        Err(IdentityError::InvalidCredentials) => {
            Err(ApiError::unauthorized("wrong username or password"))
        }
        Err(e @ IdentityError::TooManyAttempts { retry_after }) => {
            Err(ApiError::too_many_requests(e.to_string(), retry_after))
        }
        Err(e @ IdentityError::Busy) => {
            Err(ApiError::unavailable(e.to_string()).retry_after(Duration::from_secs(1)))
        }
        Err(other) => Err(ApiError::internal(other)),
    }
}

pub(crate) fn routes(identity: Arc<Identity>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(login))
        .with_state(identity)
}
