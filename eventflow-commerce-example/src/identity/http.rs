//! `POST /auth/login`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
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
    ))]
async fn login(
    State(identity): State<Arc<Identity>>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    match identity.login(&request.username, &request.password).await {
        Ok(token) => Ok(Json(TokenResponse {
            token: token.token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        })),
        Err(IdentityError::InvalidCredentials) => {
            Err(ApiError::unauthorized("wrong username or password"))
        }
        Err(other) => Err(ApiError::internal(other)),
    }
}

pub(crate) fn routes(identity: Arc<Identity>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(login))
        .with_state(identity)
}
