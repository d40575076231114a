//! Registering users and logging in.

use std::sync::Arc;
use std::time::Duration;

use eventflow_core::{CommandContext, CommandError, Repository};

use super::domain::{Customer, PublishCustomer, User, UserCommand, UserError};
use super::infrastructure::Passwords;
use super::limits::{LoginGate, LoginLimits};
use crate::platform::auth::{Jwt, Role};

/// Why a login or registration failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("the username is taken")]
    AlreadyRegistered,
    /// Too many logins for this account or from this address; try again after the wait.
    #[error("too many login attempts; try again in {} s", retry_after.as_secs().max(1))]
    TooManyAttempts { retry_after: Duration },
    /// Every password check is busy.
    #[error("every password check is busy; try again shortly")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

impl From<CommandError<UserError>> for IdentityError {
    fn from(error: CommandError<UserError>) -> Self {
        match error {
            CommandError::Rejected(UserError::AlreadyRegistered) => {
                IdentityError::AlreadyRegistered
            }
            other => IdentityError::Internal(other.to_string()),
        }
    }
}

/// An issued token.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) token: String,
    pub(crate) expires_in: u64,
}

pub(crate) struct Identity {
    users: Repository<User>,
    /// Published through the outbox: what other contexts learn of a user.
    customers: Repository<Customer>,
    jwt: Arc<Jwt>,
    passwords: Passwords,
    gate: LoginGate,
    /// Verified against when the user does not exist, so an unknown username takes as long as a
    /// wrong password and does not reveal which accounts exist.
    decoy_hash: String,
}

impl Identity {
    pub(crate) async fn new(
        users: Repository<User>,
        customers: Repository<Customer>,
        jwt: Arc<Jwt>,
        limits: LoginLimits,
    ) -> Result<Self, IdentityError> {
        let passwords = Passwords::new();
        let decoy_hash = passwords
            .hash("decoy".to_owned())
            .await
            .map_err(IdentityError::Internal)?;
        Ok(Identity {
            users,
            customers,
            jwt,
            passwords,
            gate: LoginGate::new(limits),
            decoy_hash,
        })
    }

    /// Registers `username` (an email address, where notifications go) for `customer_id`, and
    /// publishes the customer. Registering the same account again (a restart seeding a durable
    /// store) changes nothing, and publishes a customer a crash left unpublished.
    pub(crate) async fn register(
        &self,
        username: &str,
        customer_id: &str,
        password: &str,
        role: Role,
    ) -> Result<(), IdentityError> {
        let password_hash = self
            .passwords
            .hash(password.to_owned())
            .await
            .map_err(IdentityError::Internal)?;
        let command = UserCommand::Register {
            customer_id: customer_id.to_owned(),
            password_hash,
            role,
        };
        let context = CommandContext::new().with_idempotency_key(format!("register/{username}"));
        self.users.execute(username, &command, context).await?;
        let publish = PublishCustomer {
            customer_id: customer_id.to_owned(),
            email: username.to_owned(),
        };
        self.customers
            .execute(customer_id, &publish, CommandContext::new())
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok(())
    }

    /// Logs `username` in from `client` (the peer's address, when known). Limits apply before
    /// the password is checked, and the same way whether or not the account exists.
    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Token, IdentityError> {
        self.gate
            .admit(username, client)
            .map_err(|retry_after| IdentityError::TooManyAttempts { retry_after })?;
        let loaded = self
            .users
            .load(username)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let (hash, account) = match loaded.state.account {
            Some(account) => (account.password_hash.clone(), Some(account)),
            None => (self.decoy_hash.clone(), None),
        };
        let matches = self
            .passwords
            .verify(password.to_owned(), hash)
            .await
            .map_err(|_| IdentityError::Busy)?;
        let Some(account) = account.filter(|_| matches) else {
            self.gate.failed(username);
            return Err(IdentityError::InvalidCredentials);
        };
        self.gate.succeeded(username);
        let (token, expires_in) = self
            .jwt
            .issue(&account.customer_id, account.role)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok(Token { token, expires_in })
    }
}
