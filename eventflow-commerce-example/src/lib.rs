//! The eventflow commerce example: seven bounded contexts (identity, catalog, ordering, payment,
//! inventory, shipping, notification) and the PlaceOrder saga orchestrator, each an HTTP service
//! on its own port, talking only over the event bus. [`RunningApp::start`] runs all of them in
//! this process on in-memory backends with seeded data; the binary
//! (`cargo run -p eventflow-commerce-example`) does the same from the command line.
//!
//! ```no_run
//! # async fn run() -> Result<(), eventflow_commerce_example::StartError> {
//! use eventflow_commerce_example::{Config, RunningApp};
//!
//! let app = RunningApp::start(&Config::ephemeral()).await?; // free ports
//! let ordering = app.address("ordering").expect("a service of the app");
//! println!("POST http://{ordering}/orders");
//! app.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! See the crate's README for the API, the flow of an order and where each pattern lives.

mod app;
mod catalog;

mod contract;
mod identity;
mod inventory;
mod notification;
mod orchestration;
mod ordering;
mod payment;
mod platform;
mod shipping;

pub use app::{RunningApp, StartError};
pub use platform::config::{
    Backend, CLOUD_VARIABLES, CloudSettings, Config, Parsed, Role, SERVICES, USAGE,
};
pub use platform::logging::{LogFormat, init as init_logging};
pub use platform::telemetry::Telemetry;

/// The app on AWS Lambda (the `lambda` feature): the entry point of `eventflow-commerce-lambda`.
#[cfg(feature = "lambda")]
pub mod lambda {
    pub use crate::platform::lambda::{Handler, run};
}
