//! Shipping: creates a shipment for the order's address (zip `00000` is undeliverable and fails
//! the saga's step) and cancels it when the saga compensates.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
