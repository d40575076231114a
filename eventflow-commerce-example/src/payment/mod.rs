//! Payment: authorizes an order's total (declined above `PAYMENT_MAX_ORDER_CENTS`), voids the
//! authorization when the saga compensates, and captures it when the order completes.

pub(crate) mod application;
pub(crate) mod domain;
pub(crate) mod http;
pub(crate) mod infrastructure;

/// How the app starts this context: the one signature every context has.
pub(crate) use infrastructure::start;
