//! Password hashing with argon2id, bounded; identity's wiring.
//!
//! Parameters: OWASP's current minimum for argon2id (m = 19 MiB, t = 2, p = 1), which are the
//! `argon2` crate's defaults, spelled out so a crate upgrade cannot change them silently. Each
//! check needs 19 MiB for tens of milliseconds, so at most one check per core runs at once, each
//! in a working memory allocated once and reused (allocating 19 MiB per check on the blocking
//! pool's many threads left hundreds of MiB in the allocator's per-thread arenas after a flood);
//! a login that cannot start a check within [`QUEUE_WAIT`] is answered 503 with `Retry-After`
//! instead of queueing without bound (a flood of wrong passwords once took the process to 12 GB).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use eventflow_core::extension::lock;
use tokio::sync::Semaphore;

use super::application::{Identity, IdentityError};
use super::limits::LoginLimits;
use crate::contract::SEED_CUSTOMERS;
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

/// Password checks, at most one per core at a time, each with a working memory of its own.
pub(crate) struct Passwords {
    permits: Semaphore,
    /// One working memory per permit, allocated on first use and kept.
    memories: Arc<Mutex<Vec<Vec<Block>>>>,
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
            memories: Arc::new(Mutex::new(Vec::with_capacity(cores))),
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
        let memories = Arc::clone(&self.memories);
        self.run(move || {
            // Under a permit, so there is a memory for every check running.
            let mut memory = lock(&memories).pop().unwrap_or_default();
            let matches = PasswordHash::new(&hash)
                .is_ok_and(|parsed| verify_in(&mut memory, password.as_bytes(), &parsed));
            lock(&memories).push(memory);
            matches
        })
        .await
    }
}

/// argon2's own verification, computed in `memory` (grown when the hash asks for more). The
/// hash's own parameters are used, so hashes made before a change of parameters still verify;
/// the comparison is constant-time ([`Output`]'s equality).
fn verify_in(memory: &mut Vec<Block>, password: &[u8], hash: &PasswordHash<'_>) -> bool {
    matches_in(memory, password, hash).unwrap_or(false)
}

/// [`verify_in`]; `None` for a hash it cannot read.
fn matches_in(memory: &mut Vec<Block>, password: &[u8], hash: &PasswordHash<'_>) -> Option<bool> {
    let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
    let version = match hash.version {
        Some(version) => Version::try_from(version).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(hash).ok()?;
    let expected = hash.hash?;
    let mut salt = [0_u8; 64];
    let salt = hash.salt?.decode_b64(&mut salt).ok()?;
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut computed = vec![0_u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut computed, &mut memory[..blocks])
        .ok()?;
    Some(Output::new(&computed).ok()? == expected)
}

/// The seed's users are the contract's seeded customers (login, customer id), in these roles;
/// every one's password is `password` (development data).
const SEED_ROLES: [Role; SEED_CUSTOMERS.len()] = [Role::Customer, Role::Customer, Role::Operator];

/// Starts identity (tokens signed with the app's key), and the seed's users.
pub(crate) async fn start(infra: &ContextInfra, config: &Config) -> Result<Started, StartError> {
    let identity = Identity::new(
        infra.repository(false),
        infra.repository(true),
        Arc::clone(&infra.jwt),
        LoginLimits {
            per_account_per_minute: NonZeroU32::new(config.login_attempts_per_account)
                .unwrap_or(NonZeroU32::MIN),
            per_address_per_minute: NonZeroU32::new(config.login_attempts_per_address)
                .unwrap_or(NonZeroU32::MIN),
            ..LoginLimits::default()
        },
    )
    .await
    .map_err(|e| StartError::wiring(infra.service, e))?;
    let identity = Arc::new(identity);
    let service = infra.service(super::http::routes(Arc::clone(&identity)));
    Ok(Started::new(service, Vec::new()).seeding(config, Box::pin(seed(identity))))
}

/// Registers the seed's users (a user registered before is left as it is).
async fn seed(identity: Arc<Identity>) -> Result<(), StartError> {
    for ((username, customer_id), role) in SEED_CUSTOMERS.into_iter().zip(SEED_ROLES) {
        match identity
            .register(username, customer_id, "password", role)
            .await
        {
            Ok(()) | Err(IdentityError::AlreadyRegistered) => {}
            Err(e) => return Err(StartError::wiring("seeding users", e)),
        }
    }
    Ok(())
}
