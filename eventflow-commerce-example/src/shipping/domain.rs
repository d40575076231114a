//! A shipment: one stream per order (`shipment-{orderId}`).

use eventflow_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::contract::Address;

/// The zip code no carrier delivers to: the seed's way to make step 3 fail.
pub(crate) const UNDELIVERABLE_ZIP: &str = "00000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ShipmentStatus {
    Created,
    Cancelled,
}

#[derive(Debug, Default)]
pub(crate) struct Shipment {
    pub(crate) status: Option<ShipmentStatus>,
    pub(crate) customer_id: String,
    pub(crate) tracking_number: String,
    pub(crate) address: Option<Address>,
}

pub(crate) enum ShipmentCommand {
    Create {
        customer_id: String,
        tracking_number: String,
        address: Address,
    },
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub(crate) enum ShipmentEvent {
    ShipmentCreated {
        customer_id: String,
        tracking_number: String,
        address: Address,
    },
    ShipmentCancelled,
}

impl DomainEvent for ShipmentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ShipmentEvent::ShipmentCreated { .. } => "ShipmentCreated",
            ShipmentEvent::ShipmentCancelled => "ShipmentCancelled",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ShipmentError {
    #[error("address undeliverable: no carrier delivers to zip {0}")]
    Undeliverable(String),
    #[error("a shipment for this order exists already")]
    AlreadyCreated,
}

impl Aggregate for Shipment {
    const STREAM_TYPE: &'static str = "shipment";
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type Error = ShipmentError;

    fn handle(&self, command: &ShipmentCommand) -> Result<Vec<ShipmentEvent>, ShipmentError> {
        match (command, self.status) {
            (ShipmentCommand::Create { .. }, Some(_)) => Err(ShipmentError::AlreadyCreated),
            (ShipmentCommand::Create { address, .. }, None)
                if address.zip.trim() == UNDELIVERABLE_ZIP =>
            {
                Err(ShipmentError::Undeliverable(address.zip.clone()))
            }
            (
                ShipmentCommand::Create {
                    customer_id,
                    tracking_number,
                    address,
                },
                None,
            ) => Ok(vec![ShipmentEvent::ShipmentCreated {
                customer_id: customer_id.clone(),
                tracking_number: tracking_number.clone(),
                address: address.clone(),
            }]),
            (ShipmentCommand::Cancel, Some(ShipmentStatus::Created)) => {
                Ok(vec![ShipmentEvent::ShipmentCancelled])
            }
            (ShipmentCommand::Cancel, None | Some(ShipmentStatus::Cancelled)) => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &ShipmentEvent) {
        match event {
            ShipmentEvent::ShipmentCreated {
                customer_id,
                tracking_number,
                address,
            } => {
                self.status = Some(ShipmentStatus::Created);
                self.customer_id.clone_from(customer_id);
                self.tracking_number.clone_from(tracking_number);
                self.address = Some(address.clone());
            }
            ShipmentEvent::ShipmentCancelled => self.status = Some(ShipmentStatus::Cancelled),
        }
    }
}
