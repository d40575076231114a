//! The PlaceOrder saga of the seed, as a fixture: the saga crate's tests, example and benches, and
//! anyone learning the crate, start from the same definition.
//!
//! Reserve inventory, authorize payment, create the shipment, complete the order; a failed step
//! undoes the steps before it in reverse order (release the stock, cancel the payment, cancel the
//! shipment), then the order is cancelled. Completing the order is the pivot: once it is sent the
//! saga only goes forward.
//!
//! ```
//! use std::time::Duration;
//! use eventflow_saga::Backoff;
//! use eventflow_saga::testkit::{PLACE_ORDER_STEPS, place_order};
//!
//! let definition = place_order(Duration::from_secs(30), Backoff::default());
//! let names: Vec<&str> = definition.steps.iter().map(|s| s.name.as_str()).collect();
//! assert_eq!(names, PLACE_ORDER_STEPS);
//! ```

use std::time::Duration;

use eventflow_core::Backoff;

use crate::definition::SagaDefinition;

/// The PlaceOrder steps, in order.
pub const PLACE_ORDER_STEPS: [&str; 4] = [
    "ReserveInventory",
    "AuthorizePayment",
    "CreateShipment",
    "CompleteOrder",
];

/// The PlaceOrder saga, triggered by `OrderPlaced`, every send of a step and of the final
/// `CancelOrder` waiting `step_timeout` for its reply, steps resent by
/// [`DEFAULT_RESEND`](crate::DEFAULT_RESEND), compensations retried by `compensation_retry`,
/// `CompleteOrder` the pivot.
///
/// | Step | Replies | Compensation | Its replies |
/// | --- | --- | --- | --- |
/// | `ReserveInventory` | `InventoryReserved` / `InventoryReservationFailed` | `ReleaseInventory` | `InventoryReleased` / `InventoryReleaseFailed` |
/// | `AuthorizePayment` | `PaymentAuthorized` / `PaymentDeclined` | `CancelPayment` | `PaymentCancelled` / `PaymentCancellationFailed` |
/// | `CreateShipment` | `ShipmentCreated` / `ShipmentFailed` | `CancelShipment` | `ShipmentCancelled` / `ShipmentCancellationFailed` |
/// | `CompleteOrder` (pivot) | `OrderCompletionRecorded` / `OrderCompletionFailed` | | |
/// | then `CancelOrder` | `OrderCancellationRecorded` / `OrderCancellationFailed` | | |
pub fn place_order(step_timeout: Duration, compensation_retry: Backoff) -> SagaDefinition {
    SagaDefinition::builder("PlaceOrder")
        .triggered_by("OrderPlaced")
        .step("ReserveInventory", |s| {
            s.on_success("InventoryReserved")
                .on_failure("InventoryReservationFailed")
                .timeout(step_timeout)
                .compensate_with("ReleaseInventory", |c| {
                    c.on_success("InventoryReleased")
                        .on_failure("InventoryReleaseFailed")
                })
        })
        .step("AuthorizePayment", |s| {
            s.on_success("PaymentAuthorized")
                .on_failure("PaymentDeclined")
                .timeout(step_timeout)
                .compensate_with("CancelPayment", |c| {
                    c.on_success("PaymentCancelled")
                        .on_failure("PaymentCancellationFailed")
                })
        })
        .step("CreateShipment", |s| {
            s.on_success("ShipmentCreated")
                .on_failure("ShipmentFailed")
                .timeout(step_timeout)
                .compensate_with("CancelShipment", |c| {
                    c.on_success("ShipmentCancelled")
                        .on_failure("ShipmentCancellationFailed")
                })
        })
        .step("CompleteOrder", |s| {
            s.on_success("OrderCompletionRecorded")
                .on_failure("OrderCompletionFailed")
                .timeout(step_timeout)
                .pivot()
        })
        .on_compensated("CancelOrder", |c| {
            c.on_success("OrderCancellationRecorded")
                .on_failure("OrderCancellationFailed")
                .timeout(step_timeout)
        })
        .compensation_retry(compensation_retry)
        .build()
        .unwrap_or_else(|e| unreachable!("PlaceOrder is a valid definition: {e}"))
}
