//! A user account: one stream per login name (`user-{username}`).

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::contract::{CustomerRegistered, IdentityFact, streams};
use crate::platform::auth::Role;

/// A registered user, or nobody yet.
#[derive(Debug, Default)]
pub(crate) struct User {
    pub(crate) account: Option<Account>,
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) customer_id: String,
    pub(crate) password_hash: String,
    pub(crate) role: Role,
}

pub(crate) enum UserCommand {
    Register {
        customer_id: String,
        password_hash: String,
        role: Role,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub(crate) enum UserEvent {
    UserRegistered {
        customer_id: String,
        /// An argon2id PHC string: the password itself is never stored.
        password_hash: String,
        /// `customer` for users registered before roles existed.
        #[serde(default)]
        role: Role,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UserError {
    #[error("the username is taken")]
    AlreadyRegistered,
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn handle(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match command {
            UserCommand::Register { .. } if self.account.is_some() => {
                Err(UserError::AlreadyRegistered)
            }
            UserCommand::Register {
                customer_id,
                password_hash,
                role,
            } => Ok(vec![UserEvent::UserRegistered {
                customer_id: customer_id.clone(),
                password_hash: password_hash.clone(),
                role: *role,
            }]),
        }
    }

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered {
                customer_id,
                password_hash,
                role,
            } => {
                self.account = Some(Account {
                    customer_id: customer_id.clone(),
                    password_hash: password_hash.clone(),
                    role: *role,
                });
            }
        }
    }
}

/// A customer as identity publishes it (`customer-{customerId}`): the public side of a user,
/// whose stream goes through the outbox. A user's own stream, with its password hash, does not.
#[derive(Debug, Default)]
pub(crate) struct Customer {
    pub(crate) registered: bool,
}

/// Publish the customer: registers it once; again, nothing happens (never refused).
pub(crate) struct PublishCustomer {
    pub(crate) customer_id: String,
    pub(crate) email: String,
}

impl Aggregate for Customer {
    const STREAM_TYPE: &'static str = streams::CUSTOMER;
    type Command = PublishCustomer;
    type Event = IdentityFact;
    type Error = std::convert::Infallible;

    fn handle(&self, command: &PublishCustomer) -> Result<Vec<IdentityFact>, Self::Error> {
        if self.registered {
            return Ok(Vec::new());
        }
        Ok(vec![IdentityFact::CustomerRegistered(CustomerRegistered {
            customer_id: command.customer_id.clone(),
            email: command.email.clone(),
        })])
    }

    fn apply(&mut self, _: &IdentityFact) {
        self.registered = true;
    }
}
