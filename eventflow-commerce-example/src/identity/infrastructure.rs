//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), run on the blocking
//! pool because it is deliberately slow; identity's wiring.

use std::sync::Arc;

use argon2::Argon2;

use super::application::Identity;
use crate::platform::auth::Jwt;
use crate::platform::messaging::{ContextInfra, Started};
use crate::platform::startup::StartError;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes a password into a PHC string.
pub(crate) async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
pub(crate) async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Starts identity; returns it too, for the seed.
pub(crate) async fn start(
    infra: &ContextInfra,
    jwt: Arc<Jwt>,
) -> Result<(Arc<Identity>, Started), StartError> {
    let identity = Identity::new(infra.repository(false), jwt)
        .await
        .map_err(|e| StartError::wiring(infra.service, e))?;
    let identity = Arc::new(identity);
    let started = Started {
        service: infra.service(super::http::routes(Arc::clone(&identity))),
        consumers: Vec::new(),
    };
    Ok((identity, started))
}
