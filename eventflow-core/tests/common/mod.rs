//! A small bank-account domain shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use eventflow_core::{Aggregate, DomainEvent, Upcasters};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub opened: bool,
    pub owner: String,
    pub balance: i64,
    /// How many events were applied: a loader that applies an event twice shows here.
    pub applied: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
    Noop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            AccountEvent::Opened { .. } => 2,
            _ => 1,
        }
    }

    /// Version 1 of `AccountOpened` called the owner `name`.
    fn upcasters() -> Upcasters {
        Upcasters::new().register("AccountOpened", 1, |mut v: serde_json::Value| {
            let opened = v.get_mut("Opened").ok_or("no Opened object")?;
            let name = opened
                .as_object_mut()
                .and_then(|o| o.remove("name"))
                .ok_or("no name")?;
            opened["owner"] = name;
            Ok(v)
        })
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("account is not open")]
    NotOpen,
    #[error("account is already open")]
    AlreadyOpen,
    #[error("amount must be positive")]
    NonPositiveAmount,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
}

impl Aggregate for Account {
    const STREAM_TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { .. } if self.opened => Err(AccountError::AlreadyOpen),
            AccountCommand::Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            _ if !self.opened => Err(AccountError::NotOpen),
            AccountCommand::Deposit { amount } | AccountCommand::Withdraw { amount }
                if *amount <= 0 =>
            {
                Err(AccountError::NonPositiveAmount)
            }
            AccountCommand::Deposit { amount } => {
                Ok(vec![AccountEvent::Deposited { amount: *amount }])
            }
            AccountCommand::Withdraw { amount } if *amount > self.balance => {
                Err(AccountError::InsufficientFunds {
                    balance: self.balance,
                    asked: *amount,
                })
            }
            AccountCommand::Withdraw { amount } => {
                Ok(vec![AccountEvent::Withdrawn { amount: *amount }])
            }
            AccountCommand::Noop => Ok(Vec::new()),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.applied += 1;
        match event {
            AccountEvent::Opened { owner } => {
                self.opened = true;
                self.owner = owner.clone();
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}
