//! Password hashing with argon2id, bounded; identity's wiring.
//!
//! Parameters: OWASP's current minimum for argon2id (m = 19 MiB, t = 2, p = 1), which are the
//! `argon2` crate's defaults, spelled out so a crate upgrade cannot change them silently. Each
//! check holds 19 MiB for tens of milliseconds, so at most one check per core runs at once; a
//! login that cannot start one within [`QUEUE_WAIT`] is answered 503 with `Retry-After` instead of
//! queueing without bound (a flood of wrong passwords once took the process to 12 GB).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::application::{Identity, IdentityError};
use super::limits::LoginLimits;
use crate::platform::auth::Role;
use crate::platform::config::Config;
use crate::platform::messaging::ContextInfra;
use crate::platform::started::Started;
use crate::platform::startup::StartError;

/// How long a login waits for a free password check before it is told to come back.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// argon2id with OWASP's minimum parameters.
fn argon2() -> Result<Argon2<'static>, String> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Password checks, at most one per core at a time.
pub(crate) struct Passwords {
    permits: Semaphore,
}

/// Every password check is busy: try again shortly.
#[derive(Debug, thiserror::Error)]
#[error("every password check is busy")]
pub(crate) struct Busy;

impl Passwords {
    /// As many concurrent checks as the machine has cores.
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords {
            permits: Semaphore::new(cores),
        }
    }

    /// Runs `work` on the blocking pool once a check is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _permit = tokio::time::timeout(QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| Busy)
    }

    /// Hashes a password into a PHC string.
    pub(crate) async fn hash(&self, password: String) -> Result<String, String> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()?
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Whether `password` matches the PHC string `hash`. A malformed hash never matches.
    pub(crate) async fn verify(&self, password: String, hash: String) -> Result<bool, Busy> {
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            // The hash's own parameters are used, so hashes made before a change still verify.
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }
}

/// The seeded users: login, password, customer id, role.
const SEED_USERS: [(&str, &str, &str, Role); 3] = [
    ("user@example.com", "password", "customer-1", Role::Customer),
    ("other@example.com", "password", "customer-2", Role::Customer),
    ("operator@example.com", "operator", "operator-1", Role::Operator),
];

/// Starts identity (tokens signed with the app's key), and the seed's users.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let identity = Identity::new(
        infra.repository(false),
        Arc::clone(&infra.jwt),
        LoginLimits::default(),
    )
        .await
        .map_err(|e| StartError::wiring(infra.service, e))?;
    let identity = Arc::new(identity);
    let service = infra.service(super::http::routes(Arc::clone(&identity)));
    Ok(Started::new(service, Vec::new()).seeding(config, Box::pin(seed(identity))))
}

/// Registers the seed's users (a user registered before is left as it is).
async fn seed(identity: Arc<Identity>) -> Result<(), StartError> {
    for (username, password, customer_id, role) in SEED_USERS {
        match identity.register(username, customer_id, password, role).await {
            Ok(()) | Err(IdentityError::AlreadyRegistered) => {}
            Err(e) => return Err(StartError::wiring("seeding users", e)),
        }
    }
    Ok(())
}
