//! Inventory: stock per product. Reserving an order takes every line or none, in one atomic
//! multi-stream append over the products' streams, so stock never goes negative however many
//! orders race; compensation releases the reservation.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
