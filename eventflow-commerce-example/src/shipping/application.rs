//! Shipping's saga participant.

use std::sync::Arc;

use eventflow_core::{EventBus, Repository};
use eventflow_saga::Participant;

use super::domain::{Shipment, ShipmentCommand};
use crate::contract::{order_of, saga};

/// The participant answering `CreateShipment` and `CancelShipment`.
pub(crate) fn participant(
    shipments: Arc<Repository<Shipment>>,
    bus: Arc<dyn EventBus>,
) -> Participant<Shipment> {
    Participant::new("shipping", shipments, bus)
        .handles(
            saga::CREATE_SHIPMENT,
            saga::SHIPMENT_CREATED,
            saga::SHIPMENT_FAILED,
            |command| {
                let order = order_of(command)?;
                // Derived from the order, so a redelivered command would name the same parcel.
                let tracking_number =
                    format!("TRK-{}", order.order_id.replace('-', "").to_uppercase());
                Ok((
                    order.order_id,
                    ShipmentCommand::Create {
                        customer_id: order.customer_id,
                        tracking_number,
                        address: order.shipping_address,
                    },
                ))
            },
        )
        .handles(
            saga::CANCEL_SHIPMENT,
            saga::SHIPMENT_CANCELLED,
            saga::SHIPMENT_CANCELLATION_FAILED,
            |command| Ok((order_of(command)?.order_id, ShipmentCommand::Cancel)),
        )
}
