//! Prints the PlaceOrder saga as an Amazon States Language document.
//!
//! ```sh
//! cargo run -p eventflow-saga --example export_asl > place-order.asl.json
//! npx --yes asl-validator --json-definition "$(cat place-order.asl.json)"
//! ```

use std::time::Duration;

use eventflow_saga::testkit::place_order;
use eventflow_saga::{Backoff, StepFunctionsOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let place_order = place_order(
        Duration::from_secs(30),
        Backoff::new(5, Duration::from_secs(1), Duration::from_secs(60)),
    );
    let asl =
        place_order.to_step_functions(&StepFunctionsOptions::new("default", "eventflow.saga"));
    let text = serde_json::to_string_pretty(&asl)?;
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
    Ok(())
}
