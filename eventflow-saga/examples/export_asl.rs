//! Prints the PlaceOrder saga as an Amazon States Language document.
//!
//! ```sh
//! cargo run -p eventflow-saga --example export_asl > place-order.asl.json
//! npx --yes asl-validator --json-definition "$(cat place-order.asl.json)"
//! ```

use std::time::Duration;

use eventflow_saga::{Backoff, SagaDefinition, StepFunctionsOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let place_order = SagaDefinition::builder("PlaceOrder")
        .triggered_by("OrderPlaced")
        .step("ReserveInventory", |s| {
            s.on_success("InventoryReserved")
                .on_failure("InventoryReservationFailed")
                .timeout(Duration::from_secs(30))
                .compensate_with("ReleaseInventory", |c| c.on_success("InventoryReleased"))
        })
        .step("AuthorizePayment", |s| {
            s.on_success("PaymentAuthorized")
                .on_failure("PaymentDeclined")
                .compensate_with("CancelPayment", |c| c.on_success("PaymentCancelled"))
        })
        .step("CreateShipment", |s| {
            s.on_success("ShipmentCreated")
                .on_failure("ShipmentFailed")
                .compensate_with("CancelShipment", |c| c.on_success("ShipmentCancelled"))
        })
        .step("CompleteOrder", |s| {
            s.on_success("OrderCompleted")
                .on_failure("OrderCompletionFailed")
        })
        .on_compensated("CancelOrder", |c| c.on_success("OrderCancelled"))
        .compensation_retry(Backoff::new(
            5,
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
        .build()?;
    let asl =
        place_order.to_step_functions(&StepFunctionsOptions::new("default", "eventflow.saga"));
    let text = serde_json::to_string_pretty(&asl)?;
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
    Ok(())
}
