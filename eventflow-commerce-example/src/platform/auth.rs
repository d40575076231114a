//! Bearer tokens: HS256 JWTs issued by identity and verified by every service with the shared
//! secret. Only HS256 is accepted (so `alg: none` and algorithm confusion fail); `exp`, `iat`,
//! `sub` and `iss` are required; `exp`, `nbf` and `iat` are checked with 5 seconds of leeway; a
//! token may live no longer than the tokens identity issues; a `crit` header is refused (RFC
//! 7515 §4.1.11: no extension is understood here); a token longer than [`MAX_TOKEN_BYTES`] is
//! refused unread. Every refusal answers one generic 401: which check failed goes to the log at
//! debug level, not to the client.

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

/// The longest bearer token read. The app's tokens are about 250 bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 2048;

/// The clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// What a token holder may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Places and reads their own orders (the default: a token that names no role).
    #[default]
    Customer,
    /// Runs the shop: every saga, dead letters, admin actions.
    Operator,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default)]
    role: Role,
}

/// Why a token was refused; logged, never sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token is {0} bytes long")]
    TooLong(usize),
    #[error("the token has a `crit` header")]
    Critical,
    #[error("the token was issued in the future")]
    IssuedInTheFuture,
    #[error("the token lives {0} s, longer than any token identity issues")]
    TooLongLived(u64),
    #[error("the token's subject is empty")]
    NoSubject,
}

/// An authenticated caller: who, and in which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) subject: String,
    pub(crate) role: Role,
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Jwt {
    pub(crate) fn new(secret: &[u8], ttl: Duration) -> Self {
        // Both crypto backends may be compiled in when the whole workspace builds together; the
        // choice is made here rather than left to feature unification. A second call is a no-op.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Jwt {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A token for `subject` in `role`, and its lifetime in seconds.
    pub(crate) fn issue(
        &self,
        subject: &str,
        role: Role,
    ) -> Result<(String, u64), jsonwebtoken::errors::Error> {
        let now = now();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            nbf: None,
            role,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, self.ttl.as_secs()))
    }

    /// The caller a valid token names.
    pub(crate) fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong(token.len()));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let claims = data.claims;
        if claims.iat > now() + LEEWAY_SECS {
            return Err(TokenError::IssuedInTheFuture);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > self.ttl.as_secs() + LEEWAY_SECS {
            return Err(TokenError::TooLongLived(lifetime));
        }
        if claims.sub.trim().is_empty() {
            return Err(TokenError::NoSubject);
        }
        Ok(Principal {
            subject: claims.sub,
            role: claims.role,
        })
    }
}

/// The one answer to a missing or refused token.
fn unauthorized() -> ApiError {
    ApiError::unauthorized("a valid `Authorization: Bearer <token>` header is required")
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let jwt = parts
            .extensions
            .get::<Arc<Jwt>>()
            .ok_or_else(|| ApiError::internal("no token verifier installed on this router"))?;
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|header| header.to_str().ok())
            .and_then(|header| header.strip_prefix("Bearer "))
            .ok_or_else(|| {
                tracing::debug!("no bearer token");
                unauthorized()
            })?;
        jwt.verify(token.trim()).map_err(|reason| {
            tracing::debug!(%reason, "token refused");
            unauthorized()
        })
    }
}

/// The authenticated customer: the subject of the request's bearer token, in any role (an
/// operator acts on their own orders as a customer). Handlers that take it answer 401 when the
/// token is missing or invalid.
#[derive(Debug, Clone)]
pub(crate) struct Customer(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Customer(principal.subject))
    }
}

/// An operator's request: 401 without a valid token, 403 with a customer's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        match principal.role {
            Role::Operator => Ok(Operator),
            Role::Customer => Err(ApiError::forbidden("this needs the operator role")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let jwt = Jwt::new(b"secret-one", Duration::from_secs(60));
        let (token, expires_in) = jwt.issue("customer-1", Role::Customer).unwrap_or_default();
        assert_eq!(expires_in, 60);
        assert_eq!(
            jwt.verify(&token).ok().map(|p| p.subject).as_deref(),
            Some("customer-1")
        );
        let other = Jwt::new(b"secret-two", Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
    }

    /// A token signed with `secret-one` whose claims are `claims`, with `crit` in the header when
    /// asked.
    fn signed(claims: &serde_json::Value, crit: bool) -> String {
        let mut header = Header::new(Algorithm::HS256);
        if crit {
            header.crit = Some(vec!["exp".to_owned()]);
        }
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(b"secret-one"))
            .expect("a token")
    }

    fn claims(iat: u64, exp: u64) -> serde_json::Value {
        serde_json::json!({"sub": "customer-1", "iss": ISSUER, "iat": iat, "exp": exp})
    }

    #[test]
    fn loose_tokens_are_refused_even_when_signed_with_the_key() {
        let jwt = Jwt::new(b"secret-one", Duration::from_secs(3600));
        let t = now();
        assert!(jwt.verify(&signed(&claims(t, t + 60), false)).is_ok());

        let mut future_nbf = claims(t, t + 60);
        future_nbf["nbf"] = (t + 600).into();
        assert!(jwt.verify(&signed(&future_nbf, false)).is_err());

        let issued_ahead = claims(t + 100 * 365 * 86_400, t + 100 * 365 * 86_400 + 60);
        assert!(matches!(
            jwt.verify(&signed(&issued_ahead, false)),
            Err(TokenError::IssuedInTheFuture)
        ));
        assert!(matches!(
            jwt.verify(&signed(&claims(t, t + 10 * 86_400), false)),
            Err(TokenError::TooLongLived(_))
        ));
        assert!(matches!(
            jwt.verify(&signed(&claims(t, t + 60), true)),
            Err(TokenError::Critical)
        ));
        let mut nobody = claims(t, t + 60);
        nobody["sub"] = "".into();
        assert!(matches!(
            jwt.verify(&signed(&nobody, false)),
            Err(TokenError::NoSubject)
        ));
        let mut padded = claims(t, t + 60);
        padded["pad"] = "x".repeat(100 * 1024).into();
        assert!(matches!(
            jwt.verify(&signed(&padded, false)),
            Err(TokenError::TooLong(_))
        ));
        let no_iat = serde_json::json!({"sub": "customer-1", "iss": ISSUER, "exp": t + 60});
        assert!(jwt.verify(&signed(&no_iat, false)).is_err());
    }

    #[test]
    fn the_role_travels_in_the_token_and_defaults_to_customer() {
        let jwt = Jwt::new(b"secret-one", Duration::from_secs(60));
        let (token, _) = jwt.issue("ops-1", Role::Operator).expect("a token");
        assert_eq!(
            jwt.verify(&token).ok().map(|p| p.role),
            Some(Role::Operator)
        );
        let t = now();
        let unnamed = signed(&claims(t, t + 60), false);
        assert_eq!(
            jwt.verify(&unnamed).ok().map(|p| p.role),
            Some(Role::Customer)
        );
    }
}
