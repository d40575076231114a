//! Bearer tokens: HS256 JWTs issued by identity and verified by every service with the shared
//! secret. Only HS256 is accepted (so `alg: none` and algorithm confusion fail), `exp`, `sub` and
//! `iss` are required, and the expiry is checked with 5 seconds of leeway.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// The `iss` of every token.
pub(crate) const ISSUER: &str = "eventflow-commerce";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// Issues and verifies tokens.
pub(crate) struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Jwt {
    pub(crate) fn new(secret: &[u8], ttl: Duration) -> Self {
        // Both crypto backends may be compiled in when the whole workspace builds together; the
        // choice is made here rather than left to feature unification. A second call is a no-op.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Jwt {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A token for `subject`, and its lifetime in seconds.
    pub(crate) fn issue(
        &self,
        subject: &str,
    ) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, self.ttl.as_secs()))
    }

    /// The subject of a valid token.
    pub(crate) fn verify(&self, token: &str) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims.sub)
    }
}

/// The authenticated customer: the subject of the request's bearer token. Handlers that take it
/// answer 401 with a JSON error when the token is missing or invalid.
#[derive(Debug, Clone)]
pub(crate) struct Customer(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let jwt = parts
            .extensions
            .get::<Arc<Jwt>>()
            .ok_or_else(|| ApiError::internal("no token verifier installed on this router"))?;
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        jwt.verify(token.trim())
            .map(Customer)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let jwt = Jwt::new(b"secret-one", Duration::from_secs(60));
        let (token, expires_in) = jwt.issue("customer-1").unwrap_or_default();
        assert_eq!(expires_in, 60);
        assert_eq!(jwt.verify(&token).ok().as_deref(), Some("customer-1"));
        let other = Jwt::new(b"secret-two", Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
    }
}
