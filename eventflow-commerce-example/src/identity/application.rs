//! Registering users and logging in.

use std::sync::Arc;

use eventflow_core::{CommandContext, CommandError, Repository};

use super::domain::{User, UserCommand, UserError};
use super::infrastructure::{hash_password, verify_password};
use crate::platform::auth::Jwt;

/// Why a login or registration failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("the username is taken")]
    AlreadyRegistered,
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
    jwt: Arc<Jwt>,
    /// Verified against when the user does not exist, so an unknown username takes as long as a
    /// wrong password and does not reveal which accounts exist.
    decoy_hash: String,
}

impl Identity {
    pub(crate) async fn new(users: Repository<User>, jwt: Arc<Jwt>) -> Result<Self, IdentityError> {
        let decoy_hash = hash_password("decoy".to_owned())
            .await
            .map_err(IdentityError::Internal)?;
        Ok(Identity {
            users,
            jwt,
            decoy_hash,
        })
    }

    /// Registers `username` for `customer_id`. Registering the same account again (a restart
    /// seeding a durable store) changes nothing.
    pub(crate) async fn register(
        &self,
        username: &str,
        customer_id: &str,
        password: &str,
    ) -> Result<(), IdentityError> {
        let password_hash = hash_password(password.to_owned())
            .await
            .map_err(IdentityError::Internal)?;
        let command = UserCommand::Register {
            customer_id: customer_id.to_owned(),
            password_hash,
        };
        let context = CommandContext::new().with_idempotency_key(format!("register/{username}"));
        self.users.execute(username, &command, context).await?;
        Ok(())
    }

    pub(crate) async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Token, IdentityError> {
        let loaded = self
            .users
            .load(username)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let (hash, customer_id) = match loaded.state.account {
            Some(account) => (account.password_hash, Some(account.customer_id)),
            None => (self.decoy_hash.clone(), None),
        };
        let matches = verify_password(password.to_owned(), hash).await;
        let customer_id = customer_id
            .filter(|_| matches)
            .ok_or(IdentityError::InvalidCredentials)?;
        let (token, expires_in) = self
            .jwt
            .issue(&customer_id)
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok(Token { token, expires_in })
    }
}
