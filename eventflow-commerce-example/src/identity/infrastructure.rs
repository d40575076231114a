//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), run on the blocking
//! pool because it is deliberately slow; identity's wiring.

use std::sync::Arc;

use argon2::Argon2;

use super::application::{Identity, IdentityError};
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::started::Started;
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

/// The seeded users: login, password, customer id.
const SEED_USERS: [(&str, &str, &str); 2] = [
    ("user@example.com", "password", "customer-1"),
    ("other@example.com", "password", "customer-2"),
];

/// Starts identity (tokens signed with the app's key), and the seed's users.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let identity = Identity::new(infra.repository(false), Arc::clone(&infra.jwt))
        .await
        .map_err(|e| StartError::wiring(infra.service, e))?;
    let identity = Arc::new(identity);
    let service = infra.service(super::http::routes(Arc::clone(&identity)));
    Ok(Started::new(service, Vec::new()).seeding(config, Box::pin(seed(identity))))
}

/// Registers the seed's users (a user registered before is left as it is).
async fn seed(identity: Arc<Identity>) -> Result<(), StartError> {
    for (username, password, customer_id) in SEED_USERS {
        match identity.register(username, customer_id, password).await {
            Ok(()) | Err(IdentityError::AlreadyRegistered) => {}
            Err(e) => return Err(StartError::wiring("seeding users", e)),
        }
    }
    Ok(())
}
